-- The md5 of the text a document's `search` tsvector was parsed from (with the parser's
-- configuration). Parsing the text (to_tsvector) is the largest single PostgreSQL cost of writing
-- a document (~0.4 ms per 2 KB article, bench/README "Results: 2026-12-07, 21:39"), and a schema
-- change's re-render writes every document of a type again, most with the same text: with the
-- key, the write keeps the stored tsvector instead of parsing the same text again
-- (app/publishing/repository.py, replace_documents_many). NULL (documents written before this
-- migration) never matches: those are parsed, as before, each time they are written. Nullable
-- without a default: adding it rewrites nothing, at any size.
ALTER TABLE published_documents ADD COLUMN search_key uuid;

-- A writer that does not know the key (an older version of the app, still running during a rolling
-- deploy or after a rollback) changes the tsvector and leaves the key: forget the key then, so that
-- it never vouches for a tsvector parsed from other text.
CREATE FUNCTION published_documents_search_key_forgotten() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.search_key := NULL;
    RETURN NEW;
END $$;
CREATE TRIGGER published_documents_search_key_kept BEFORE UPDATE ON published_documents FOR EACH ROW
    WHEN (NEW.search_key IS NOT DISTINCT FROM OLD.search_key AND NEW.search IS DISTINCT FROM OLD.search)
    EXECUTE FUNCTION published_documents_search_key_forgotten();
