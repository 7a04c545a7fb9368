-- Rows of a few kilobytes stay inline and uncompressed. With the default target (~2 KB), every
-- published document, entry and version of a 2 KB article was compressed with pglz on write (about
-- 5% of the machine's CPU during a bulk import) and decompressed on every read of a cache miss.
-- Values that do not fit in a page are still compressed and moved out of line.
ALTER TABLE published_documents SET (toast_tuple_target = 8160);
ALTER TABLE entries SET (toast_tuple_target = 8160);
ALTER TABLE entry_versions SET (toast_tuple_target = 8160);
