"""GET /v1/audit: every write and every denied request, filtered and paged; append-only."""

from __future__ import annotations

import asyncpg
import pytest

from tests.support import eventually


async def test_the_audit_log_is_read_filtered_and_paged(apps) -> None:
    m = apps.management
    r = await m.put("/v1/content-types/note", json={"name": "Note", "fields": [{"id": "text", "type": "text"}]},
                    headers={"X-Request-Id": "trace-put-note"})
    assert r.status_code == 201
    made = (await m.post("/v1/entries/note", json={"fields": {"text": "hi"}})).json()["data"]
    assert (await m.post(f"/v1/entries/note/{made['id']}/publish")).status_code == 200
    assert (await m.get("/v1/keys", headers={"Authorization": "Bearer nope"})).status_code == 401

    async def denied_written() -> list:
        r = await m.get("/v1/audit", params={"action": "auth.denied"})
        assert r.status_code == 200, r.text
        assert r.json()["data"], "the denied request is written within a second"
        return r.json()["data"]

    denied = await eventually(denied_written, timeout=3.0)
    assert denied[0]["outcome"] == "denied" and denied[0]["target"] == "GET /v1/keys"
    assert denied[0]["actor"] == {"kind": "anonymous", "id": None, "name": None}

    everything = (await m.get("/v1/audit", params={"limit": 100})).json()
    actions = [e["action"] for e in everything["data"]]
    for action in ("content_type.save", "entry.create", "entry.publish", "auth.denied"):
        assert action in actions
    ids = [int(e["id"]) for e in everything["data"]]
    assert ids == sorted(ids)
    entry = everything["data"][0]
    assert set(entry) == {"id", "at", "actor", "action", "target", "request_id", "ip", "outcome"}
    assert entry["at"].endswith("Z")

    traced = (await m.get("/v1/audit", params={"request_id": "trace-put-note"})).json()["data"]
    assert [(e["action"], e["target"]) for e in traced] == [("content_type.save", "content_type:note")]
    mine = (await m.get("/v1/audit", params={"actor": "bootstrap", "limit": 100})).json()["data"]
    assert mine and all(e["actor"]["id"] == "bootstrap" for e in mine)
    assert (await m.get("/v1/audit", params={"actor": "someone-else"})).json()["data"] == []

    # Paging: one at a time reaches the same entries; an empty page keeps the cursor.
    seen, cursor = [], None
    for _ in range(len(ids) + 1):
        page = (await m.get("/v1/audit", params={"limit": 1, **({"cursor": cursor} if cursor else {})})).json()
        if not page["data"]:
            assert page["meta"]["next_cursor"] == cursor
            break
        seen += [int(e["id"]) for e in page["data"]]
        cursor = page["meta"]["next_cursor"]
    assert seen[: len(ids)] == ids

    for params in ({"after": "x"}, {"after": "0"}, {"cursor": "1", "after": "2"}, {"limit": "0"},
                   {"outcome": "maybe"}, {"request_id": "bad id"}, {"actor": "a" * 65}, {"after": "9" * 19}):
        r = await m.get("/v1/audit", params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_reading_the_audit_log_needs_audit_read_and_nothing_changes_it(apps) -> None:
    reader = apps.client("management", await apps.key("management", scopes=["content:read"]))
    auditor = apps.client("management", await apps.key("management", scopes=["audit:read"]))
    async with reader, auditor:
        assert (await reader.get("/v1/audit")).status_code == 403
        assert (await auditor.get("/v1/audit")).status_code == 200
        for method in ("post", "put", "patch", "delete"):
            assert (await getattr(auditor, method)("/v1/audit")).status_code == 405
    conn = await asyncpg.connect(apps.database_url)
    try:
        for statement in ("UPDATE audit_log SET outcome = 'success'", "DELETE FROM audit_log"):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(statement)
    finally:
        await conn.close()
