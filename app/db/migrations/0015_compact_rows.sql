-- Compact rows (issue 13): a 2 KB article took a whole 8 KB page in published_documents and in
-- entries (toast_tuple_target = 8160 kept every value uncompressed, and two ~4.1 KB rows do not fit
-- one page). Measured at 100,000 articles (bench/README.md "Compact storage"): 23.3 KB of
-- PostgreSQL per entry before, 12.1 KB per newly written entry with these settings.
--
-- published_documents: values of long fields (long text, rich text, json, components, blocks) move
-- from `vals` to `bulky`, so `vals`, which every filter and sort reads, stays small and uncompressed;
-- the body is compressed (pglz: the embedded PostgreSQL has no lz4) just enough for two rows a page.
-- Documents rendered before keep their long values in `vals` (query/sql.py reads both) until they
-- are rewritten.
ALTER TABLE published_documents ADD COLUMN bulky jsonb;
ALTER TABLE published_documents SET (toast_tuple_target = 4080);
-- entries: `data` and `published_data` compressed, three rows a page.
ALTER TABLE entries SET (toast_tuple_target = 2700);
-- versions: the default (rows over ~2 KB compressed).
ALTER TABLE entry_versions RESET (toast_tuple_target);
-- Rows written before keep their size until rewritten; `VACUUM FULL published_documents, entries,
-- entry_versions` compacts them at once (it locks each table while it runs: docs/operations.md).
