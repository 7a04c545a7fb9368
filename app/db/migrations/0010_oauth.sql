-- OAuth 2.0 client credentials (RFC 6749 §4.4) with JWT access tokens (RFC 9068).
CREATE TABLE oauth_clients (
    id            text PRIMARY KEY,          -- the client_id
    name          text NOT NULL,
    scopes        text[] NOT NULL,
    content_types text[],
    secret_hash   bytea NOT NULL,            -- SHA-256 of a random secret (never stored itself)
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    jsonb NOT NULL
);
-- Token signing keys (ES256). The private key is encrypted at rest (the webhook secret box); a
-- retired key signs nothing but stays published until every token it signed has expired.
CREATE TABLE oauth_signing_keys (
    kid         text PRIMARY KEY,
    private_key bytea NOT NULL,
    public_jwk  jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);
-- Revoked tokens (RFC 7009) by jti, kept until the token would have expired anyway.
CREATE TABLE oauth_revoked_tokens (
    jti        text PRIMARY KEY,
    client_id  text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX oauth_revoked_tokens_expiry ON oauth_revoked_tokens (expires_at);
