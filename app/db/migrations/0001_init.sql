-- Core schema: locales, content types, entries with versions, published documents,
-- credentials, assets, the transactional outbox and the audit log.

CREATE TABLE locales (
    code        text PRIMARY KEY,
    name        text NOT NULL,
    fallback    text REFERENCES locales (code),
    is_default  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX locales_single_default ON locales (is_default) WHERE is_default;
INSERT INTO locales (code, name, is_default) VALUES ('en', 'English', true);

CREATE TABLE content_types (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    description   text,
    display_field text,
    fields        jsonb NOT NULL,
    version       integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Draft state. data = {field_id: {locale_code: value}}; non-localized fields use the key "_".
CREATE TABLE entries (
    id                 text PRIMARY KEY,
    type               text NOT NULL REFERENCES content_types (id),
    data               jsonb NOT NULL,
    version            integer NOT NULL,
    published_version  integer,
    published_data     jsonb,
    first_published_at timestamptz,
    published_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX entries_type_updated ON entries (type, updated_at DESC, id DESC);

CREATE TABLE entry_versions (
    entry_id   text NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    version    integer NOT NULL,
    data       jsonb NOT NULL,
    action     text NOT NULL,
    actor      jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entry_id, version)
);

-- Values of `unique` and `slug` fields of drafts, one row per (field, locale); the
-- unique constraint is what makes concurrent saves of the same slug safe.
CREATE TABLE entry_unique_values (
    type     text NOT NULL,
    field    text NOT NULL,
    locale   text NOT NULL,
    value    text NOT NULL,
    entry_id text NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    PRIMARY KEY (type, field, locale, value)
);
CREATE INDEX entry_unique_values_entry ON entry_unique_values (entry_id);

-- What delivery serves: one row per published entry and locale, rendered once at publish.
-- vals holds the fallback-resolved field values that filters and sorts read.
CREATE TABLE published_documents (
    entry_id     text NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    locale       text NOT NULL,
    type         text NOT NULL,
    version      integer NOT NULL,
    slug         text,
    body         bytea NOT NULL,
    etag         text NOT NULL,
    vals         jsonb NOT NULL,
    search       tsvector NOT NULL,
    published_at timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (entry_id, locale)
);
CREATE INDEX published_documents_published ON published_documents (type, locale, published_at DESC, entry_id DESC);
CREATE INDEX published_documents_updated ON published_documents (type, locale, updated_at DESC, entry_id DESC);
CREATE INDEX published_documents_created ON published_documents (type, locale, created_at DESC, entry_id DESC);
CREATE INDEX published_documents_id ON published_documents (type, locale, entry_id);
CREATE INDEX published_documents_slug ON published_documents (type, locale, slug) WHERE slug IS NOT NULL;
CREATE INDEX published_documents_search ON published_documents USING gin (search);

CREATE TABLE assets (
    id           text PRIMARY KEY,
    filename     text NOT NULL,
    content_type text NOT NULL,
    size         bigint NOT NULL,
    sha256       text NOT NULL,
    width        integer,
    height       integer,
    title        text,
    alt          text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Credentials. A key has one or more secrets (several only during a rotation's grace period).
CREATE TABLE api_keys (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('delivery', 'preview', 'management')),
    prefix        text NOT NULL,
    scopes        text[] NOT NULL DEFAULT '{}',
    content_types text[],
    rate_limit    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    jsonb NOT NULL,
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE TABLE api_key_secrets (
    secret_hash bytea PRIMARY KEY,
    key_id      text NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz
);
CREATE INDEX api_key_secrets_key ON api_key_secrets (key_id);

-- The transactional outbox: written in the same transaction as the change it describes.
CREATE TABLE outbox_events (
    id         text PRIMARY KEY,
    seq        bigserial UNIQUE,
    type       text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    txid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    relayed_at timestamptz
);
CREATE INDEX outbox_events_unrelayed ON outbox_events (seq) WHERE relayed_at IS NULL;

CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      jsonb NOT NULL,
    action     text NOT NULL,
    target     text,
    request_id text,
    ip         text,
    outcome    text NOT NULL
);

-- Keep the audit log append-only even against our own code.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
