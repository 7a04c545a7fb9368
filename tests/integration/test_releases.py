"""Releases: CRUD, all-or-nothing publish, preconditions and scopes."""

from __future__ import annotations

import json

import asyncpg
import httpx


async def _rows(apps, sql: str, *args) -> list:
    conn = await asyncpg.connect(apps.database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _article(m, entry_id: str, **fields) -> None:
    r = await m.put(f"/v1/entries/article/{entry_id}", json={"fields": {"title": f"T {entry_id}", **fields}})
    assert r.status_code == 201, r.text


async def _client(apps, **key) -> httpx.AsyncClient:
    secret = await apps.key("management", **key)
    return apps.client("management", secret)


async def test_create_get_list_put_delete(blog) -> None:
    m = blog.management
    for entry_id in ("e1", "e2", "e3"):
        await _article(m, entry_id)
    r = await m.post("/v1/releases", json={"title": "Spring", "entries": [
        {"type": "article", "id": "e1"}, {"type": "article", "id": "e2"},
    ]})
    assert r.status_code == 201, r.text
    release = r.json()["data"]
    assert release["status"] == "open" and release["version"] == 1 and release["published_at"] is None
    assert release["entries"] == [{"type": "article", "id": "e1"}, {"type": "article", "id": "e2"}]
    assert release["created_at"].endswith("Z") and release["updated_at"].endswith("Z")
    assert r.headers["etag"] == '"1"' and r.headers["location"] == f"/v1/releases/{release['id']}"
    rid = release["id"]

    r = await m.get(f"/v1/releases/{rid}")
    assert r.status_code == 200 and r.json()["data"] == release and r.headers["etag"] == '"1"'

    r = await m.put(f"/v1/releases/{rid}", json={"title": "Spring 2", "entries": [
        {"type": "article", "id": "e3"}, {"type": "article", "id": "e1"},
    ]}, headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["title"] == "Spring 2" and data["version"] == 2 and r.headers["etag"] == '"2"'
    assert data["entries"] == [{"type": "article", "id": "e3"}, {"type": "article", "id": "e1"}]

    ids = [rid]
    for i in range(4):
        ids.append((await m.post("/v1/releases", json={"title": f"R{i}", "entries": []})).json()["data"]["id"])
    r = await m.get("/v1/releases", params={"limit": 3})
    page = r.json()
    assert page["meta"]["total"] == 5 and page["meta"]["limit"] == 3 and len(page["data"]) == 3
    r = await m.get("/v1/releases", params={"limit": 3, "cursor": page["meta"]["next_cursor"]})
    rest = r.json()
    assert rest["meta"]["next_cursor"] is None
    assert [x["id"] for x in page["data"] + rest["data"]] == sorted(ids)
    assert (await m.get("/v1/releases", params={"cursor": "not a cursor"})).status_code == 400

    assert (await m.delete(f"/v1/releases/{rid}")).status_code == 204
    assert (await m.get(f"/v1/releases/{rid}")).status_code == 404
    assert (await m.delete(f"/v1/releases/{rid}")).status_code == 404
    assert (await m.put(f"/v1/releases/{rid}", json={"title": "x", "entries": []})).status_code == 404
    assert not await _rows(blog, "SELECT 1 FROM release_entries WHERE release_id = $1", rid)
    actions = [r["action"] for r in await _rows(blog, "SELECT action FROM audit_log WHERE action LIKE 'release.%'")]
    assert actions.count("release.create") == 5 and "release.update" in actions and "release.delete" in actions


async def test_validation(blog) -> None:
    m = blog.management
    await _article(m, "e1")
    r = await m.post("/v1/releases", json={"title": "", "entries": [
        {"type": "article", "id": "e1"}, {"type": "Bad!", "id": "x"}, {"type": "article", "id": "e1"}, 7,
        {"type": "article", "id": "nope"}, {"type": "article"},
    ], "colour": "red"})
    assert r.status_code == 422
    assert {e["pointer"] for e in r.json()["errors"]} == {
        "/title", "/entries/1/type", "/entries/2/id", "/entries/3", "/entries/5/id", "/colour",
    }
    # Entries must exist (with that type) when they are added.
    await _article(m, "e2")
    r = await m.post("/v1/releases", json={"title": "x", "entries": [
        {"type": "article", "id": "e1"}, {"type": "article", "id": "nope"}, {"type": "author", "id": "e2"},
    ]})
    assert r.status_code == 422
    assert [e["pointer"] for e in r.json()["errors"]] == ["/entries/1", "/entries/2"]
    assert (await m.post("/v1/releases", json={"title": "x", "entries": {}})).status_code == 422
    assert (await m.post("/v1/releases", json=[])).status_code == 422
    assert not await _rows(blog, "SELECT 1 FROM releases")


async def test_publish_is_all_at_once(blog) -> None:
    m = blog.management
    await m.put("/v1/entries/author/au", json={"fields": {"name": "Ada"}})
    await _article(m, "e1", author={"id": "au", "type": "author"})
    await _article(m, "e2")
    entries = [{"type": "author", "id": "au"}, {"type": "article", "id": "e1"}, {"type": "article", "id": "e2"}]
    rid = (await m.post("/v1/releases", json={"title": "Launch", "entries": entries})).json()["data"]["id"]
    r = await m.post(f"/v1/releases/{rid}/publish", headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["status"] == "published" and data["published_at"].endswith("Z") and data["version"] == 2
    assert r.headers["etag"] == '"2"'
    for entry in entries:
        got = (await m.get(f"/v1/entries/{entry['type']}/{entry['id']}")).json()["data"]
        assert got["status"] == "published"
    reader = await blog.reader()
    assert (await reader.get("/api/v1/entries/article/e1")).status_code == 200

    events = await _rows(blog, "SELECT type, payload, txid FROM outbox_events ORDER BY seq")
    published = [e for e in events if e["type"] == "entry.published"]
    assert sorted(json.loads(e["payload"])["id"] for e in published) == ["au", "e1", "e2"]
    release_events = [e for e in events if e["type"] == "release.published"]
    assert len(release_events) == 1
    assert json.loads(release_events[0]["payload"]) == {"id": rid, "entries": entries}
    # One transaction: the entry events and the release event share a transaction id.
    assert len({e["txid"] for e in published + release_events}) == 1

    # Published: no more changes, no second publish.
    assert (await m.put(f"/v1/releases/{rid}", json={"title": "x", "entries": []})).status_code == 409
    assert (await m.post(f"/v1/releases/{rid}/publish")).status_code == 409
    audit = await _rows(blog, "SELECT actor FROM audit_log WHERE action = 'release.publish'")
    assert len(audit) == 1


async def test_one_invalid_entry_publishes_nothing(blog) -> None:
    m = blog.management
    await _article(m, "ok1")
    r = await m.put("/v1/entries/article/bad", json={"fields": {"rank": 1}})  # no title: cannot be published
    assert r.status_code == 201
    await _article(m, "ok2")
    await _article(m, "gone")
    entries = [{"type": "article", "id": i} for i in ("ok1", "bad", "ok2", "gone")]
    rid = (await m.post("/v1/releases", json={"title": "Broken", "entries": entries})).json()["data"]["id"]
    assert (await m.delete("/v1/entries/article/gone")).status_code == 204
    before = len(await _rows(blog, "SELECT 1 FROM outbox_events"))

    r = await m.post(f"/v1/releases/{rid}/publish")
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"] == "urn:cms:problem:validation"
    assert [e["pointer"] for e in problem["errors"]] == ["/entries/1", "/entries/3"]
    assert "title" in problem["errors"][0]["detail"]
    assert not await _rows(blog, "SELECT 1 FROM entries WHERE published_version IS NOT NULL")
    assert not await _rows(blog, "SELECT 1 FROM published_documents")
    assert len(await _rows(blog, "SELECT 1 FROM outbox_events")) == before
    assert (await m.get(f"/v1/releases/{rid}")).json()["data"]["status"] == "open"


async def test_if_match(blog) -> None:
    m = blog.management
    await _article(m, "e1")
    rid = (await m.post("/v1/releases", json={"title": "R", "entries": [{"type": "article", "id": "e1"}]})).json()["data"]["id"]
    stale = {"If-Match": '"7"'}
    assert (await m.put(f"/v1/releases/{rid}", json={"title": "R2", "entries": []}, headers=stale)).status_code == 412
    assert (await m.post(f"/v1/releases/{rid}/publish", headers=stale)).status_code == 412
    assert (await m.delete(f"/v1/releases/{rid}", headers=stale)).status_code == 412
    release = (await m.get(f"/v1/releases/{rid}")).json()["data"]
    assert release["title"] == "R" and release["status"] == "open" and release["version"] == 1
    assert (await m.get("/v1/entries/article/e1")).json()["data"]["status"] == "draft"
    assert (await m.delete(f"/v1/releases/{rid}", headers={"If-Match": '"1"'})).status_code == 204


async def test_scopes(blog) -> None:
    m = blog.management
    await _article(m, "e1")
    rid = (await m.post("/v1/releases", json={"title": "R", "entries": [{"type": "article", "id": "e1"}]})).json()["data"]["id"]
    reader = await _client(blog, scopes=["content:read"])
    writer = await _client(blog, scopes=["content:read", "content:write"])
    authors_only = await _client(blog, scopes=["content:read", "content:write", "content:publish"], content_types=["author"])
    try:
        assert (await reader.get("/v1/releases")).status_code == 200
        assert (await reader.get(f"/v1/releases/{rid}")).status_code == 200
        assert (await reader.post("/v1/releases", json={"title": "x", "entries": []})).status_code == 403
        assert (await reader.put(f"/v1/releases/{rid}", json={"title": "x", "entries": []})).status_code == 403
        assert (await reader.delete(f"/v1/releases/{rid}")).status_code == 403
        assert (await writer.put(f"/v1/releases/{rid}", json={"title": "W", "entries": [{"type": "article", "id": "e1"}]})).status_code == 200
        assert (await writer.post(f"/v1/releases/{rid}/publish")).status_code == 403
        assert (await authors_only.post(f"/v1/releases/{rid}/publish")).status_code == 403
        assert (await authors_only.post("/v1/releases", json={"title": "x", "entries": [{"type": "article", "id": "e1"}]})).status_code == 403
        assert (await m.get("/v1/entries/article/e1")).json()["data"]["status"] == "draft"
        no_key = blog.client("management")
        async with no_key:
            assert (await no_key.get("/v1/releases")).status_code == 401
    finally:
        for client in (reader, writer, authors_only):
            await client.aclose()
