"""GET /api/v1/sync: initial pages over every published entry, then deltas from the saved cursor."""

from __future__ import annotations

import base64
import json
from typing import Any

from cms.app.audit.service import WriteContext
from cms.app.credentials.schemas import SYSTEM
from cms.app.db.pool import connect, create_pool
from cms.app.entries import service
from tests.support import eventually

# The test cluster is shared: a transaction open elsewhere delays visibility of new events.
WAIT = 15.0


async def _publish_many(apps: Any, n: int, prefix: str = "Post") -> list[str]:
    """n published articles, written through the service on one connection (fast)."""
    ctx = WriteContext(SYSTEM, None, None)
    conn = await connect(apps.database_url)
    ids = []
    try:
        for i in range(n):
            entry, _ = await service.create_entry(
                conn, "article", None, None, {"fields": {"title": f"{prefix} {i}", "rank": i}}, ctx
            )
            await service.publish_entry(conn, "article", entry["id"], ctx, apps.settings.assets_url, None)
            ids.append(entry["id"])
    finally:
        await conn.close()
    return ids


async def _feed_caught_up(apps: Any) -> None:
    """Wait until the last event written so far is visible, so a sync starting now comes after it."""
    conn = await connect(apps.database_url)
    try:
        last = await conn.fetchval("SELECT id FROM outbox_events ORDER BY seq DESC LIMIT 1")
    finally:
        await conn.close()

    async def visible() -> None:
        after = None
        while True:
            params = {"limit": 100, **({"after": after} if after else {})}
            page = (await apps.management.get("/v1/events", params=params)).json()
            ids = [e["id"] for e in page["data"]]
            if last in ids:
                return
            assert ids, "the last event is not visible yet"
            after = page["meta"]["next_cursor"]

    if last is not None:
        await eventually(visible, WAIT)


async def _sync_all(d: Any, **params: Any) -> tuple[list[dict[str, Any]], str, list[int]]:
    """Follow next_cursor until has_more is false; returns items, the cursor to keep, page sizes."""
    items: list[dict[str, Any]] = []
    sizes = []
    r = await d.get("/api/v1/sync", params=params)
    while True:
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        assert set(body["meta"]) >= {"next_cursor", "has_more"}
        items.extend(body["data"])
        sizes.append(len(body["data"]))
        if not body["meta"]["has_more"]:
            return items, body["meta"]["next_cursor"], sizes
        limit = {"limit": params["limit"]} if "limit" in params else {}
        r = await d.get("/api/v1/sync", params={"cursor": body["meta"]["next_cursor"], **limit})


