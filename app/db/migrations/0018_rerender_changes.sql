-- What a schema change's background work needs to leave unchanged documents alone:
-- render_mark: the render number sequence's position when the change began. A file that already
-- carries its (unchanged) document's render number is skipped only when that number is at most the
-- mark; a file this change wrote itself (an earlier attempt of a batch whose purge was lost, a small
-- type's documents re-rendered in the request) is written and purged again.
-- changed: documents this change rewrote; none, and the files of the entries that include the
-- type's entries need no rewrite either.
-- Work already under way keeps the previous behaviour: mark 0 (no file skipped), changed 1.
ALTER TABLE schema_rerenders
    ADD COLUMN render_mark bigint NOT NULL DEFAULT 0,
    ADD COLUMN changed bigint NOT NULL DEFAULT 0;
UPDATE schema_rerenders SET changed = 1 WHERE finished_at IS NULL;
