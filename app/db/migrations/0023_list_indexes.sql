-- An `indexed` list of references or assets had a btree index over the whole list
-- (query/indexes.py index_ddl): a btree row holds at most ~2.7 KB, so an entry with a long list
-- (about 125 references) could never be published (the publish failed with an internal error),
-- and a btree cannot serve the list's containment filter (`@>`) anyway. Such fields now get a GIN
-- index (indexes.py list_ddl); existing btree indexes of list fields are replaced here (built in
-- this migration: it blocks writes to published_documents while it runs, like 0021's index).
DO $$
DECLARE
    f record;
    old_name text;
    new_name text;
BEGIN
    FOR f IN
        SELECT ct.id AS type, d ->> 'id' AS field, coalesce((d ->> 'indexed')::boolean, false) AS indexed
          FROM content_types ct, jsonb_array_elements(ct.fields) d
         WHERE coalesce((d ->> 'list')::boolean, false)
    LOOP
        old_name := 'pd_idx_' || f.type || '_' || f.field;
        new_name := 'pd_gin_' || f.type || '_' || f.field;
        IF length(old_name) > 63 THEN  -- indexes.py _index_name
            old_name := left(old_name, 50) || '_' || left(encode(sha256(
                convert_to(f.type, 'UTF8') || '\x00'::bytea || convert_to(f.field, 'UTF8')), 'hex'), 12);
            new_name := left(new_name, 50) || '_' || left(encode(sha256(
                convert_to(f.type, 'UTF8') || '\x00'::bytea || convert_to(f.field, 'UTF8')), 'hex'), 12);
        END IF;
        EXECUTE format('DROP INDEX IF EXISTS %I', old_name);  -- (also of a list no longer indexed)
        CONTINUE WHEN NOT f.indexed;
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS %I ON published_documents USING gin '
            '((coalesce(vals -> %L, ''null''::jsonb)) jsonb_path_ops) WHERE type = %L', new_name, f.field, f.type);
    END LOOP;
END $$;
