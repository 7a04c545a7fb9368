"""The delivery response cache: canonical keys, a byte bound, single flight, stale lists under
writes, and no cache at all with CMS_DELIVERY_CACHE_MB=0."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from cms.app.db.pool import QUERY_LOG
from tests.support import Apps, eventually


async def _articles(apps: Apps, n: int, body: str = "") -> list[str]:
    m = apps.management
    ids = []
    for i in range(n):
        r = await m.post("/v1/entries/article", json={"fields": {"title": f"Post {i}", "rank": i, "body": body}})
        assert r.status_code == 201, r.text
        ids.append(r.json()["data"]["id"])
        assert (await m.post(f"/v1/entries/article/{ids[-1]}/publish")).status_code == 200
    return ids


async def test_keys_are_canonical_and_unknown_parameters_make_no_entries(blog: Apps) -> None:
    await _articles(blog, 3)
    d = await blog.reader()
    cache = blog.delivery_app.state.cache
    reads = blog.delivery_app.state.reads
    first = await d.get("/api/v1/entries/article", params=[("limit", "2"), ("fields", "title")])
    assert first.status_code == 200
    computed, entries = reads.computed, len(cache)
    # the same parameters in another order, with unknown ones, repeated ones (the last wins)
    for params in (
        [("fields", "title"), ("limit", "2")],
        [("fields", "title"), ("utm_source", "x"), ("limit", "2"), ("_", "123")],
        [("limit", "9"), ("fields", "title"), ("limit", "2")],
    ):
        r = await d.get("/api/v1/entries/article", params=params)
        assert r.content == first.content and r.headers["etag"] == first.headers["etag"]
    assert reads.computed == computed and len(cache) == entries
    # a single entry ignores list parameters the same way
    one = await d.get("/api/v1/entries/article/by-slug/post-0")
    computed, entries = reads.computed, len(cache)
    assert (await d.get("/api/v1/entries/article/by-slug/post-0", params={"limit": "5", "sort": "x"})).content == one.content
    assert reads.computed == computed and len(cache) == entries


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_distinct_unknown_parameters_leave_memory_flat(blog: Apps) -> None:
    """1,000 requests, each with a new unknown parameter, on a 20-entry list of ~5 KB entries: no
    new cache entries and no growth of the process (before, each made its own ~100 KB entry)."""
    await _articles(blog, 20, body="lorem ipsum " * 400)
    d = await blog.reader()
    cache = blog.delivery_app.state.cache
    url = "/api/v1/entries/article"
    assert (await d.get(url, params={"limit": "20"})).status_code == 200
    for i in range(200):  # warm up allocator and parser caches
        await d.get(url, params={"limit": "20", f"warm{i}": "1"})
    entries, size = len(cache), cache.bytes
    rss_before = _resident_bytes()
    for i in range(1000):
        r = await d.get(url, params={"limit": "20", f"cachebuster{i}": str(i)})
        assert r.status_code == 200
    rss_after = _resident_bytes()
    assert len(cache) == entries and cache.bytes == size
    assert rss_after - rss_before < 16 * 1024 * 1024, (rss_before, rss_after)


async def test_the_cache_is_bounded_in_bytes(apps_with: Any) -> None:
    async with apps_with(CMS_DELIVERY_CACHE_MB="1") as apps:
        for type_id, body in (("author", {"name": "A", "fields": [{"id": "name", "type": "text"}]}),):
            assert (await apps.management.put(f"/v1/content-types/{type_id}", json=body)).status_code == 201
        for i in range(30):
            r = await apps.management.post("/v1/entries/author", json={"fields": {"name": f"{i} " + "z" * 20_000}})
            assert (await apps.management.post(f"/v1/entries/author/{r.json()['data']['id']}/publish")).status_code == 200
        d = await apps.reader()
        cache = apps.delivery_app.state.cache
        for limit in range(1, 31):  # 30 different lists of up to ~600 KB
            assert (await d.get("/api/v1/entries/author", params={"limit": str(limit)})).status_code == 200
            assert cache.bytes <= 1024 * 1024
        assert 0 < len(cache) < 30  # the oldest went first
        newest = await d.get("/api/v1/entries/author", params={"limit": "30"})
        computed = apps.delivery_app.state.reads.computed
        assert (await d.get("/api/v1/entries/author", params={"limit": "30"})).content == newest.content
        assert apps.delivery_app.state.reads.computed == computed or len(newest.content) > 1024 * 1024 // 8


async def test_concurrent_misses_compute_once(blog: Apps) -> None:
    """100 requests for the same uncached list at once: one computation, one set of statements."""
    await _articles(blog, 5)
    d = await blog.reader()
    reads = blog.delivery_app.state.reads
    url = "/api/v1/entries/article?include=author&limit=5"
    await d.get("/api/v1/entries/article?limit=1")  # credential known, schema loaded
    statements: list[str] = []
    token = QUERY_LOG.set(statements)
    try:
        computed = reads.computed
        answers = await asyncio.gather(*(d.get(url) for _ in range(100)))
    finally:
        QUERY_LOG.reset(token)
    assert {a.status_code for a in answers} == {200} and len({a.content for a in answers}) == 1
    assert reads.computed == computed + 1
    page_queries = [s for s in statements if "published_documents" in s]
    assert len(page_queries) <= 3, page_queries  # page, count, one include level


async def test_a_purged_list_is_recomputed_once_while_readers_get_the_previous_one(blog: Apps) -> None:
    """A publish marks cached lists stale: the first reader recomputes (and waits: it sees the
    publish), readers arriving meanwhile get the previous list; entries are purged outright."""
    ids = await _articles(blog, 2)
    d = await blog.reader()
    reads = blog.delivery_app.state.reads
    cache = blog.delivery_app.state.cache
    url = "/api/v1/entries/article?limit=10"
    before = await d.get(url)
    entry = await d.get(f"/api/v1/entries/article/{ids[0]}")
    assert len(before.json()["data"]) == 2 and entry.status_code == 200
    new = (await _articles(blog, 1))[0]

    async def purged() -> None:
        item = cache.get(url)
        assert item is not None and item.stale_since is not None

    await eventually(purged)
    # hold the first recomputation until the readers that arrive meanwhile have been answered
    release = asyncio.Event()
    compute = reads._compute

    async def slow(read: Any) -> Any:
        await release.wait()
        return await compute(read)

    reads._compute = slow
    try:
        first = asyncio.create_task(d.get(url))
        await asyncio.sleep(0.05)
        meanwhile = await asyncio.gather(*(d.get(url) for _ in range(10)))
        assert all(r.content == before.content for r in meanwhile)  # stale, answered at once
        release.set()
        fresh = await first
    finally:
        reads._compute = compute
    assert [e["id"] for e in fresh.json()["data"]][0] == new
    assert (await d.get(url)).content == fresh.content  # fresh again: a hit
    # untouched single entries were never purged: still the same cached answer
    computed = reads.computed
    assert (await d.get(f"/api/v1/entries/article/{ids[0]}")).content == entry.content
    assert reads.computed == computed


async def test_a_stale_list_is_not_served_past_max_stale(blog: Apps) -> None:
    await _articles(blog, 1)
    d = await blog.reader()
    reads = blog.delivery_app.state.reads
    url = "/api/v1/entries/article"
    await d.get(url)
    item = blog.delivery_app.state.cache.get(url)
    item.stale_since = 0.0  # purged long ago
    reads._computing[url] += 1  # and someone is (said to be) recomputing it
    try:
        assert not reads.serves_stale(url, item.stale_since)
        computed = reads.computed
        assert (await d.get(url)).status_code == 200
        assert reads.computed == computed + 1  # this reader computed instead of getting the stale list
    finally:
        reads._computing[url] -= 1


async def test_no_cache_with_zero_megabytes(apps_with: Any) -> None:
    async with apps_with(CMS_DELIVERY_CACHE_MB="0") as apps:
        assert apps.delivery_app.state.cache is None
        for type_id, body in (("author", {"name": "A", "fields": [{"id": "name", "type": "text"}]}),):
            assert (await apps.management.put(f"/v1/content-types/{type_id}", json=body)).status_code == 201
        d = await apps.reader()
        reads = apps.delivery_app.state.reads
        computed = reads.computed
        for _ in range(3):
            assert (await d.get("/api/v1/entries/author")).status_code == 200
        assert reads.computed == computed + 3


async def test_misses_answered_by_the_fast_path_match_the_full_app(blog: Apps) -> None:
    """With a known credential, a miss is computed without Litestar's layers: the same bytes,
    headers and problems as the full app gives (which answers when the credential is new)."""
    await _articles(blog, 2)
    key = await blog.key("delivery")
    async with blog.client("delivery", key) as d:
        first_404 = await d.get("/api/v1/entries/article/by-slug/nope")  # the full app (credential new)
        cache = blog.delivery_app.state.cache
        fast = cache.fast_hits
        for url in ("/api/v1/entries/article/by-slug/post-0", "/api/v1/entries/article?limit=1"):
            via_fast = await d.get(url)  # a miss: computed on the fast path
            assert via_fast.status_code == 200
            again = await d.get(url)  # then a hit
            assert again.content == via_fast.content and again.headers["etag"] == via_fast.headers["etag"]
            for header in ("cache-control", "surrogate-key", "cache-tag", "content-type"):
                assert again.headers[header] == via_fast.headers[header]
        assert cache.fast_hits == fast + 2
        second_404 = await d.get("/api/v1/entries/article/by-slug/nope")
        assert second_404.status_code == first_404.status_code == 404
        assert second_404.headers["content-type"] == first_404.headers["content-type"] == "application/problem+json"
        assert {k: v for k, v in second_404.json().items() if k != "request_id"} == \
            {k: v for k, v in first_404.json().items() if k != "request_id"}
        bad = await d.get("/api/v1/entries/article", params={"limit": "0"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["parameter"] == "limit"
