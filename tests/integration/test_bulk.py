"""POST /v1/bulk: atomic and per-item modes, validation pointers, scopes, limits, and speed."""

from __future__ import annotations

import json
import time

import asyncpg
import httpx


async def _fetchval(apps, sql: str, *args):
    conn = await asyncpg.connect(apps.database_url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def _upsert(i: int, **fields) -> dict:
    return {"op": "upsert", "type": "article", "id": f"a{i}", "fields": {"title": f"Article {i}", **fields}}


async def _client(apps, **key) -> httpx.AsyncClient:
    secret = await apps.key("management", **key)
    return apps.client("management", secret)


async def test_atomic_failure_rolls_back_everything_with_pointers(blog) -> None:
    m = blog.management
    actions = [_upsert(i) for i in range(10)]
    actions[4]["fields"]["title"] = 5
    actions[7]["fields"]["rank"] = "high"
    r = await m.post("/v1/bulk", json={"atomic": True, "actions": actions})
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"] == "urn:cms:problem:validation"
    assert {e["pointer"] for e in problem["errors"]} == {"/actions/4/fields/title", "/actions/7/fields/rank"}
    assert await _fetchval(blog, "SELECT count(*) FROM entries") == 0
    assert await _fetchval(blog, "SELECT count(*) FROM outbox_events WHERE type LIKE 'entry.%'") == 0
    assert await _fetchval(blog, "SELECT count(*) FROM entry_versions") == 0

    # A failure late in the request undoes the successful earlier ones, publishes included.
    actions = [_upsert(i) for i in range(3)] + [{"op": "publish", "type": "article", "id": "a0"},
                                                 {"op": "publish", "type": "article", "id": "missing"}]
    r = await m.post("/v1/bulk", json={"atomic": True, "actions": actions})
    assert r.status_code == 422
    assert [e["pointer"] for e in r.json()["errors"]] == ["/actions/4"]
    assert await _fetchval(blog, "SELECT count(*) FROM entries") == 0
    assert await _fetchval(blog, "SELECT count(*) FROM published_documents") == 0

    # Publish validation inside a bulk: the required field points into the action.
    actions = [{"op": "upsert", "type": "article", "id": "x", "fields": {"rank": 1}},
               {"op": "publish", "type": "article", "id": "x"}]
    r = await m.post("/v1/bulk", json={"atomic": True, "actions": actions})
    assert r.status_code == 422
    assert [e["pointer"] for e in r.json()["errors"]] == ["/actions/1/fields/title"]


async def test_atomic_success_results(blog) -> None:
    m = blog.management
    actions = [_upsert(0), _upsert(1), {"op": "publish", "type": "article", "id": "a0"},
               {"op": "upsert", "type": "article", "fields": {"title": "server id"}}]
    r = await m.post("/v1/bulk", json={"atomic": True, "actions": actions})
    assert r.status_code == 200, r.text
    results = r.json()["data"]["results"]
    assert [(x["index"], x["status"], x["error"]) for x in results] == [
        (0, 201, None), (1, 201, None), (2, 200, None), (3, 201, None)
    ]
    assert results[0]["id"] == "a0" and len(results[3]["id"]) == 26
    entry = (await m.get("/v1/entries/article/a0")).json()["data"]
    assert entry["status"] == "published"
    assert (await m.get(f"/v1/entries/article/{results[3]['id']}")).json()["data"]["fields"]["title"] == "server id"


async def test_non_atomic_reports_each_action(blog) -> None:
    m = blog.management
    actions = [
        _upsert(0),
        {"op": "upsert", "type": "article", "id": "bad", "fields": {"title": 5}},
        {"op": "publish", "type": "article", "id": "a0"},
        {"op": "publish", "type": "article", "id": "nope"},
        {"op": "upsert", "type": "article", "id": "gone", "fields": {"title": "Gone"}},
        {"op": "delete", "type": "article", "id": "gone"},
        {"op": "delete", "type": "article", "id": "a0"},  # published → 409
        {"op": "upsert", "type": "article", "id": "loc", "locale": "xx", "fields": {"title": "L"}},
        {"op": "upsert", "type": "unknown_type", "id": "u", "fields": {}},
    ]
    r = await m.post("/v1/bulk", json={"atomic": False, "actions": actions})
    assert r.status_code == 200, r.text
    results = r.json()["data"]["results"]
    assert [x["status"] for x in results] == [201, 422, 200, 404, 201, 204, 409, 400, 404]
    assert [x["index"] for x in results] == list(range(9))
    bad = results[1]["error"]
    assert bad["type"] == "urn:cms:problem:validation" and bad["status"] == 422 and bad["title"]
    assert bad["errors"] == [{"pointer": "/actions/1/fields/title", "detail": bad["errors"][0]["detail"]}]
    assert results[3]["error"]["errors"][0]["pointer"] == "/actions/3"
    assert results[7]["error"]["errors"][0]["pointer"] == "/actions/7/locale"
    assert results[0]["error"] is None and results[0]["id"] == "a0"
    # What succeeded stayed.
    assert (await m.get("/v1/entries/article/a0")).json()["data"]["status"] == "published"
    assert (await m.get("/v1/entries/article/gone")).status_code == 404
    assert (await m.get("/v1/entries/article/bad")).status_code == 404


async def test_upsert_201_then_200_and_delete_204(blog) -> None:
    m = blog.management
    r = await m.post("/v1/bulk", json={"atomic": False, "actions": [_upsert(1)]})
    assert r.json()["data"]["results"][0]["status"] == 201
    r = await m.post("/v1/bulk", json={"atomic": False, "actions": [_upsert(1, rank=3)]})
    assert r.json()["data"]["results"][0]["status"] == 200
    entry = (await m.get("/v1/entries/article/a1")).json()["data"]
    assert entry["version"] == 2 and entry["fields"]["rank"] == 3
    # PUT semantics: absent fields are cleared.
    r = await m.post("/v1/bulk", json={"atomic": True, "actions": [_upsert(1)]})
    assert r.json()["data"]["results"][0]["status"] == 200
    assert (await m.get("/v1/entries/article/a1")).json()["data"]["fields"]["rank"] is None
    r = await m.post("/v1/bulk", json={"atomic": True, "actions": [
        {"op": "publish", "type": "article", "id": "a1"}, {"op": "unpublish", "type": "article", "id": "a1"},
        {"op": "delete", "type": "article", "id": "a1"},
    ]})
    assert [x["status"] for x in r.json()["data"]["results"]] == [200, 200, 204]
    assert (await m.get("/v1/entries/article/a1")).status_code == 404
    types = await _outbox_types(blog)
    assert types[-3:] == ["entry.published", "entry.unpublished", "entry.deleted"]


async def _outbox_types(apps) -> list[str]:
    conn = await asyncpg.connect(apps.database_url)
    try:
        return [r["type"] for r in await conn.fetch("SELECT type FROM outbox_events ORDER BY seq")]
    finally:
        await conn.close()


async def test_action_count_limits(blog) -> None:
    m = blog.management
    r = await m.post("/v1/bulk", json={"atomic": True, "actions": [_upsert(i) for i in range(1001)]})
    assert r.status_code == 422
    assert r.json()["errors"][0]["pointer"] == "/actions"
    r = await m.post("/v1/bulk", json={"atomic": True, "actions": []})
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/actions"
    r = await m.post("/v1/bulk", json={"atomic": False})
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/actions"
    assert await _fetchval(blog, "SELECT count(*) FROM entries") == 0


async def test_malformed_actions_have_pointers_and_nothing_runs(blog) -> None:
    m = blog.management
    actions = [
        _upsert(0),
        5,
        {"op": "nope", "type": "article", "id": "x"},
        {"op": "publish", "type": "article"},
        {"op": "upsert", "type": "Article!", "id": "y"},
        {"op": "publish", "type": "article", "id": "z", "fields": {}},
        {"op": "upsert", "type": "article", "id": "bad id", "extra": 1},
        {"op": "upsert", "type": "article", "fields": []},
    ]
    r = await m.post("/v1/bulk", json={"atomic": False, "actions": actions, "atomic_ish": 1})
    assert r.status_code == 422
    assert {e["pointer"] for e in r.json()["errors"]} == {
        "/atomic_ish", "/actions/1", "/actions/2/op", "/actions/3/id", "/actions/4/type", "/actions/5/fields",
        "/actions/6/id", "/actions/6/extra", "/actions/7/fields",
    }
    assert await _fetchval(blog, "SELECT count(*) FROM entries") == 0
    r = await m.post("/v1/bulk", json={"atomic": "yes", "actions": [_upsert(0)]})
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/atomic"
    r = await m.post("/v1/bulk", json=[1])
    assert r.status_code == 422
    r = await m.post("/v1/bulk", content=b"{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


async def test_scopes_and_content_types(blog) -> None:
    writer = await _client(blog, scopes=["content:write", "content:read"])
    publisher = await _client(blog, scopes=["content:publish"])
    authors_only = await _client(blog, scopes=["content:write", "content:publish"], content_types=["author"])
    try:
        actions = [_upsert(0), {"op": "publish", "type": "article", "id": "a0"}]
        r = await writer.post("/v1/bulk", json={"atomic": True, "actions": actions})
        assert r.status_code == 403
        assert [e["pointer"] for e in r.json()["errors"]] == ["/actions/1"]
        assert await _fetchval(blog, "SELECT count(*) FROM entries") == 0
        r = await writer.post("/v1/bulk", json={"atomic": False, "actions": actions})
        assert [x["status"] for x in r.json()["data"]["results"]] == [201, 403]
        assert r.json()["data"]["results"][1]["error"]["type"] == "urn:cms:problem:forbidden"
        # The route itself needs content:write.
        r = await publisher.post("/v1/bulk", json={"atomic": True, "actions": actions[1:]})
        assert r.status_code == 403
        r = await authors_only.post("/v1/bulk", json={"atomic": False, "actions": [
            {"op": "upsert", "type": "author", "id": "au", "fields": {"name": "Ada"}}, _upsert(5),
        ]})
        assert [x["status"] for x in r.json()["data"]["results"]] == [201, 403]
        assert await _fetchval(blog, "SELECT count(*) FROM entries WHERE id = 'a5'") == 0
    finally:
        for client in (writer, publisher, authors_only):
            await client.aclose()


async def test_bulk_body_limit_is_16_mib(blog) -> None:
    m = blog.management
    # Over the 1 MiB default of other routes, under 16 MiB: accepted.
    body = "x" * 2000
    actions = [_upsert(i, body=body) for i in range(600)]
    r = await m.post("/v1/bulk", json={"atomic": True, "actions": actions})
    assert r.status_code == 200, r.text[:500]
    big = {"atomic": True, "actions": [_upsert(0, body="y" * (17 * 1024 * 1024))]}
    r = await m.post("/v1/bulk", json=big)
    assert r.status_code == 413


async def test_thousand_action_atomic_upsert_and_publish(blog) -> None:
    m = blog.management
    author = await m.put("/v1/entries/author/au1", json={"fields": {"name": "Ada"}})
    assert author.status_code == 201
    actions = [
        _upsert(i, rank=i, body="Some **text** " * 20, author={"id": "au1", "type": "author"})
        for i in range(500)
    ] + [{"op": "publish", "type": "article", "id": f"a{i}"} for i in range(500)]
    started = time.perf_counter()
    r = await m.post("/v1/bulk", json={"atomic": True, "actions": actions})
    elapsed = time.perf_counter() - started
    assert r.status_code == 200, r.text[:500]
    results = r.json()["data"]["results"]
    assert [x["status"] for x in results] == [201] * 500 + [200] * 500
    print(f"\n1000-action atomic bulk (500 upserts + 500 publishes): {elapsed:.2f} s")
    assert await _fetchval(blog, "SELECT count(*) FROM entries WHERE type = 'article' AND published_version = 1") == 500
    assert await _fetchval(blog, "SELECT count(*) FROM outbox_events WHERE type = 'entry.published'") == 500
    assert await _fetchval(blog, "SELECT count(DISTINCT entry_id) FROM published_documents WHERE type = 'article'") == 500
    reader = await blog.reader()
    doc = (await reader.get("/api/v1/entries/article/a499")).json()["data"]
    assert doc["fields"]["rank"] == 499 and doc["fields"]["slug"] == "article-499"

    # 1000 upserts of existing entries (replace) in one atomic request.
    actions = [_upsert(i, rank=i + 1) for i in range(500)] + [_upsert(i) for i in range(500, 1000)]
    started = time.perf_counter()
    r = await m.post("/v1/bulk", json={"atomic": True, "actions": actions})
    elapsed = time.perf_counter() - started
    assert r.status_code == 200
    assert [x["status"] for x in r.json()["data"]["results"]] == [200] * 500 + [201] * 500
    print(f"1000-action atomic bulk (500 replaces + 500 creates): {elapsed:.2f} s")


# ---------------------------------------------------------------------------------------------
# the set-based path (app/bulk/sets.py) against the per-action path: same request, same outcome


async def _snapshot(apps, prefix: str, since_seq: int) -> str:
    """Everything a bulk request writes, for the entries whose ids start with `prefix`, as JSON text
    with the prefix replaced and the timestamps left out (the two paths run at different times)."""
    from cms.app import render

    conn = await asyncpg.connect(apps.database_url)
    like = prefix + "%"
    try:
        state = {
            "entries": [dict(r) for r in await conn.fetch(
                "SELECT id, type, data::text, version, published_version, published_data::text, "
                "first_published_at IS NULL AS never_published, published_at IS NULL AS unpublished "
                "FROM entries WHERE id LIKE $1 ORDER BY id", like)],
            "versions": [dict(r) for r in await conn.fetch(
                "SELECT entry_id, version, data::text, action FROM entry_versions WHERE entry_id LIKE $1 "
                "ORDER BY entry_id, version", like)],
            "documents": [
                {**dict(r), "body": {k: v for k, v in render.decode(r["body"]).items() if not k.endswith("_at")}}
                for r in await conn.fetch(
                    "SELECT entry_id, locale, type, version, slug, body, vals::text, search::text "
                    "FROM published_documents WHERE entry_id LIKE $1 ORDER BY entry_id, locale", like)
            ],
            "unique": [dict(r) for r in await conn.fetch(
                "SELECT type, field, locale, value, entry_id FROM entry_unique_values WHERE entry_id LIKE $1 "
                "ORDER BY type, field, locale, value", like)],
            "references": [dict(r) for r in await conn.fetch(
                "SELECT source_id, target_id FROM entry_references WHERE source_id LIKE $1 ORDER BY 1, 2", like)],
            "events": [dict(r) for r in await conn.fetch(
                "SELECT type, payload::text FROM outbox_events WHERE seq > $1 AND payload->>'id' LIKE $2 ORDER BY seq",
                since_seq, like)],
            "audit": [dict(r) for r in await conn.fetch(
                "SELECT action, target, outcome FROM audit_log WHERE target LIKE $1 ORDER BY id", f"entry:%/{like}")],
        }
    finally:
        await conn.close()
    return json.dumps(state, sort_keys=True, default=str).replace(prefix, "ID")


async def _both_paths(apps, monkeypatch, script) -> tuple[tuple[int, dict, str], tuple[int, dict, str]]:
    """Run script(prefix) -> bulk body through the set path, then the per-action path."""
    from cms.app.bulk import sets as bulk_sets

    outcomes = []
    for prefix, per_action in (("zzs", False), ("zzp", True)):
        if per_action:
            monkeypatch.setattr(bulk_sets, "needs_per_action_path", lambda actions, types: True)
        since = await _fetchval(apps, "SELECT coalesce(max(seq), 0) FROM outbox_events")
        body = await script(prefix)
        r = await apps.management.post("/v1/bulk", json=body)
        assert r.status_code in (200, 422), r.text
        text = r.text.replace(prefix, "ID")
        answer = json.loads(text)
        answer.pop("request_id", None)  # a problem's own request id differs, of course
        outcomes.append((r.status_code, answer, await _snapshot(apps, prefix, since)))
    return outcomes[0], outcomes[1]


async def test_set_path_writes_what_the_per_action_path_writes(blog, monkeypatch) -> None:
    m = blog.management
    assert (await m.put("/v1/locales/de", json={"name": "Deutsch", "fallback": "en"})).status_code == 201

    async def script(p: str) -> dict:
        for path, fields in ((f"author/{p}-old", {"name": "Old"}), (f"tag/{p}-t1", {"label": "T"}),
                             (f"article/{p}-keep", {"title": "Keep", "slug": f"{p}-keep"}),
                             (f"article/{p}-gone", {"title": "Gone", "slug": f"{p}-gone"})):
            assert (await m.put(f"/v1/entries/{path}", json={"fields": fields})).status_code == 201
        for path in (f"author/{p}-old", f"tag/{p}-t1", f"article/{p}-keep"):
            assert (await m.post(f"/v1/entries/{path}/publish")).status_code == 200
        author, tag = {"id": f"{p}-a1", "type": "author"}, {"id": f"{p}-t1", "type": "tag"}
        art = "article"
        return {"atomic": True, "actions": [
            {"op": "upsert", "type": "author", "id": f"{p}-a1", "fields": {"name": "Ada"}},
            {"op": "publish", "type": "author", "id": f"{p}-a1"},
            {"op": "upsert", "type": art, "id": f"{p}-x1", "fields": {
                "title": "One", "slug": f"{p}-one", "author": author, "tags": [tag], "rank": 1, "body": "*b*"}},
            {"op": "upsert", "type": art, "id": f"{p}-x1", "locale": "de", "fields": {
                "title": "Eins", "slug": f"{p}-eins", "author": author, "tags": [tag], "rank": 2}},
            {"op": "publish", "type": art, "id": f"{p}-x1"},
            {"op": "upsert", "type": art, "id": f"{p}-keep", "fields": {
                "title": "Keep 2", "slug": f"{p}-keep", "author": {"id": f"{p}-old", "type": "author"}}},
            {"op": "upsert", "type": art, "id": f"{p}-keep", "fields": {
                "title": "Keep 2", "slug": f"{p}-keep", "author": {"id": f"{p}-old", "type": "author"}}},  # no change
            {"op": "publish", "type": art, "id": f"{p}-keep"},
            {"op": "upsert", "type": art, "id": f"{p}-x2", "fields": {"title": "Two", "slug": f"{p}-two"}},
            {"op": "publish", "type": art, "id": f"{p}-x2"},
            {"op": "unpublish", "type": art, "id": f"{p}-x2"},
            {"op": "unpublish", "type": art, "id": f"{p}-x2"},  # already unpublished: no event
            {"op": "delete", "type": art, "id": f"{p}-gone"},
            {"op": "upsert", "type": art, "id": f"{p}-x1", "fields": {"title": "One again", "slug": f"{p}-one", "rank": 3}},
        ]}

    (set_status, set_body, set_state), (per_status, per_body, per_state) = await _both_paths(blog, monkeypatch, script)
    assert set_status == per_status == 200
    assert set_body == per_body
    assert [x["status"] for x in set_body["data"]["results"]] == [201, 200, 201, 200, 200, 200, 200, 200, 201, 200, 200, 200, 204, 200]
    assert set_state == per_state
    # and delivery serves the set path's documents
    reader = await blog.reader()
    doc = (await reader.get("/api/v1/entries/article/by-slug/zzs-eins?locale=de&include=author")).json()["data"]
    assert doc["fields"]["title"] == "Eins" and doc["fields"]["author"]["fields"]["name"] == "Ada"


async def test_set_path_reports_the_errors_the_per_action_path_reports(blog, monkeypatch) -> None:
    m = blog.management

    async def script(p: str) -> dict:
        assert (await m.put(f"/v1/entries/article/{p}-taken", json={"fields": {"title": "T", "slug": f"{p}-taken"}})).status_code == 201
        art = "article"
        return {"atomic": True, "actions": [
            {"op": "upsert", "type": art, "id": f"{p}-ok", "fields": {"title": "Fine", "slug": f"{p}-ok"}},
            {"op": "upsert", "type": art, "id": f"{p}-bad", "fields": {"title": 7, "slug": f"{p}-bad", "nope": 1}},
            {"op": "upsert", "type": art, "id": f"{p}-dup", "fields": {"title": "Dup", "slug": f"{p}-taken"}},
            {"op": "upsert", "type": art, "id": f"{p}-ref", "fields": {
                "title": "Ref", "slug": f"{p}-ref", "author": {"id": f"{p}-nobody", "type": "author"}}},
            {"op": "publish", "type": art, "id": f"{p}-ref"},
            {"op": "upsert", "type": art, "id": f"{p}-notitle", "fields": {"slug": f"{p}-notitle"}},
            {"op": "publish", "type": art, "id": f"{p}-notitle"},
            {"op": "publish", "type": art, "id": f"{p}-missing"},
            {"op": "upsert", "type": "author", "id": f"{p}-ok", "fields": {"name": "Wrong type"}},
            {"op": "upsert", "type": art, "locale": "xx", "fields": {"title": "Bad locale", "slug": f"{p}-loc"}},
        ]}

    (set_status, set_body, set_state), (per_status, per_body, per_state) = await _both_paths(blog, monkeypatch, script)
    assert set_status == per_status == 422
    assert set_body == per_body
    pointers = [e["pointer"] for e in set_body["errors"]]
    assert pointers == [
        "/actions/1/fields/title", "/actions/1/fields/nope", "/actions/2/fields/slug", "/actions/4/fields/author",
        "/actions/6/fields/title", "/actions/7", "/actions/8", "/actions/9/locale",
    ], pointers
    assert set_state == per_state  # nothing but the entry created before the request
    assert await _fetchval(blog, "SELECT count(*) FROM entries WHERE id LIKE 'zzs-%'") == 1


async def test_an_op_of_the_wrong_json_type_is_a_422(blog) -> None:
    """Found by schemathesis: an unhashable `op` (a list) was a 500."""
    for op in ([["x"]], {"a": 1}, 3, None):
        r = await blog.management.post("/v1/bulk", json={"actions": [{"op": op, "type": "article", "id": "a"}]})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/actions/0/op", (op, r.text)
