-- Webhook subscriptions, one delivery per (event, endpoint) and one row per attempt. PostgreSQL is
-- the queue: a delivery's next attempt is a column the workers poll, so a retry due in 10 hours
-- survives every restart and deploy.
CREATE TABLE webhooks (
    id               text PRIMARY KEY,
    url              text NOT NULL,
    events           text[] NOT NULL,              -- patterns: entry.published, entry.*, *
    types            text[],                       -- content types (NULL: all)
    headers          jsonb NOT NULL DEFAULT '{}',
    active           boolean NOT NULL DEFAULT true,
    disabled_reason  text,
    secret           bytea NOT NULL,               -- encrypted (webhooks.signing.SecretBox)
    old_secret       bytea,                        -- the previous secret, during rotation
    old_secret_until timestamptz,
    failing_since    timestamptz,                  -- first failure of the current run of failures
    version          integer NOT NULL DEFAULT 1,
    created_by       jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id              text PRIMARY KEY,
    webhook_id      text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        text NOT NULL,                 -- the webhook-id header: the same on every attempt
    event_type      text NOT NULL,
    seq             bigint NOT NULL,               -- the event's place: order within (webhook, order_key)
    order_key       text,                          -- the entry it is about (NULL: no ordering)
    body            bytea NOT NULL,                -- exactly what is sent, on every attempt
    status          text NOT NULL DEFAULT 'pending',  -- pending | sending | succeeded | failed
    attempts        integer NOT NULL DEFAULT 0,
    run_start       integer NOT NULL DEFAULT 0,    -- attempts before this run (a redelivery starts a run)
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status IN ('pending', 'sending');
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (webhook_id, order_key, seq)
    WHERE status IN ('pending', 'sending');
CREATE INDEX webhook_deliveries_list ON webhook_deliveries (webhook_id, id DESC);

CREATE TABLE webhook_attempts (
    delivery_id  text NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    n            integer NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    status_code  integer,
    error        text,
    duration_ms  integer NOT NULL,
    response     text,                             -- the first 1 KB of the answer
    PRIMARY KEY (delivery_id, n)
);
CREATE INDEX webhook_deliveries_endpoint_due ON webhook_deliveries (webhook_id, next_attempt_at)
    WHERE status IN ('pending', 'sending');