async def test_initial_sync_then_deltas(blog) -> None:
    m = blog.management
    published = await _publish_many(blog, 230)
    # Drafts never appear: never published, or published with newer draft changes (published state shown).
    drafts = [(await m.post("/v1/entries/article", json={"fields": {"title": f"Draft {i}"}})).json()["data"]["id"]
              for i in range(3)]
    r = await m.patch(f"/v1/entries/article/{published[5]}", json={"fields": {"title": "Unpublished change"}})
    assert r.status_code == 200
    author = (await m.post("/v1/entries/author", json={"fields": {"name": "Ada"}})).json()["data"]["id"]
    await m.post(f"/v1/entries/author/{author}/publish")
    await _feed_caught_up(blog)

    d = await blog.reader()
    items, cursor, sizes = await _sync_all(d, type="article", locale="en")
    assert sizes == [100, 100, 30]
    ids = [i["entry"]["id"] for i in items]
    assert len(ids) == len(set(ids)) == 230 and set(ids) == set(published)
    assert all(i["op"] == "upsert" and set(i) == {"op", "entry"} for i in items)
    assert not set(drafts) & set(ids) and author not in ids
    by_id = {i["entry"]["id"]: i["entry"] for i in items}
    assert by_id[published[5]]["fields"]["title"] == "Post 5"
    # The entries are the delivery ENTRY documents, byte for byte the same content.
    single = await d.get(f"/api/v1/entries/article/{published[7]}")
    assert single.json()["data"] == by_id[published[7]]

    # Nothing changed yet: the saved cursor answers nothing new.
    r = await d.get("/api/v1/sync", params={"cursor": cursor})
    assert r.status_code == 200 and r.json()["data"] == [] and r.json()["meta"]["has_more"] is False

    # One new, one changed and republished, one unpublished, one deleted (force); drafts don't count.
    new_id = (await m.post("/v1/entries/article", json={"fields": {"title": "Brand new"}})).json()["data"]["id"]
    assert (await m.post(f"/v1/entries/article/{new_id}/publish")).status_code == 200
    changed, unpublished, deleted = published[10], published[20], published[30]
    await m.patch(f"/v1/entries/article/{changed}", json={"fields": {"title": "Changed"}})
    assert (await m.post(f"/v1/entries/article/{changed}/publish")).status_code == 200
    assert (await m.post(f"/v1/entries/article/{unpublished}/unpublish")).status_code == 200
    assert (await m.delete(f"/v1/entries/article/{deleted}", params={"force": "true"})).status_code == 204
    await m.patch(f"/v1/entries/article/{drafts[0]}", json={"fields": {"title": "Still a draft"}})
    await m.post("/v1/entries/article", json={"fields": {"title": "Another draft"}})
    await m.post(f"/v1/entries/author/{author}/unpublish")

    async def four() -> dict[str, Any]:
        r = await d.get("/api/v1/sync", params={"cursor": cursor})
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        assert len(r.json()["data"]) == 4
        return r.json()

    delta = await eventually(four, WAIT)
    assert delta["meta"]["has_more"] is False
    ops = {(i["entry"]["id"] if i["op"] == "upsert" else i["id"]): i for i in delta["data"]}
    assert set(ops) == {new_id, changed, unpublished, deleted}
    assert ops[new_id]["op"] == "upsert" and ops[new_id]["entry"]["fields"]["title"] == "Brand new"
    assert ops[new_id]["entry"]["version"] == 1 and ops[new_id]["entry"]["locale"] == "en"
    assert ops[changed]["op"] == "upsert" and ops[changed]["entry"]["fields"]["title"] == "Changed"
    assert ops[changed]["entry"]["version"] == 2
    assert ops[changed]["entry"] == (await d.get(f"/api/v1/entries/article/{changed}")).json()["data"]
    assert ops[unpublished] == {"op": "delete", "id": unpublished, "type": "article"}
    assert ops[deleted] == {"op": "delete", "id": deleted, "type": "article"}

    # The same delta in pages of 3: has_more until the last one, each entry once.
    first = (await d.get("/api/v1/sync", params={"cursor": cursor, "limit": 3})).json()
    assert len(first["data"]) == 3 and first["meta"]["has_more"] is True
    second = (await d.get("/api/v1/sync", params={"cursor": first["meta"]["next_cursor"], "limit": 3})).json()
    assert second["meta"]["has_more"] is False
    paged = [i.get("id") or i["entry"]["id"] for i in first["data"] + second["data"]]
    assert sorted(paged) == sorted(ops)

    # With the new cursor: nothing new, and still nothing later.
    again = await d.get("/api/v1/sync", params={"cursor": delta["meta"]["next_cursor"]})
    assert again.status_code == 200
    assert again.json()["data"] == [] and again.json()["meta"]["has_more"] is False
    after_pages = await d.get("/api/v1/sync", params={"cursor": second["meta"]["next_cursor"]})
    assert after_pages.json()["data"] == []


