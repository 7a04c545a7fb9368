-- An UPDATE of published documents (a publish, a bulk upsert, a schema change's re-render) removed
-- every published_values row of each document and added them again, though most updates leave the
-- indexed values as they were (a new title, a new optional field): at 1M documents a re-render
-- rewrote 2M identical rows (and their index entries, the trigram index's too). Now the UPDATE's
-- first trigger removes only the values that changed; its second (0014's published_values_added,
-- ON CONFLICT DO NOTHING) then adds what is missing and writes nothing for a value kept.
CREATE FUNCTION published_values_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM published_values v USING removed o JOIN added n ON n.entry_id = o.entry_id AND n.locale = o.locale
     WHERE v.entry_id = o.entry_id AND v.locale = o.locale AND v.type = o.type
       AND (n.type <> o.type OR v.value <> coalesce(n.vals -> v.field, 'null'::jsonb));
    -- (an UPDATE that moved a document to another entry or locale: not done, but then all go)
    DELETE FROM published_values v USING removed o
     WHERE v.entry_id = o.entry_id AND v.locale = o.locale AND v.type = o.type
       AND NOT EXISTS (SELECT 1 FROM added n WHERE n.entry_id = o.entry_id AND n.locale = o.locale);
    RETURN NULL;
END $$;

DROP TRIGGER published_documents_values_update_1_removed ON published_documents;
CREATE TRIGGER published_documents_values_update_1_removed AFTER UPDATE ON published_documents
    REFERENCING OLD TABLE AS removed NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION published_values_changed();
