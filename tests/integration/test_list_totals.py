"""`meta.total` at any size: exact for a whole type (kept count rows, sharded per backend), capped at
TOTAL_BOUND with `total_relation: "gte"` for filtered sets; `q` ranks a bounded set; `contains` on an
indexed text field has a trigram index the planner uses."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from cms.app.query import sql
from cms.app.query.indexes import trigram_ddl, values_trigram_ddl
from cms.app.query.sources import DeliverySource, DraftSource
from cms.app.query.sql import build_sql, fetch_page
from tests.integration.test_query_engine import query, seed


async def _counted(conn: Any, kind: str, type_id: str, locale: str) -> int:
    return int(await conn.fetchval(
        "SELECT coalesce(sum(n), 0) FROM list_counts WHERE kind = $1 AND type = $2 AND locale = $3",
        kind, type_id, locale))


async def _actual(conn: Any, type_id: str, locale: str) -> tuple[int, int]:
    published = await conn.fetchval(
        "SELECT count(*) FROM published_documents WHERE type = $1 AND locale = $2", type_id, locale)
    entries = await conn.fetchval("SELECT count(*) FROM entries WHERE type = $1", type_id)
    return int(published), int(entries)


async def _assert_counts_match(conn: Any) -> None:
    for type_id in ("article", "author", "tag"):
        for locale in ("en", "de"):
            published, entries = await _actual(conn, type_id, locale)
            assert await _counted(conn, "published", type_id, locale) == published, (type_id, locale)
            assert await _counted(conn, "entries", type_id, "") == entries, type_id


async def test_count_rows_follow_every_kind_of_write(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await seed(conn)
        await _assert_counts_match(conn)
        assert await _counted(conn, "published", "article", "en") > 0
        # An upsert that updates in place adds nothing; a new row adds one.
        await conn.execute(
            """INSERT INTO published_documents (entry_id, locale, type, version, body, etag, vals, search,
                                                published_at, updated_at, created_at)
               SELECT entry_id, locale, type, version + 1, body, etag, vals, search, published_at, updated_at, created_at
                 FROM published_documents WHERE type = 'article'
               ON CONFLICT (entry_id, locale) DO UPDATE SET version = excluded.version""")
        await _assert_counts_match(conn)
        # Deleting an entry removes its documents by cascade: both counts follow.
        victim = await conn.fetchval("SELECT entry_id FROM published_documents WHERE type = 'article' LIMIT 1")
        await conn.execute("DELETE FROM entries WHERE id = $1", victim)
        await _assert_counts_match(conn)
        # A locale's documents dropped at once; a rolled-back write leaves the counts as they were.
        await conn.execute("DELETE FROM published_documents WHERE locale = 'de'")
        await _assert_counts_match(conn)
        await conn.execute("DELETE FROM entries WHERE type = 'tag'")
        await _assert_counts_match(conn)
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await conn.execute("DELETE FROM entries WHERE type = 'author'")
                raise RuntimeError("roll back")
        await _assert_counts_match(conn)


async def test_concurrent_writers_keep_exact_counts_without_one_hot_row(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await seed(conn)

    async def writer(n: int) -> None:
        async with db.acquire() as conn, conn.transaction():
            for i in range(10):
                await conn.execute("INSERT INTO entries (id, type, data, version) VALUES ($1, 'tag', '{}', 1)",
                                   f"w{n}-{i}")
                await asyncio.sleep(0)

    await asyncio.gather(*(writer(n) for n in range(5)))
    async with db.acquire() as conn:
        await _assert_counts_match(conn)
        # Each backend added to its own shard.
        shards = await conn.fetchval("SELECT count(*) FROM list_counts WHERE kind = 'entries' AND type = 'tag'")
        assert shards > 1


@pytest.mark.parametrize("source", ["delivery", "draft"])
async def test_an_unfiltered_total_comes_from_the_count_rows(db: asyncpg.Pool, source: str) -> None:
    async with db.acquire() as conn:
        await seed(conn)
        src = DeliverySource() if source == "delivery" else DraftSource(["en"])
        q = query({"limit": "1"}, source="delivery" if source == "delivery" else "draft")
        page_sql, count_sql, _, _ = build_sql(q, src, "1")
        assert "list_counts" in count_sql and "count(*)" not in page_sql
        page = await fetch_page(conn, q, src, "1")
        published, entries = await _actual(conn, "article", "en")
        assert page.total == (published if source == "delivery" else entries) and page.total_relation == "eq"
        # Past the last page: the count answers alone, still exact.
        await conn.execute(  # as if 20,000 more had been written by another backend
            "INSERT INTO list_counts (kind, type, locale, shard, n) VALUES ($1, 'article', $2, 99, 20000)",
            "published" if source == "delivery" else "entries", "en" if source == "delivery" else "")
        grown = await fetch_page(conn, q, src, "1")
        assert grown.total == page.total + 20000 and grown.total_relation == "eq"


async def test_a_filtered_total_is_capped_and_says_so(db: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    async with db.acquire() as conn:
        await seed(conn)
        q = query({"filter[rank][gte]": "1", "limit": "1"})
        full = await fetch_page(conn, q, DeliverySource(), "1")
        assert full.total >= 3 and full.total_relation == "eq"
        monkeypatch.setattr(sql, "TOTAL_BOUND", 2)
        capped = await fetch_page(conn, q, DeliverySource(), "1")
        assert (capped.total, capped.total_relation) == (2, "gte")
        # The count statement itself stops at the bound.
        _, count_sql, _, _ = build_sql(q, DeliverySource(), "1")
        assert "LIMIT 3" in count_sql


async def test_q_ranks_a_bounded_set(db: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    async with db.acquire() as conn:
        await seed(conn)
        q = query({"q": "docker", "limit": "100"})
        everything = await fetch_page(conn, q, DeliverySource(), "d.entry_id")
        assert len(everything.rows) >= 2
        monkeypatch.setattr(sql, "RANK_BOUND", 1)
        bounded = await fetch_page(conn, query({"q": "docker", "limit": "100"}), DeliverySource(), "d.entry_id")
        assert len(bounded.rows) == 1 and bounded.total == everything.total
        # Sorted by something else, every match is there.
        by_date = await fetch_page(conn, query({"q": "docker", "sort": "-published_at", "limit": "100"}),
                                   DeliverySource(), "d.entry_id")
        assert len(by_date.rows) == len(everything.rows)


async def _other_articles(conn: Any, field: str, n: int = 3000) -> None:
    """n published articles whose `field` is other-1 … other-n (a big type: selective indexes pay)."""
    await conn.execute(
        "INSERT INTO entries (id, type, data, version) SELECT 'bulk' || n, 'article', '{}', 1 FROM generate_series(1, $1) n", n)
    await conn.execute(
        """INSERT INTO published_documents (entry_id, locale, type, version, body, etag, vals, search,
                                            published_at, updated_at, created_at)
           SELECT 'bulk' || n, 'en', 'article', 1, '', 'x', jsonb_build_object($2::text, 'other-' || n),
                  ''::tsvector, now(), now(), now() FROM generate_series(1, $1) n""", n, field)


async def test_contains_on_an_indexed_text_field_uses_the_trigram_index(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm')")
        await seed(conn)
        # Enough other documents of the type that the planner prefers the selective trigram index.
        await _other_articles(conn, "slug")
        await conn.execute(trigram_ddl("article", "slug"))
        await conn.execute("ANALYZE published_documents")
        for params, expected in (({"filter[slug][contains]": "ECOND"}, ["art2"]),
                                 ({"filter[slug][startswith]": "hello"}, ["art1"]),
                                 # the pattern is written into the statement (dollar-quoted): its
                                 # quotes and dollars are only text
                                 ({"filter[slug][contains]": "$q$') OR true; DROP TABLE entries; --$qq"}, []),
                                 ({"filter[slug][contains]": "o$"}, []), ({"filter[slug][contains]": "'"}, [])):
            q = query({**params, "limit": "100"})
            page = await fetch_page(conn, q, DeliverySource(), "d.entry_id AS id")
            assert [r["id"] for r in page.rows] == expected
            page_sql, _, values, _ = build_sql(q, DeliverySource(), "d.entry_id")
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {page_sql}", *values))
            assert "pd_trgm_article_slug" in plan or not expected, plan
        assert await conn.fetchval("SELECT count(*) FROM entries") > 3000
        for tricky in ("", "$q$", "a$q", "$", "q$", "$$", "$qq$x$q$", "'\\", "%\\_"):
            assert await conn.fetchval(f"SELECT {sql._dollar_quoted(tricky)}::text") == tricky


async def test_the_api_says_how_exact_a_total_is(apps: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    m = apps.management
    r = await m.put("/v1/content-types/note", json={"name": "Note", "fields": [
        {"id": "text", "type": "text", "indexed": True}]})
    assert r.status_code == 201
    trigram = await apps.management_app.state.pool.fetchval(
        "SELECT count(*) FROM pg_indexes WHERE indexname = 'pd_trgm_note_text'")
    assert trigram == 1  # an indexed text field gets its trigram index with the type
    pool = apps.management_app.state.pool
    assert await pool.fetchval("SELECT count(*) FROM pg_indexes WHERE indexname = 'pv_trgm_note_text'") == 1
    # an install from before it gets it from migration 0017
    from pathlib import Path

    import cms.app.db

    await pool.execute("DROP INDEX pv_trgm_note_text")
    migration = Path(cms.app.db.__file__).parent / "migrations" / "0017_values_trigrams.sql"
    await pool.execute(migration.read_text())
    assert await pool.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = 'pv_trgm_note_text'") == (
        "CREATE INDEX pv_trgm_note_text ON public.published_values USING gin (((value #>> '{}'::text[])) gin_trgm_ops)"
        " WHERE ((type = 'note'::text) AND (field = 'text'::text))")
    for n in range(4):
        entry = (await m.post("/v1/entries/note", json={"fields": {"text": f"note {n}"}})).json()["data"]["id"]
        assert (await m.post(f"/v1/entries/note/{entry}/publish")).status_code == 200
    reader = await apps.reader()
    whole = (await reader.get("/api/v1/entries/note?limit=1")).json()["meta"]
    assert (whole["total"], whole["total_relation"]) == (4, "eq")
    monkeypatch.setattr(sql, "TOTAL_BOUND", 2)
    filtered = (await reader.get("/api/v1/entries/note?limit=1&filter[text][contains]=note")).json()["meta"]
    assert (filtered["total"], filtered["total_relation"]) == (2, "gte")
    drafts = (await m.get("/v1/entries/note?status=published")).json()["meta"]
    assert (drafts["total"], drafts["total_relation"]) == (2, "gte")
    assert (await m.get("/v1/entries/note")).json()["meta"]["total"] == 4
    gql = await reader.post("/graphql", json={"query": "{ noteCollection(limit: 1) { total totalRelation } }"})
    assert gql.json()["data"]["noteCollection"] == {"total": 4, "totalRelation": "eq"}


async def test_an_eq_filter_newest_first_reads_the_page_in_index_order(db: asyncpg.Pool) -> None:
    from cms.app.query.indexes import newest_ddl

    async with db.acquire() as conn:
        await seed(conn)
        # Many documents of one kind: sorting all of them would be the plan without the index.
        await conn.execute(
            """INSERT INTO entries (id, type, data, version) SELECT 'many' || n, 'article', '{}', 1
                 FROM generate_series(1, 3000) n""")
        await conn.execute(
            """INSERT INTO published_documents (entry_id, locale, type, version, body, etag, vals, search,
                                                published_at, updated_at, created_at)
               SELECT 'many' || n, 'en', 'article', 1, '', 'x',
                      jsonb_build_object('kind', CASE WHEN n % 2 = 0 THEN 'news' ELSE 'blog' END),
                      ''::tsvector, now() - make_interval(secs => n), now(), now() FROM generate_series(1, 3000) n""")
        await conn.execute(newest_ddl("article", "kind"))
        await conn.execute("ANALYZE published_documents")
        q = query({"filter[kind][eq]": "news", "limit": "20"})
        page = await fetch_page(conn, q, DeliverySource(), "d.entry_id AS id")
        assert len(page.rows) == 20 and page.total >= 1500
        page_sql, _, values, _ = build_sql(q, DeliverySource(), "d.entry_id")
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {page_sql}", *values))
        assert "pd_new_article_kind" in plan, plan
        assert "Sort" not in plan, plan  # the page is read in index order, not a sort of every match


async def test_a_filter_on_an_indexed_field_is_counted_index_only_from_published_values(db: asyncpg.Pool) -> None:
    """migration 0014: one row per published document and indexed scalar field, kept by triggers;
    a filtered total on such a field counts them index-only once indexed_fields says they are complete."""
    import msgspec

    from tests.integration.test_query_engine import ARTICLE

    indexed = msgspec.structs.replace(ARTICLE, fields=[
        msgspec.structs.replace(f, indexed=True) if f.id in ("rank", "kind") else f for f in ARTICLE.fields])
    cases = [{"filter[rank][gte]": "2"}, {"filter[rank][eq]": "2"}, {"filter[rank][lt]": "3"},
             {"filter[kind][in]": "news,blog"}, {"filter[kind][eq]": "news"}, {"filter[kind][contains]": "EW"},
             {"filter[kind][startswith]": "bl"}, {"filter[kind][contains]": "%"}, {"filter[rank][gt]": "100"}]

    async def totals(conn: Any, locale: str) -> list[int]:
        return [(await fetch_page(conn, query({**c, "limit": "1"}, ct=indexed, locale=locale),
                                  DeliverySource(), "1")).total for c in cases]

    async def rows_match(conn: Any) -> None:
        expected = await conn.fetch(
            """SELECT d.type, f.field, d.locale, coalesce(d.vals -> f.field, 'null'::jsonb) AS value, d.entry_id
                 FROM published_documents d JOIN indexed_fields f ON f.type = d.type ORDER BY 1, 2, 3, 4, 5""")
        kept = await conn.fetch("SELECT type, field, locale, value, entry_id FROM published_values ORDER BY 1, 2, 3, 4, 5")
        assert [tuple(r) for r in kept] == [tuple(r) for r in expected] and kept

    async with db.acquire() as conn:
        await seed(conn)
        slow = {loc: await totals(conn, loc) for loc in ("en", "de")}  # no indexed_fields row: documents counted
        assert slow["en"][0] >= 3 and slow["en"][-1] == 0
        await conn.execute("INSERT INTO indexed_fields (type, field, ready) VALUES ('article', 'rank', true),"
                           " ('article', 'kind', true)")
        await conn.execute("UPDATE published_documents SET version = version")  # every document rewritten
        await rows_match(conn)
        assert {loc: await totals(conn, loc) for loc in ("en", "de")} == slow

        # The count reads published_values only, index-only; the documents' count never runs.
        await conn.execute("VACUUM (ANALYZE) published_values")
        page_sql, count_sql, _, values = build_sql(query({"filter[rank][gte]": "2"}, ct=indexed), DeliverySource(), "1")
        async with conn.transaction():  # a few rows: the planner would rather read the table
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) {count_sql}", *values))
        assert "Index Only Scan using published_values_pkey" in plan, plan
        assert "never executed" in plan and "Heap Fetches: 0" in plan, plan

        # Every kind of write keeps the rows: an upsert changing a value, an unpublish, a cascade, a locale.
        await conn.execute(
            """UPDATE published_documents SET vals = jsonb_set(vals, '{rank}', '42') WHERE entry_id = 'art1'""")
        await conn.execute("DELETE FROM published_documents WHERE entry_id = 'art2'")
        await conn.execute("DELETE FROM entries WHERE id = 'art3'")
        await conn.execute("DELETE FROM published_documents WHERE locale = 'de'")
        await rows_match(conn)
        after = await totals(conn, "en")
        await conn.execute("UPDATE indexed_fields SET ready = false")  # not ready: the documents are counted
        assert await totals(conn, "en") == after and after != slow["en"]


async def test_an_update_rewrites_only_the_indexed_values_that_changed(db: asyncpg.Pool) -> None:
    """migration 0019: a document written again with the same indexed values (a new title, a schema
    change's re-render) leaves its published_values rows as they were (no dead rows in the counted
    index); a changed value replaces that field's row only, and the rows always match the documents."""
    rows = "SELECT entry_id, locale, field, value, ctid::text AS at FROM published_values ORDER BY 1, 2, 3"
    expected = """SELECT d.entry_id, d.locale, f.field, coalesce(d.vals -> f.field, 'null'::jsonb) AS value
                    FROM published_documents d JOIN indexed_fields f ON f.type = d.type ORDER BY 1, 2, 3"""
    async with db.acquire() as conn:
        await seed(conn)
        await conn.execute("INSERT INTO indexed_fields (type, field, ready) VALUES ('article', 'rank', true),"
                           " ('article', 'kind', true)")
        await conn.execute("UPDATE published_documents SET version = version")  # every document: its rows added
        before = {(r["entry_id"], r["locale"], r["field"]): r for r in await conn.fetch(rows)}
        assert before and [tuple(r)[:4] for r in before.values()] == [tuple(r) for r in await conn.fetch(expected)]

        await conn.execute("UPDATE published_documents SET etag = etag || 'x', version = version + 1")
        assert {k: r["at"] for k, r in before.items()} == {
            (r["entry_id"], r["locale"], r["field"]): r["at"] for r in await conn.fetch(rows)}

        await conn.execute("UPDATE published_documents SET vals = jsonb_set(vals, '{rank}', '7')"
                           " WHERE entry_id = 'art1' AND locale = 'en'")
        after = {(r["entry_id"], r["locale"], r["field"]): r for r in await conn.fetch(rows)}
        moved = {k for k in before if after[k]["at"] != before[k]["at"]}
        assert moved == {("art1", "en", "rank")} and after[("art1", "en", "rank")]["value"] == 7
        assert [tuple(r)[:4] for r in after.values()] == [tuple(r) for r in await conn.fetch(expected)]
        await conn.execute("DELETE FROM published_documents WHERE entry_id = 'art2'")
        assert not await conn.fetchval("SELECT count(*) FROM published_values WHERE entry_id = 'art2'")


