import time
from collections import defaultdict

from cms.app.content import bulk, service
from cms.app.credentials.schemas import SYSTEM
from cms.app.db.pool import connect


def _upsert(i, **fields):
    return {"op": "upsert", "type": "article", "id": f"a{i}", "fields": {"title": f"Article {i}", **fields}}


async def test_prof(blog):
    conn = await connect(blog.database_url)
    stats = defaultdict(lambda: [0, 0.0])
    seq = {}

    def logger(rec):
        s = stats[rec.query[:90]]
        s[0] += 1
        s[1] += rec.elapsed
        seq.setdefault(rec.query[:40], []).append(rec.elapsed)

    ctx = service.WriteContext(SYSTEM.__class__(id="s", kind="management", name="s", scopes=frozenset({"content:write", "content:publish"})), None, None)
    await bulk.run_bulk(conn, {"actions": [_upsert(i) for i in range(500)] + [{"op": "publish", "type": "article", "id": f"a{i}"} for i in range(500)]}, ctx, "http://x")
    await conn.execute("ANALYZE")
    conn.add_query_logger(logger)
    t = time.perf_counter()
    await bulk.run_bulk(conn, {"actions": [_upsert(i, rank=i + 1) for i in range(500)] + [_upsert(i) for i in range(500, 1000)]}, ctx, "http://x")
    print("\ntotal", time.perf_counter() - t)
    for k, v in seq.items():
        if len(v) >= 1000:
            print(repr(k), [round(sum(v[i:i+100])*10, 3) for i in range(0, len(v), 100)])
    for q, (n, el) in sorted(stats.items(), key=lambda kv: -kv[1][1])[:25]:
        print(f"{el:7.3f} {n:6d} {q!r}")
    await conn.close()


async def test_explain(blog):
    conn = await connect(blog.database_url)
    ctx = service.WriteContext(SYSTEM.__class__(id="s", kind="management", name="s", scopes=frozenset({"content:write", "content:publish"})), None, None)
    await bulk.run_bulk(conn, {"actions": [_upsert(i) for i in range(1000)]}, ctx, "http://x")
    await bulk.run_bulk(conn, {"actions": [_upsert(i) for i in range(1000, 2000)]}, ctx, "http://x")
    for _ in range(7):
        await conn.fetch("""SELECT u.field, u.locale, u.value FROM entry_unique_values u
           JOIN unnest($2::text[], $3::text[], $4::text[]) AS c(field, locale, value)
             ON u.field = c.field AND u.locale = c.locale AND u.value = c.value
           WHERE u.type = $1 AND u.entry_id <> $5""", "article", ["slug"], ["_"], ["article-5"], "a5")
    rows = await conn.fetch("""EXPLAIN ANALYZE SELECT u.field, u.locale, u.value FROM entry_unique_values u
           JOIN unnest($2::text[], $3::text[], $4::text[]) AS c(field, locale, value)
             ON u.field = c.field AND u.locale = c.locale AND u.value = c.value
           WHERE u.type = $1 AND u.entry_id <> $5""", "article", ["slug"], ["_"], ["article-5"], "a5")
    print("\n".join(r[0] for r in rows))
    rows = await conn.fetch("""EXPLAIN ANALYZE SELECT value FROM entry_unique_values
           WHERE type = $1 AND field = $2 AND locale = $3 AND entry_id <> $5
             AND (value = $4 OR value LIKE $4 || '-%')""", "article", "slug", "_", "article-5", "a5")
    print("\n".join(r[0] for r in rows))
    await conn.close()
