-- Every write of a published document takes the next number of one sequence: the version its
-- prerendered files carry. Numbers never go back, across entries and across a deleted entry and
-- a new one with the same id, so the object store's version guard (never replace a newer file)
-- can no longer refuse a recreated entry's files. It starts above any entry version files were
-- written with before.
CREATE SEQUENCE published_documents_render_seq START 4294967296;
ALTER TABLE published_documents
    ADD COLUMN render_seq bigint NOT NULL DEFAULT nextval('published_documents_render_seq');
