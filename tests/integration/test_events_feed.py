"""GET /v1/events: the outbox as a commit-safe feed (nothing skipped, nothing twice)."""

from __future__ import annotations

from typing import Any

from cms.app.db.pool import connect
from cms.app.events.outbox import emit
from tests.support import eventually

# Other databases share the test cluster and a transaction open anywhere holds the feed back:
# wait for visibility rather than assume it.
WAIT = 15.0


async def _all_events(m: Any, **params: Any) -> list[dict[str, Any]]:
    r = await m.get("/v1/events", params={"limit": 100, **params})
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def _page_through(m: Any, limit: int, after: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    seen: list[dict[str, Any]] = []
    while True:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        r = await m.get("/v1/events", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["meta"]["limit"] == limit
        assert len(body["data"]) <= limit
        if not body["data"]:
            assert body["meta"]["next_cursor"] == after  # always somewhere to continue from
            return seen, after
        assert body["meta"]["next_cursor"] == body["data"][-1]["id"]
        seen.extend(body["data"])
        after = body["meta"]["next_cursor"]


async def test_feed_shape_order_and_paging(blog) -> None:
    m = blog.management
    ids = []
    for i in range(4):
        r = await m.post("/v1/entries/author", json={"fields": {"name": f"A{i}"}})
        ids.append(r.json()["data"]["id"])
    assert (await m.post(f"/v1/entries/author/{ids[0]}/publish")).status_code == 200
    await m.patch(f"/v1/entries/author/{ids[1]}", json={"fields": {"name": "B"}})
    await m.delete(f"/v1/entries/author/{ids[2]}")
    expected = (
        ["content_type.saved"] * 3 + ["entry.created"] * 4 + ["entry.published", "entry.updated", "entry.deleted"]
    )

    async def everything() -> list[dict[str, Any]]:
        events = await _all_events(m)
        assert [e["type"] for e in events] == expected
        return events

    events = await eventually(everything, WAIT)
    assert [e["data"]["id"] for e in events[:3]] == ["author", "tag", "article"]
    created = events[3]
    assert set(created) == {"id", "type", "created_at", "data"}
    assert created["data"] == {"id": ids[0], "type": "author", "version": 1, "locales": ["en"]}
    assert created["created_at"].endswith("Z")
    assert events[7]["data"]["id"] == ids[0] and events[7]["data"]["version"] == 1
    assert len({e["id"] for e in events}) == len(events)

    # Default limit 20; paging by next_cursor returns each event exactly once, in the same order.
    r = await m.get("/v1/events")
    assert r.json()["meta"] == {"limit": 20, "next_cursor": events[-1]["id"]}
    for limit in (1, 3, 4):
        paged, last = await _page_through(m, limit)
        assert [e["id"] for e in paged] == [e["id"] for e in events]
        assert last == events[-1]["id"]
    # `after` is exclusive; `cursor` is the same thing under the common name.
    tail = await _all_events(m, after=events[5]["id"])
    assert [e["id"] for e in tail] == [e["id"] for e in events[6:]]
    assert [e["id"] for e in await _all_events(m, cursor=events[5]["id"])] == [e["id"] for e in events[6:]]

    # A poller at the end sees only what comes next.
    await m.post("/v1/entries/tag", json={"fields": {"label": "x"}})

    async def next_one() -> None:
        more, last = await _page_through(m, 5, after=events[-1]["id"])
        assert [e["type"] for e in more] == ["entry.created"]

    await eventually(next_one, WAIT)


async def test_a_slow_transaction_is_never_skipped(apps) -> None:
    """seq order is not commit order: A takes seq n, B takes n+1 and commits first."""
    m = apps.management
    conn_a = await connect(apps.database_url)
    conn_b = await connect(apps.database_url)
    try:
        await emit(conn_b, "test.before", {"n": 0})
        before = await eventually(lambda: _last_is(m, "test.before"), WAIT)
        cursor = before["id"]

        # (An early failure leaves A open: closing conn_a in `finally` rolls it back.)
        tx_a = conn_a.transaction()
        await tx_a.start()
        id_a = await emit(conn_a, "test.a", {"n": 1})
        seq_a = await conn_a.fetchval("SELECT seq FROM outbox_events WHERE id = $1", id_a)
        async with conn_b.transaction():
            id_b = await emit(conn_b, "test.b", {"n": 2})
        seq_b = await conn_b.fetchval("SELECT seq FROM outbox_events WHERE id = $1", id_b)
        assert seq_a < seq_b
        # What a reader paging by seq would do: it sees B now, moves past A's seq, never sees A.
        naive = await conn_b.fetch("SELECT id FROM outbox_events WHERE seq >= $1 ORDER BY seq", seq_a)
        assert [r["id"] for r in naive] == [id_b]

        # The feed holds B back while A (an older transaction) is still open.
        r = await m.get("/v1/events", params={"after": cursor})
        assert r.status_code == 200
        assert r.json()["data"] == [] and r.json()["meta"]["next_cursor"] == cursor
        assert id_b not in [e["id"] for e in await _all_events(m)]
        await tx_a.commit()

        # The poller continues from its cursor and gets both, A first, each once.
        async def both() -> list[dict[str, Any]]:
            seen, _ = await _page_through(m, 1, after=cursor)
            assert [e["id"] for e in seen] == [id_a, id_b]
            return seen

        seen = await eventually(both, WAIT)
        assert [e["type"] for e in seen] == ["test.a", "test.b"]
        assert seen[0]["data"] == {"n": 1}
    finally:
        await conn_a.close()
        await conn_b.close()


async def test_feed_orders_by_transaction_not_seq(apps) -> None:
    """A has the older transaction but writes its event after B: the feed puts A first."""
    m = apps.management
    conn_a = await connect(apps.database_url)
    conn_b = await connect(apps.database_url)
    try:
        tx_a = conn_a.transaction()
        await tx_a.start()
        await conn_a.execute("SELECT pg_current_xact_id()")  # A's transaction id comes first
        async with conn_b.transaction():
            id_b = await emit(conn_b, "test.b", {})
        id_a = await emit(conn_a, "test.a", {})
        assert await _all_events(m) == []
        await tx_a.commit()

        async def both() -> None:
            assert [e["id"] for e in await _all_events(m)] == [id_a, id_b]

        await eventually(both, WAIT)
    finally:
        await conn_a.close()
        await conn_b.close()


async def _last_is(m: Any, event_type: str) -> dict[str, Any]:
    events = await _all_events(m)
    assert events and events[-1]["type"] == event_type
    return events[-1]


async def test_validation(apps) -> None:
    m = apps.management
    conn = await connect(apps.database_url)
    try:
        known = await emit(conn, "test.x", {})
    finally:
        await conn.close()
    cases = [
        ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "ten"}, "limit"),
        ({"limit": "-1"}, "limit"), ({"after": "not an id!"}, "after"), ({"after": ""}, "after"),
        ({"after": "01J0000000000000000000000Z"}, "after"), ({"after": "x" * 65}, "after"),
        ({"cursor": "nope"}, "cursor"), ({"after": known, "cursor": "other"}, "cursor"),
    ]
    for params, parameter in cases:
        r = await m.get("/v1/events", params=params)
        assert r.status_code == 400, (params, r.text)
        problem = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert problem["type"] == "urn:cms:problem:malformed"
        assert problem["errors"][0]["parameter"] == parameter, params
    ok = await m.get("/v1/events", params={"after": known, "limit": "100"})
    assert ok.status_code == 200 and ok.json()["meta"]["limit"] == 100


