-- How far the outbox has been pruned (one row): every event at or before (txid, seq) in feed
-- order is gone. Sync cursors and event ids from before it answer 410; a new reader starts after it.
CREATE TABLE outbox_pruned (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    txid       xid8 NOT NULL DEFAULT '0',
    seq        bigint NOT NULL DEFAULT 0,
    created_at timestamptz,           -- the newest pruned event's created_at
    max_id     text,                  -- the greatest pruned event id (ULIDs sort by creation time)
    events     bigint NOT NULL DEFAULT 0,
    pruned_at  timestamptz
);
INSERT INTO outbox_pruned DEFAULT VALUES;