async def test_changes_during_initial_pages_come_again_and_locale_is_remembered(blog) -> None:
    m = blog.management
    assert (await m.put("/v1/locales/de", json={"name": "Deutsch", "fallback": "en"})).status_code == 201
    ids = await _publish_many(blog, 5)
    await _feed_caught_up(blog)
    d = await blog.reader()

    r = await d.get("/api/v1/sync", params={"type": "article", "locale": "de", "limit": 2})
    page = r.json()
    assert [i["entry"]["locale"] for i in page["data"]] == ["de", "de"] and page["meta"]["has_more"] is True
    seen = [i["entry"]["id"] for i in page["data"]]
    # Changed while the initial pages are being read: it will simply come again in the first delta.
    await m.patch(f"/v1/entries/article/{ids[0]}", json={"fields": {"title": "Neu"}}, params={"locale": "de"})
    assert (await m.post(f"/v1/entries/article/{ids[0]}/publish")).status_code == 200
    cursor = page["meta"]["next_cursor"]
    # type and locale may be omitted with a cursor, or repeated if they match.
    r = await d.get("/api/v1/sync", params={"cursor": cursor, "type": "article", "locale": "de", "limit": 2})
    assert r.status_code == 200
    while True:
        page = r.json()
        seen += [i["entry"]["id"] for i in page["data"]]
        assert all(i["entry"]["locale"] == "de" for i in page["data"])
        if not page["meta"]["has_more"]:
            break
        r = await d.get("/api/v1/sync", params={"cursor": page["meta"]["next_cursor"], "limit": 2})
    assert sorted(seen) == sorted(ids)
    cursor = page["meta"]["next_cursor"]

    async def republished() -> dict[str, Any]:
        delta = (await d.get("/api/v1/sync", params={"cursor": cursor})).json()
        assert [i["entry"]["id"] for i in delta["data"]] == [ids[0]]
        return delta

    delta = await eventually(republished, WAIT)
    assert delta["data"][0]["entry"]["fields"]["title"] == "Neu"
    assert delta["data"][0]["entry"]["locale"] == "de"

    # The cursor remembers its locale and type.
    r = await d.get("/api/v1/sync", params={"cursor": cursor, "locale": "en"})
    assert r.status_code == 400 and r.json()["errors"][0]["parameter"] == "cursor"


async def test_empty_type_and_errors(blog) -> None:
    d = blog.delivery
    r = await d.get("/api/v1/sync", params={"type": "article"})
    assert r.status_code == 401
    d = await blog.reader()
    r = await d.get("/api/v1/sync", params={"type": "article"})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert r.json()["data"] == [] and r.json()["meta"]["has_more"] is False
    article_cursor = r.json()["meta"]["next_cursor"]

    async def problem(params: dict[str, Any], status: int, parameter: str | None) -> None:
        r = await d.get("/api/v1/sync", params=params)
        assert r.status_code == status, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        if parameter is not None:
            assert r.json()["errors"][0]["parameter"] == parameter, params

    await problem({}, 400, "type")
    await problem({"type": ""}, 400, "type")
    await problem({"type": "Not A Type"}, 400, "type")
    await problem({"type": "nope"}, 404, None)
    await problem({"type": "article", "locale": "xx"}, 400, "locale")
    for limit in ("0", "101", "many"):
        await problem({"type": "article", "limit": limit}, 400, "limit")
    # A cursor made for one type, used with another.
    await problem({"cursor": article_cursor, "type": "author"}, 400, "cursor")
    raw = json.loads(base64.urlsafe_b64decode(article_cursor + "=" * (-len(article_cursor) % 4)))
    assert raw["type"] == "article"

    def b64(value: Any) -> str:
        text = value if isinstance(value, bytes) else json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(text).rstrip(b"=").decode()

    garbage = [
        "", "garbage", "!!!!", article_cursor + "=", article_cursor[:-2], "x" * 2000, b64(b"not json"), b64([1, 2]),
        b64({**raw, "v": 2}), b64({**raw, "mode": "other"}), b64({**raw, "txid": -1}), b64({**raw, "seq": "1"}),
        b64({**raw, "type": "Bad Type"}), b64({**raw, "locale": "?"}), b64({**raw, "extra": 1}),
        b64({**raw, "after": "x"}),  # a delta cursor carries no entry id
        b64({k: v for k, v in raw.items() if k != "txid"}),
        b64({**raw, "txid": 2**64}),
    ]
    for text in garbage:
        await problem({"cursor": text}, 400, "cursor")
    # Still fine afterwards, and the same cursor with matching type works.
    assert (await d.get("/api/v1/sync", params={"cursor": article_cursor, "type": "article"})).status_code == 200
    # A delivery key limited to other content types may not sync this one.
    limited = await blog.key("delivery", content_types=["author"])
    r = await blog.delivery.get("/api/v1/sync", params={"type": "article"}, headers={"Authorization": f"Bearer {limited}"})
    assert r.status_code == 403


