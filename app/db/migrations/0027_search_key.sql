-- The md5 of the text a document's `search` tsvector was parsed from. Parsing the text
-- (to_tsvector) is the largest single PostgreSQL cost of writing a document (~0.4 ms per 2 KB
-- article, bench/README "Results: 2026-12-07, 21:39"), and a schema change's re-render writes
-- every document of a type again, most with the same text: with the key, the write keeps the
-- stored tsvector instead of parsing the same text again (app/publishing/repository.py,
-- replace_documents_many). NULL (documents written before this migration) never matches: those
-- are parsed as before, and get their key when next written. Nullable without a default: adding it
-- rewrites nothing, at any size.
ALTER TABLE published_documents ADD COLUMN search_key uuid;
