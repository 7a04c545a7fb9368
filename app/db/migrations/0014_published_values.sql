-- The values of `indexed` scalar fields of published documents, one narrow row per (document, field),
-- so a filtered delivery list's total (capped at 10,000: query/sql.py TOTAL_BOUND) is counted by an
-- index-only scan instead of one heap page per match: the expression indexes over `vals` can never
-- be scanned index-only. Kept by statement-level triggers on published_documents, so every writer
-- (publish, bulk, unpublish, a schema change's re-render, cascades) keeps it without knowing it.
CREATE TABLE indexed_fields (
    type  text NOT NULL REFERENCES content_types (id) ON DELETE CASCADE,
    field text NOT NULL,
    -- every published document of the type has its row: counts may use published_values (a field
    -- indexed by a change of a big type becomes ready when the change's background work is done)
    ready boolean NOT NULL DEFAULT false,
    PRIMARY KEY (type, field)
);

CREATE TABLE published_values (
    type     text NOT NULL,
    field    text NOT NULL,
    locale   text NOT NULL,
    value    jsonb NOT NULL,   -- coalesce(vals -> field, 'null'): what DeliverySource.value() compares
    entry_id text NOT NULL,
    PRIMARY KEY (type, field, locale, value, entry_id)
);
CREATE INDEX published_values_entry ON published_values (entry_id, locale);

CREATE FUNCTION published_values_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM published_values v USING removed o
     WHERE v.entry_id = o.entry_id AND v.locale = o.locale AND v.type = o.type;
    RETURN NULL;
END $$;

CREATE FUNCTION published_values_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO published_values (type, field, locale, value, entry_id)
    SELECT n.type, f.field, n.locale, coalesce(n.vals -> f.field, 'null'::jsonb), n.entry_id
      FROM added n JOIN indexed_fields f ON f.type = n.type
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER published_documents_values_insert AFTER INSERT ON published_documents
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION published_values_added();
-- An UPDATE removes the old rows' values, then adds the new ones: triggers on one event fire in the
-- order of their names (1_removed before 2_added).
CREATE TRIGGER published_documents_values_update_1_removed AFTER UPDATE ON published_documents
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION published_values_removed();
CREATE TRIGGER published_documents_values_update_2_added AFTER UPDATE ON published_documents
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION published_values_added();
CREATE TRIGGER published_documents_values_delete AFTER DELETE ON published_documents
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION published_values_removed();

-- The fields indexed so far, and their values (at a million documents this takes a while, once).
INSERT INTO indexed_fields (type, field, ready)
SELECT ct.id, f ->> 'id', true FROM content_types ct, jsonb_array_elements(ct.fields) f
 WHERE (f ->> 'indexed')::boolean AND NOT coalesce((f ->> 'list')::boolean, false)
   AND f ->> 'type' IN ('text', 'slug', 'integer', 'number', 'boolean', 'date', 'datetime', 'enum');
INSERT INTO published_values (type, field, locale, value, entry_id)
SELECT d.type, f.field, d.locale, coalesce(d.vals -> f.field, 'null'::jsonb), d.entry_id
  FROM published_documents d JOIN indexed_fields f ON f.type = d.type
ON CONFLICT DO NOTHING;