async def test_pruned_history_answers_410_and_new_readers_start_after_it(blog) -> None:
    """CMS_OUTBOX_RETENTION_DAYS: the worker prunes old events (a prefix of the feed). A sync cursor
    or an events cursor from before the cut cannot be served without missing changes: 410 gone."""
    from cms.app.config import PipelineConfig
    from cms.workers.relay import Sweeper

    m = blog.management
    old = await _publish_many(blog, 3, prefix="Old")
    await _feed_caught_up(blog)
    d = await blog.reader()
    _, sync_cursor, _ = await _sync_all(d, type="article", locale="en")
    _, author_cursor, _ = await _sync_all(d, type="author", locale="en")  # a type nothing happens to
    first_event = (await m.get("/v1/events", params={"limit": 1})).json()["data"][0]["id"]
    mid = await _publish_many(blog, 2, prefix="Mid")  # after the cursor, and pruned below
    await _feed_caught_up(blog)
    # A client polling the quiet type keeps up with the feed: its cursor moves to the head.
    r = await d.get("/api/v1/sync", params={"cursor": author_cursor})
    assert r.status_code == 200 and r.json()["data"] == []
    author_cursor = r.json()["meta"]["next_cursor"]
    conn = await connect(blog.database_url)
    try:
        last_old = await conn.fetchval("SELECT id FROM outbox_events ORDER BY txid DESC, seq DESC LIMIT 1")
        # Age everything written so far past the retention, as if relayed and delivered long ago.
        await conn.execute("UPDATE outbox_events SET relayed_at = now(), created_at = now() - interval '40 days'")
        kept = await _publish_many(blog, 2, prefix="New")  # younger: stays, and so does all after it
        await _feed_caught_up(blog)
        before = await conn.fetchval("SELECT count(*) FROM outbox_events")
        # Another pruner's turn: this one skips the round at once instead of waiting for its locks.
        from cms.app.db import locks
        from cms.app.events import feed

        other = await connect(blog.database_url)
        try:
            async with other.transaction():
                await other.execute("SELECT pg_advisory_xact_lock($1)", locks.OUTBOX_PRUNE)
                assert await feed.prune(conn, 30 * 86400) == 0
        finally:
            await other.close()
        assert await conn.fetchval("SELECT count(*) FROM outbox_events") == before
        sweeper = Sweeper(blog.database_url, None, PipelineConfig(retention_days=30))  # type: ignore[arg-type]
        sweeper.pool = await create_pool(blog.database_url, max_size=2)
        try:
            pruned = await sweeper.prune_once()
            again = await sweeper.prune_once()
        finally:
            await sweeper.pool.close()
        assert pruned > 0 and await conn.fetchval("SELECT count(*) FROM outbox_events") == before - pruned
        assert await conn.fetchval("SELECT count(*) FROM outbox_events WHERE created_at < now() - interval '30 days'") == 0
        assert again == 0  # nothing more is old enough
        row = await conn.fetchrow("SELECT events, created_at FROM outbox_pruned")
        assert row["events"] == pruned and row["created_at"] is not None
    finally:
        await conn.close()

    # The saved sync cursor sits before the cut (the Mid events are gone): deltas would miss them,
    # so 410 and a clear problem.
    r = await d.get("/api/v1/sync", params={"cursor": sync_cursor})
    assert r.status_code == 410 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == "urn:cms:problem:gone" and "start a new sync" in r.json()["detail"]
    # ...and so does an events cursor naming a pruned event; a made-up id is still a 400.
    r = await m.get("/v1/events", params={"after": first_event})
    assert r.status_code == 410 and "pruned" in r.json()["detail"]
    # A poller that had read everything up to the cut (its cursor is the last pruned event) missed
    # nothing: it goes on with what came after. So does the quiet type's sync client.
    r = await m.get("/v1/events", params={"after": last_old, "limit": 100})
    assert r.status_code == 200 and r.json()["data"] and first_event not in [e["id"] for e in r.json()["data"]]
    r = await d.get("/api/v1/sync", params={"cursor": author_cursor})
    assert r.status_code == 200 and r.json()["data"] == [], r.text
    assert (await m.get("/v1/events", params={"after": "01ZZZZZZZZZZZZZZZZZZZZZZZZ"})).status_code == 400
    # A new reader starts after the cut and sees everything still published.
    items, cursor, _ = await _sync_all(d, type="article", locale="en")
    assert {i["entry"]["id"] for i in items} == {*old, *mid, *kept}
    r = await d.get("/api/v1/sync", params={"cursor": cursor})
    assert r.status_code == 200 and r.json()["data"] == []
    events = (await m.get("/v1/events", params={"limit": 100})).json()["data"]
    assert first_event not in [e["id"] for e in events] and events


