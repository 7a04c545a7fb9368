-- Where each published document's includable reference links sit in its bytes: a jsonb array of
-- [field id, start, end, linked entry id] (render.encode_stored). `include` (depth 1, every field)
-- then puts the linked entries' stored bytes between slices of the document's bytes instead of
-- decoding and re-encoding its fields. NULL: a document stored before this migration; it takes the
-- decoding path until it is written again (a publish, or a schema change that changes it).
ALTER TABLE published_documents ADD COLUMN links jsonb;
