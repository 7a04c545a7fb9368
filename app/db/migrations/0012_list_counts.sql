-- Exact totals of unfiltered lists at any size, without a count(*) over the type per request:
-- rows per (kind, type, locale) kept by statement-level triggers. Each backend adds to its own
-- shard (its pid modulo 16), so concurrent publishes of one type do not wait for each other's
-- counter row; a total is the sum of at most 16 rows.
--   kind 'published': published_documents per (type, locale) (delivery lists)
--   kind 'entries':   entries per type, locale '' (management and preview lists)
CREATE TABLE list_counts (
    kind   text NOT NULL,
    type   text NOT NULL,
    locale text NOT NULL,
    shard  smallint NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (kind, type, locale, shard)
);

CREATE FUNCTION list_counts_published_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO list_counts (kind, type, locale, shard, n)
    SELECT 'published', type, locale, pg_backend_pid() % 16, count(*) FROM added GROUP BY type, locale
    ORDER BY type, locale
    ON CONFLICT (kind, type, locale, shard) DO UPDATE SET n = list_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE FUNCTION list_counts_published_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO list_counts (kind, type, locale, shard, n)
    SELECT 'published', type, locale, pg_backend_pid() % 16, -count(*) FROM removed GROUP BY type, locale
    ORDER BY type, locale
    ON CONFLICT (kind, type, locale, shard) DO UPDATE SET n = list_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE FUNCTION list_counts_entries_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO list_counts (kind, type, locale, shard, n)
    SELECT 'entries', type, '', pg_backend_pid() % 16, count(*) FROM added GROUP BY type ORDER BY type
    ON CONFLICT (kind, type, locale, shard) DO UPDATE SET n = list_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE FUNCTION list_counts_entries_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO list_counts (kind, type, locale, shard, n)
    SELECT 'entries', type, '', pg_backend_pid() % 16, -count(*) FROM removed GROUP BY type ORDER BY type
    ON CONFLICT (kind, type, locale, shard) DO UPDATE SET n = list_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;

-- For INSERT … ON CONFLICT DO UPDATE, an INSERT trigger's transition table holds only the rows
-- actually inserted; rows that were updated in place are not counted again.
CREATE TRIGGER published_documents_counted_insert AFTER INSERT ON published_documents
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION list_counts_published_added();
CREATE TRIGGER published_documents_counted_delete AFTER DELETE ON published_documents
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION list_counts_published_removed();
CREATE TRIGGER entries_counted_insert AFTER INSERT ON entries
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION list_counts_entries_added();
CREATE TRIGGER entries_counted_delete AFTER DELETE ON entries
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION list_counts_entries_removed();

INSERT INTO list_counts (kind, type, locale, shard, n)
SELECT 'published', type, locale, 0, count(*) FROM published_documents GROUP BY type, locale;
INSERT INTO list_counts (kind, type, locale, shard, n)
SELECT 'entries', type, '', 0, count(*) FROM entries GROUP BY type;

-- Trigram indexes make `contains`/`startswith` on indexed text fields use an index (query/sql.py
-- creates one per such field when the extension is there). Creating an extension may need
-- privileges an external database does not grant: then those filters scan, as before.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN insufficient_privilege OR undefined_file OR feature_not_supported THEN
    RAISE NOTICE 'pg_trgm is not available: contains/startswith filters will scan';
END $$;
