-- A value that changes with every change to content types and locales, committed with the change.
-- A random one, not a counter: a counter could come back to a number a rolled-back change (or a
-- restored backup) had shown with other content.
-- An entry write reads it with its locked entry (after the shared schema lock, so a schema change
-- that committed meanwhile is seen) and reuses the type and the locales it parsed at that version:
-- two round trips fewer per write, which is most of what management's CPU goes to (the socket
-- writes, bench/README "Results: 2026-12-07, 16:08").
CREATE TABLE schema_version (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    version uuid NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO schema_version (one) VALUES (true);

CREATE FUNCTION bump_schema_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE schema_version SET version = gen_random_uuid();
    RETURN NULL;
END $$;

CREATE TRIGGER content_types_schema_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON content_types
    FOR EACH STATEMENT EXECUTE FUNCTION bump_schema_version();
CREATE TRIGGER locales_schema_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON locales
    FOR EACH STATEMENT EXECUTE FUNCTION bump_schema_version();
