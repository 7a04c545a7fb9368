-- A schema change rewrites every document (and entry) of a type. The space of the old row versions
-- is reused only after autovacuum has passed, which by default waits for 20% of a table to be dead:
-- at a million documents 200,000 rows, so the table kept growing through a whole re-render (one
-- full re-render at 1M: PostgreSQL +16% per entry; three: published_documents 4.1 -> 6.6 GB).
-- At 2% (autovacuum still comes at most once a minute) the heap of published_documents grew 6.5%
-- through a full re-render at 1M (bench/README "Space after a re-render"). Their TOAST tables
-- (compressed bodies, search vectors, entries' data) the same.
ALTER TABLE published_documents SET (autovacuum_vacuum_scale_factor = 0.02, toast.autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE entries SET (autovacuum_vacuum_scale_factor = 0.02, toast.autovacuum_vacuum_scale_factor = 0.02);
