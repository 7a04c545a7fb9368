-- The publish pipeline: per-step completion of outbox events (PostgreSQL, not the broker,
-- is the source of truth), the reverse-reference index for dependents, releases and
-- scheduled actions.

-- One row per (event, step). A worker claims a step with a lease; a sweeper re-enqueues
-- steps whose lease ran out or whose retry is due; after max attempts a step is `failed`.
CREATE TABLE outbox_steps (
    event_id        text NOT NULL REFERENCES outbox_events (id) ON DELETE CASCADE,
    step            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    enqueued_at     timestamptz,
    lease_until     timestamptz,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz,
    last_error      text,
    PRIMARY KEY (event_id, step)
);
CREATE INDEX outbox_steps_open ON outbox_steps (next_attempt_at) WHERE status IN ('pending', 'running');

-- Published references: source entry (published) -> target entry. Lets a change of the
-- target find every published entry whose prerendered files include it.
CREATE TABLE entry_references (
    source_id text NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    target_id text NOT NULL,
    PRIMARY KEY (source_id, target_id)
);
CREATE INDEX entry_references_target ON entry_references (target_id);

CREATE TABLE releases (
    id           text PRIMARY KEY,
    title        text NOT NULL,
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'published')),
    version      integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE TABLE release_entries (
    release_id text NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    position   integer NOT NULL,
    type       text NOT NULL,
    entry_id   text NOT NULL,
    PRIMARY KEY (release_id, position)
);

CREATE TABLE scheduled_actions (
    id          text PRIMARY KEY,
    action      text NOT NULL CHECK (action IN ('publish', 'unpublish')),
    entry_type  text,
    entry_id    text,
    release_id  text,
    at          timestamptz NOT NULL,
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed', 'canceled')),
    error       text,
    created_by  jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    executed_at timestamptz,
    CHECK ((entry_id IS NOT NULL AND entry_type IS NOT NULL AND release_id IS NULL)
           OR (entry_id IS NULL AND entry_type IS NULL AND release_id IS NOT NULL))
);
CREATE INDEX scheduled_actions_due ON scheduled_actions (at) WHERE status = 'pending';

-- Events feed and sync read the outbox in commit-safe order: (txid, seq).
CREATE INDEX outbox_events_feed ON outbox_events (txid, seq);