async def test_contains_is_counted_through_the_trigram_index_of_published_values(db: asyncpg.Pool) -> None:
    """`contains` on an indexed text field: the total comes from published_values (narrow rows) by
    its trigram index; the documents' count never runs."""
    import msgspec

    from tests.integration.test_query_engine import ARTICLE

    indexed = msgspec.structs.replace(ARTICLE, fields=[
        msgspec.structs.replace(f, indexed=True) if f.id == "kind" else f for f in ARTICLE.fields])
    async with db.acquire() as conn:
        await seed(conn)
        await conn.execute("INSERT INTO indexed_fields (type, field, ready) VALUES ('article', 'kind', true)")
        await conn.execute("UPDATE published_documents SET version = version")
        await _other_articles(conn, "kind")
        await conn.execute(values_trigram_ddl("article", "kind"))
        await conn.execute("VACUUM (ANALYZE) published_values")
        q = query({"filter[kind][contains]": "NEW", "limit": "1"}, ct=indexed)
        _, count_sql, _, values = build_sql(q, DeliverySource(), "1")
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) {count_sql}", *values))
        assert "Bitmap Index Scan on pv_trgm_article_kind" in plan and "never executed" in plan, plan
        news = await conn.fetchval("SELECT count(*) FROM published_documents WHERE locale = 'en' AND vals->>'kind' = 'news'")
        assert (await fetch_page(conn, q, DeliverySource(), "1")).total == news >= 1
        await conn.execute("UPDATE indexed_fields SET ready = false")
        assert (await fetch_page(conn, q, DeliverySource(), "1")).total == news


