-- By-slug reads (`WHERE type = $1 AND locale = $2 AND slug = $3 ORDER BY published_at, entry_id
-- LIMIT 1`) are prepared statements. Before the table's first ANALYZE (a new site, a first bulk
-- import: autovacuum analyzes a minute or more later) PostgreSQL's generic plan for them walked
-- published_documents_published backwards and filtered on the slug: half of the type's documents
-- per read (at 1,000 articles 5.5 ms instead of 0.05; measured in bench/mixed.sh as twice the
-- database CPU per by-slug read). With the order's columns in the slug index, that index answers
-- the read in order, without a sort, and every plan takes it.
CREATE INDEX published_documents_slug_ordered ON published_documents (type, locale, slug, published_at, entry_id)
    WHERE slug IS NOT NULL;
DROP INDEX published_documents_slug;
ALTER INDEX published_documents_slug_ordered RENAME TO published_documents_slug;
