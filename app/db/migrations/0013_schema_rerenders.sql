-- Online schema changes: a content type or locale change commits the new schema at once and leaves
-- bringing every entry, published document and file of the type up to date to the workers, in
-- batches that resume from `cursor` (app/schema/rerenders.py). One row per content type: a further
-- change of the type restarts its row (generation + 1 fences a batch that started before it).
CREATE TABLE schema_rerenders (
    type            text PRIMARY KEY REFERENCES content_types (id) ON DELETE CASCADE,
    type_version    integer NOT NULL,
    generation      integer NOT NULL DEFAULT 1,
    reason          text NOT NULL,                  -- content_type | locale
    removed_fields  text[] NOT NULL DEFAULT '{}',   -- values still being dropped: not to be added again yet
    dropped_locales text[] NOT NULL DEFAULT '{}',   -- deleted locales whose files are still to be removed
    phase           text NOT NULL DEFAULT 'entries', -- entries | dependents | finish | done
    cursor          text NOT NULL DEFAULT '',       -- the last entry id of the phase done
    done            bigint NOT NULL DEFAULT 0,      -- entries of the type brought up to date
    total           bigint NOT NULL DEFAULT 0,      -- entries of the type when the change committed
    dependents      bigint NOT NULL DEFAULT 0,      -- entries of other types whose files include them
    lease_until     timestamptz,                    -- a worker runs a batch until then
    lease_token     text,                           -- ... and only that worker moves the cursor
    attempts        integer NOT NULL DEFAULT 0,     -- failed attempts of the current batch (reset by progress)
    last_error      text,
    failed_at       timestamptz,                    -- attempts ran out: visible, retried by the next change
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX schema_rerenders_unfinished ON schema_rerenders (updated_at) WHERE finished_at IS NULL AND failed_at IS NULL;
