-- A write registered a unique number field's value in Python's text (1.5e-07; the exact binary
-- digits of a big float such as 1e23), while a schema change registers PostgreSQL's
-- (trim_scale(numeric)::text: 0.00000015), so the same number could be taken twice. Writes now
-- use PostgreSQL's form (schema/values.py values_equal_for_unique); the values registered before
-- are re-registered in it, from the entries' drafts. Where two entries already share a number
-- (accepted through that mismatch) the first keeps the new form and the other its old one, so
-- neither registration is lost and its next write meets the conflict.
WITH wanted AS (
    SELECT DISTINCT ON (v.type, v.field, v.locale, n.value) v.type, v.field, v.locale, v.value AS old, n.value AS new
      FROM entry_unique_values v
      JOIN content_types ct ON ct.id = v.type
      JOIN entries e ON e.id = v.entry_id
      CROSS JOIN LATERAL (SELECT trim_scale((e.data -> v.field -> v.locale)::numeric)::text AS value) n
     WHERE EXISTS (SELECT 1 FROM jsonb_array_elements(ct.fields) f
                    WHERE f ->> 'id' = v.field AND f ->> 'type' IN ('integer', 'number'))
       AND jsonb_typeof(e.data -> v.field -> v.locale) = 'number'
       AND n.value <> v.value
       AND NOT EXISTS (SELECT 1 FROM entry_unique_values w
                        WHERE w.type = v.type AND w.field = v.field AND w.locale = v.locale AND w.value = n.value)
     ORDER BY v.type, v.field, v.locale, n.value, v.entry_id
)
UPDATE entry_unique_values v SET value = w.new
  FROM wanted w
 WHERE v.type = w.type AND v.field = w.field AND v.locale = w.locale AND v.value = w.old;