async def test_a_schema_change_sends_every_entry_again_then_deltas_go_on(blog) -> None:
    from tests.support import ARTICLE

    m = blog.management
    ids = await _publish_many(blog, 5)
    await _feed_caught_up(blog)
    d = await blog.reader()
    _, cursor, _ = await _sync_all(d, type="article", locale="en")

    # Before the schema change: one entry changes. The change: `rank` removed (every stored document
    # is re-rendered without it). After it: one entry is unpublished.
    await m.patch(f"/v1/entries/article/{ids[0]}", json={"fields": {"title": "Before"}})
    assert (await m.post(f"/v1/entries/article/{ids[0]}/publish")).status_code == 200
    body = {**ARTICLE, "fields": [f for f in ARTICLE["fields"] if f["id"] != "rank"]}
    assert (await m.put("/v1/content-types/article", json=body)).status_code == 200
    assert (await m.post(f"/v1/entries/article/{ids[1]}/unpublish")).status_code == 200
    await _feed_caught_up(blog)

    items, cursor, sizes = await _sync_all(d, cursor=cursor, limit=2)
    # first what changed before the schema change, alone on its page...
    assert sizes[0] == 1 and items[0]["op"] == "upsert" and items[0]["entry"]["id"] == ids[0]
    assert items[0]["entry"]["fields"]["title"] == "Before"
    # ...then every published entry again, in pages, as stored now (without `rank`)
    repass = items[1:]
    assert sizes[1:] == [2, 2]
    assert all(i["op"] == "upsert" and "rank" not in i["entry"]["fields"] for i in repass)
    assert {i["entry"]["id"] for i in repass} == {ids[0], *ids[2:]}
    # and the deltas go on from the schema change: the unpublish after it is not lost
    r = await d.get("/api/v1/sync", params={"cursor": cursor})
    assert r.status_code == 200
    assert r.json()["data"] == [{"op": "delete", "id": ids[1], "type": "article"}]
    assert r.json()["meta"]["has_more"] is False
    r = await d.get("/api/v1/sync", params={"cursor": r.json()["meta"]["next_cursor"]})
    assert r.json()["data"] == []
