-- Idempotency-Key: the stored answer of a management write, committed in the write's own
-- transaction (so an applied write always has its answer, and an answer always its write).
CREATE TABLE idempotency_keys (
    credential_id text NOT NULL,
    key           text NOT NULL,
    fingerprint   bytea NOT NULL,          -- SHA-256 of method, path and the canonical JSON body
    status        smallint NOT NULL,
    headers       jsonb NOT NULL,          -- Content-Type, ETag, Location
    body          bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (credential_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
