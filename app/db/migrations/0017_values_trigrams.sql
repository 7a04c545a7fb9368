-- The total of a `contains`/`startswith` list on an indexed text field is counted in
-- published_values (narrow rows, many matches a page) through a trigram index there, instead of
-- one published_documents page per match (query/indexes.py values_trigram_ddl names and shapes it;
-- new fields get it when their type is saved). Only where pg_trgm is installed.
DO $$
DECLARE
    f record;
    name text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        RETURN;
    END IF;
    FOR f IN
        SELECT i.type, i.field FROM indexed_fields i
          JOIN content_types ct ON ct.id = i.type, jsonb_array_elements(ct.fields) d
         WHERE d ->> 'id' = i.field AND d ->> 'type' IN ('text', 'slug', 'enum')
    LOOP
        name := 'pv_trgm_' || f.type || '_' || f.field;
        IF length(name) > 63 THEN  -- indexes.py _index_name
            name := left(name, 50) || '_' || left(encode(sha256(
                convert_to(f.type, 'UTF8') || '\x00'::bytea || convert_to(f.field, 'UTF8')), 'hex'), 12);
        END IF;
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS %I ON published_values USING gin ((value #>> ''{}'') gin_trgm_ops) '
            'WHERE type = %L AND field = %L', name, f.type, f.field);
    END LOOP;
END $$;
