-- A schema change rewrites every document (and entry) of a type. The space of the old row versions
-- is reused only after autovacuum has passed, which by default waits for 20% of a table to be dead:
-- at a million documents 200,000 rows, so the table kept growing through a whole re-render (after
-- three full re-renders published_documents had grown from 4.1 to 6.6 GB, bench/README "Space after
-- re-renders"). Vacuuming at 2% keeps the slack of a full rewrite to a few percent of the table; on
-- small tables the fixed threshold (50 rows) still decides.
ALTER TABLE published_documents SET (autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE entries SET (autovacuum_vacuum_scale_factor = 0.02);