async def test_scope_and_credentials(blog) -> None:
    m = blog.management
    writer = await blog.key("management", scopes=["content:write"])
    reader = await blog.key("management", scopes=["content:read"])
    r = await m.get("/v1/events", headers={"Authorization": f"Bearer {writer}"})
    assert r.status_code == 403 and r.json()["type"] == "urn:cms:problem:forbidden"
    assert (await m.get("/v1/events", headers={"Authorization": f"Bearer {reader}"})).status_code == 200
    delivery = await blog.key("delivery")
    assert (await m.get("/v1/events", headers={"Authorization": f"Bearer {delivery}"})).status_code == 401
    assert (await m.get("/v1/events", headers={"Authorization": ""})).status_code == 401


async def test_type_limited_key_sees_only_its_types(blog) -> None:
    m = blog.management
    author = (await m.post("/v1/entries/author", json={"fields": {"name": "Ada"}})).json()["data"]["id"]
    await m.post("/v1/entries/article", json={"fields": {"title": "Hidden"}})
    conn = await connect(blog.database_url)
    try:
        await emit(conn, "asset.created", {"id": "as1"})
    finally:
        await conn.close()
    key = await blog.key("management", scopes=["content:read"], content_types=["author"])

    async def limited() -> None:
        r = await m.get("/v1/events", params={"limit": 100}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        seen = [(e["type"], e["data"]["id"]) for e in r.json()["data"]]
        assert seen == [("content_type.saved", "author"), ("entry.created", author), ("asset.created", "as1")]

    await eventually(limited, WAIT)


async def test_feed_orders_transaction_ids_numerically(apps) -> None:
    """Transaction ids compared as text put 10 before 9 and made pollers skip events: numbers only."""
    from cms.app.db.pool import connect
    from cms.app.events import feed

    conn = await connect(apps.database_url)
    try:
        await conn.execute("DELETE FROM outbox_events")
        # Old, finished transaction ids whose text order ("10" < "9") differs from their number order.
        for txid, seq in ((9, 1), (10, 2), (100, 3)):
            await conn.execute(
                "INSERT INTO outbox_events (id, seq, type, payload, txid) VALUES ($1, $2, 'x.y', '{}', $3::text::xid8)",
                f"ev{txid}", seq, str(txid),
            )
        start = feed.Position(0, 0)
        assert [r["id"] for r in await feed.read(conn, start, 10)] == ["ev9", "ev10", "ev100"]
        after_first = await feed.position_of(conn, "ev9")
        assert after_first is not None and after_first.txid == 9
        assert [r["id"] for r in await feed.read(conn, after_first, 1)] == ["ev10"]
        assert (await feed.head(conn)).txid >= 100
    finally:
        await conn.close()