async def test_delivery_reads_run_without_parallel_workers(apps: Any) -> None:
    """A parallel plan's workers cost more to start than a delivery read takes (a capped count of
    10,001 index entries: 17 ms with three workers, 5 ms without, at 1M): delivery connections do
    not plan them; the management app (reports, bulk) may."""
    async with apps.delivery_app.state.read_pool.acquire() as conn:
        assert await conn.fetchval("SHOW max_parallel_workers_per_gather") == "0"
    async with apps.management_app.state.pool.acquire() as conn:
        assert await conn.fetchval("SHOW max_parallel_workers_per_gather") != "0"


# Numbers around the buckets' edges (a power of two and its quarters), both signs, zero, tiny and
# huge ones (beyond float8: the outermost buckets), fractions.
_SCORES = [0, 0.0001, 1e-320, -1e-320, 0.5, 1, 1.25, 1.2499, 1.5, 1.75, 2, 2.0001, 3, 4, 7.9, 8, 100, 1000.5,
           1024, -1, -1.25, -1.2501, -2, -3.5, -1000, 5e300, -5e300, 1e308, 12345678.9]


async def test_kept_value_counts_answer_eq_totals_and_stop_range_totals_early(
        db: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    """migration 0022: value_counts holds how many published values of each counted field there are
    per key (a string or boolean itself, a number's bucket), kept by triggers on published_values.
    `eq`/`in` on strings and booleans is a sum of kept rows; a gt/gte/lt/lte total whose wholly
    included buckets already hold more than TOTAL_BOUND answers "gte" without counting. Every total
    is the same as counting the values (checked against Python at every edge value and bound)."""
    import msgspec

    from cms.app.schema import repository as schema_repo
    from tests.integration.test_query_engine import ARTICLE, put

    indexed = msgspec.structs.replace(ARTICLE, fields=[
        msgspec.structs.replace(f, indexed=True) if f.id in ("rank", "score", "title", "flag") else f
        for f in ARTICLE.fields])

    async def counts_match(conn: Any) -> None:
        expected = await conn.fetch(
            """SELECT type, field, locale, value_key(value) AS key, count(*) AS n FROM published_values
                WHERE value_key(value) IS NOT NULL GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4""")
        kept = await conn.fetch(
            """SELECT type, field, locale, key, sum(n) AS n FROM value_counts
                GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4""")
        assert [tuple(r) for r in kept] == [tuple(r) for r in expected] and kept

    async def total(conn: Any, params: dict[str, str]) -> tuple[int, str]:
        page = await fetch_page(conn, query({**params, "limit": "1"}, ct=indexed), DeliverySource(), "1")
        return page.total, page.total_relation

    async with db.acquire() as conn:
        await seed(conn)
        await conn.execute("INSERT INTO indexed_fields (type, field, ready) VALUES ('article', 'rank', true),"
                           " ('article', 'score', true), ('article', 'title', true), ('article', 'flag', true)")
        await conn.execute("UPDATE published_documents SET version = version")
        kinds = ["news", "blog", "", "x" * 500, "Ünïcode", "news "]
        for i, score in enumerate(_SCORES):
            await put(conn, indexed, f"s{i}", {"title": {"en": kinds[i % len(kinds)]}, "score": score,
                                               "rank": i * 37 - 300, "flag": i % 3 == 0})
        await counts_match(conn)
        en = [r["vals"] for r in await conn.fetch(
            "SELECT vals FROM published_documents WHERE type = 'article' AND locale = 'en'")]
        numbers = {field: [v for vals in en if isinstance(v := vals.get(field), int | float) and not isinstance(v, bool)]
                   for field in ("rank", "score")}
        compare = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
                   "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}
        for bound in (3, 12):
            monkeypatch.setattr(sql, "TOTAL_BOUND", bound)

            def want(n: int, bound: int = bound) -> tuple[int, str]:
                return (bound, "gte") if n > bound else (n, "eq")

            for field, field_values in numbers.items():
                for op, holds in compare.items():
                    for edge in sorted({*field_values, -7, 1.3, 1e-300}):
                        if field == "rank" and not float(edge).is_integer():
                            continue
                        param = str(int(edge)) if field == "rank" else repr(edge)
                        n = sum(1 for v in field_values if holds(v, edge))
                        assert await total(conn, {f"filter[{field}][{op}]": param}) == want(n), (field, op, edge, bound)
            for kind in [*kinds, "x" * 501, "nope"]:
                n = sum(1 for vals in en if vals.get("title") == kind)
                assert await total(conn, {"filter[title][eq]": kind}) == want(n), (kind, bound)
            n = sum(1 for vals in en if vals.get("title") in ("news", "blog"))
            assert await total(conn, {"filter[title][in]": "news,blog,news"}) == want(n)
            for flag in (True, False):
                n = sum(1 for vals in en if vals.get("flag") is flag)
                assert await total(conn, {"filter[flag][eq]": str(flag).lower()}) == want(n)

        # Neither an eq total nor a range whose inside buckets hold more than the bound counts values.
        monkeypatch.setattr(sql, "TOTAL_BOUND", 3)
        for params, expected in (({"filter[score][gte]": "0"}, 4), ({"filter[title][eq]": "news"}, 5)):
            _, count_sql, _, values_ = build_sql(query(params, ct=indexed), DeliverySource(), "1")
            plan = [r[0] for r in await conn.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) {count_sql}", *values_)]
            scans = [line for line in plan if "Scan" in line and " on " in line]
            assert any("value_counts" in line and "actual" in line for line in scans), plan
            assert all("never executed" in line for line in scans if "published_" in line), plan
            assert min(await conn.fetchval(count_sql, *values_), 4) == min(expected, 4), params

        # Every kind of write keeps the counts: a changed value, an unpublish, a cascade, a rollback,
        # another backend's shard, pruning of emptied rows, a TRUNCATE.
        await conn.execute("UPDATE published_documents SET vals = jsonb_set(vals, '{score}', '-77.5') WHERE entry_id = 's3'")
        await conn.execute("UPDATE published_documents SET vals = jsonb_set(vals, '{title}', '\"renamed\"')"
                           " WHERE vals ->> 'title' = 'blog'")
        await conn.execute("DELETE FROM published_documents WHERE entry_id = 's4'")
        await conn.execute("DELETE FROM entries WHERE id = 's5'")
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await conn.execute("DELETE FROM published_documents WHERE locale = 'de'")
                raise RuntimeError("roll back")
        await counts_match(conn)
        emptied = await conn.fetchval("SELECT count(*) FROM value_counts WHERE n = 0")
        assert emptied > 0 and await schema_repo.prune_value_counts(conn, 1000) == emptied
        assert not await conn.fetchval("SELECT count(*) FROM value_counts WHERE key = '\"blog\"'")
        await counts_match(conn)
        # A value added on one backend's shard and removed on another's: +1 and -1, pruned by key;
        # a key whose shards still add up to more than 0 keeps every row.
        await conn.execute("""INSERT INTO value_counts (type, field, locale, key, shard, n) VALUES
            ('article', 'title', 'en', '"moved"', 3, 1), ('article', 'title', 'en', '"moved"', 7, -1),
            ('article', 'title', 'en', '"kept"', 3, 2), ('article', 'title', 'en', '"kept"', 7, -1)""")
        assert await schema_repo.prune_value_counts(conn, 1000) == 2
        left = await conn.fetch("SELECT key #>> '{}' AS key, n FROM value_counts WHERE key IN ('\"moved\"', '\"kept\"')")
        assert sorted((r["key"], r["n"]) for r in left) == [("kept", -1), ("kept", 2)]
        await conn.execute("DELETE FROM value_counts WHERE key = '\"kept\"'")
        # The longest string value_counts keys is the longest indexed fields accept.
        from cms.app.schema.model import KEY_TEXT_MAX
        assert await conn.fetchval("SELECT value_key(to_jsonb(repeat('é', $1::int))) IS NOT NULL", KEY_TEXT_MAX)
        assert await conn.fetchval("SELECT value_key(to_jsonb(repeat('é', $1::int))) IS NULL", KEY_TEXT_MAX + 1)
    async with db.acquire() as other, db.acquire() as conn:
        await other.execute("UPDATE published_documents SET vals = jsonb_set(vals, '{score}', '9e9') WHERE entry_id = 's6'")
        await counts_match(conn)
        await conn.execute("TRUNCATE published_documents CASCADE")
        assert await conn.fetchval("SELECT count(*) FROM published_values") == 0
        assert await conn.fetchval("SELECT count(*) FROM value_counts") == 0
        assert await conn.fetchval("SELECT coalesce(sum(n), 0) FROM list_counts WHERE kind = 'published'") == 0
