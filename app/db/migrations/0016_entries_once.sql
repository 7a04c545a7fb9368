-- An entry published as it is stores its content once (entries.published_data is NULL while it is
-- the same as data: entries/repository.py PUBLISHED_DATA). A 2 KB article's row is then ~2.4 KB,
-- under the 2,700 bytes that made PostgreSQL compress it (0015): compress rows over ~1 KB, so
-- `data` is stored compressed (~1.1 KB) and six or seven rows share a page instead of three.
ALTER TABLE entries SET (toast_tuple_target = 1024);
-- Rows written before keep their stored copy and size until they are next written.
