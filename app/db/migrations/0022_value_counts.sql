-- How many published values of each counted field there are per key, so a filtered total
-- (query/sql.py TOTAL_BOUND) need not count the values one by one (at a million documents, the
-- capped count of 10,001 index entries of published_values_pkey was most of `filter[rank][gte]`
-- and `filter[category][eq]`, ~2 ms each):
--   - strings and booleans: the key is the value itself. `eq`/`in` totals are a sum of at most 16
--     rows per value (a string over 500 characters, which indexed fields no longer accept, has no
--     key: such a filter value is counted as before).
--   - numbers: the key is the value's bucket (value_bucket). When the buckets lying wholly inside a
--     gt/gte/lt/lte range hold more than 10,000 values the total is `10000` with "gte" without
--     counting; else the values are counted as before (at most 10,001 index entries).
--
-- value_bucket(v) is the sign, the exponent and the two leading mantissa bits of v as a float8
-- (four buckets per power of two). It only has to be monotone (x <= y implies bucket(x) <=
-- bucket(y)); then bucket(x) > bucket(N) implies x > N, so a bucket above N's holds only values
-- that satisfy `gt` and `gte` (below: `lt`, `lte`). numeric -> float8 rounds monotonically, and
-- the bit patterns of positive doubles are ordered like their values (negative: reversed).
-- Values beyond float8's range go to the outermost buckets (a cast would fail).
CREATE FUNCTION value_bucket(v jsonb) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN jsonb_typeof(v) <> 'number' THEN NULL
        WHEN abs(v::numeric) >= 1e300 THEN CASE WHEN v::numeric > 0 THEN 32767 ELSE -32768 END
        WHEN abs(v::numeric) < 1e-300 THEN CASE WHEN v::numeric < 0 THEN -1 ELSE 0 END
        ELSE (SELECT CASE WHEN b < 8192 THEN b ELSE 8191 - b END  -- b >= 8192: the sign bit
                FROM (SELECT (get_byte(s, 0) << 6) | (get_byte(s, 1) >> 2) AS b
                        FROM (SELECT float8send(v::numeric::float8) AS s) _s) _b)
    END
$$;

CREATE FUNCTION value_key(v jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(v)
        WHEN 'number' THEN to_jsonb(value_bucket(v))
        WHEN 'boolean' THEN v
        WHEN 'string' THEN CASE WHEN length(v #>> '{}') <= 500 THEN v END  -- schema/model.py KEY_TEXT_MAX
    END
$$;

-- Sharded like list_counts (a backend adds to its own shard, pid modulo 16), so concurrent
-- publishes do not wait on one counter row. Rows that drop to 0 are deleted by the workers'
-- pruning (workers/relay.py), so values no longer published do not pile up.
CREATE TABLE value_counts (
    type   text NOT NULL,
    field  text NOT NULL,
    locale text NOT NULL,
    key    jsonb NOT NULL,
    shard  smallint NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (type, field, locale, key, shard)
);

-- Kept by statement-level triggers on published_values itself (which triggers on
-- published_documents keep), so every writer keeps them without knowing it. published_values rows
-- are inserted and deleted, never updated (the value is part of the key).
CREATE FUNCTION value_counts_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO value_counts (type, field, locale, key, shard, n)
    SELECT type, field, locale, value_key(value), pg_backend_pid() % 16, count(*)
      FROM added WHERE value_key(value) IS NOT NULL
     GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (type, field, locale, key, shard) DO UPDATE SET n = value_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE FUNCTION value_counts_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO value_counts (type, field, locale, key, shard, n)
    SELECT type, field, locale, value_key(value), pg_backend_pid() % 16, -count(*)
      FROM removed WHERE value_key(value) IS NOT NULL
     GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (type, field, locale, key, shard) DO UPDATE SET n = value_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;

-- For INSERT … ON CONFLICT DO NOTHING (published_values_added), the transition table holds only
-- the rows actually inserted.
CREATE TRIGGER published_values_counted_insert AFTER INSERT ON published_values
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION value_counts_added();
CREATE TRIGGER published_values_counted_delete AFTER DELETE ON published_values
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION value_counts_removed();
-- A TRUNCATE would leave the counts counting values that are gone: empty them with it.
CREATE FUNCTION value_counts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM value_counts;
    RETURN NULL;
END $$;
CREATE TRIGGER published_values_counted_truncate AFTER TRUNCATE ON published_values
    FOR EACH STATEMENT EXECUTE FUNCTION value_counts_truncated();

INSERT INTO value_counts (type, field, locale, key, shard, n)
SELECT type, field, locale, value_key(value), 0, count(*)
  FROM published_values WHERE value_key(value) IS NOT NULL
 GROUP BY 1, 2, 3, 4;

-- The same for the kept counts of published_documents and entries, which had no TRUNCATE trigger:
-- a TRUNCATE (by hand, or a tool's) empties what is derived from them.
CREATE FUNCTION published_documents_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE published_values;
    DELETE FROM list_counts WHERE kind = 'published';
    RETURN NULL;
END $$;
CREATE TRIGGER published_documents_derived_truncate AFTER TRUNCATE ON published_documents
    FOR EACH STATEMENT EXECUTE FUNCTION published_documents_truncated();

CREATE FUNCTION entries_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM list_counts WHERE kind = 'entries';
    RETURN NULL;
END $$;
CREATE TRIGGER entries_derived_truncate AFTER TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION entries_truncated();
