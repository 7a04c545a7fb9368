-- Preview tokens (POST /v1/preview-tokens): short-lived credentials for /preview/* only, kept as
-- keys of their own kind so that one lookup serves every credential. `parent_id` is the key that
-- made one: revoking (or expiring) it ends its tokens too.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_kind_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_kind_check
    CHECK (kind IN ('delivery', 'preview', 'management', 'preview_token'));
ALTER TABLE api_keys ADD COLUMN parent_id text REFERENCES api_keys (id) ON DELETE CASCADE;
CREATE INDEX api_keys_parent ON api_keys (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX api_keys_token_expiry ON api_keys (expires_at) WHERE kind = 'preview_token';
