"""Schema as code: content types and locales over the management API."""

from __future__ import annotations

from tests.support import ARTICLE


async def test_put_creates_then_replaces_with_versions(apps) -> None:
    m = apps.management
    r = await m.put("/v1/content-types/author", json={"name": "Author", "fields": [{"id": "name", "type": "text"}]})
    assert r.status_code == 201, r.text
    data = r.json()["data"]
    assert data["id"] == "author" and data["version"] == 1 and r.headers["etag"] == '"1"'
    assert data["fields"][0] == {
        "id": "name", "type": "text", "required": False, "unique": False, "localized": False,
        "indexed": False, "validations": {},
    }
    r = await m.put(
        "/v1/content-types/author",
        json={"name": "Writer", "fields": [{"id": "name", "type": "text"}, {"id": "bio", "type": "long_text"}]},
    )
    assert r.status_code == 200 and r.json()["data"]["version"] == 2
    r = await m.get("/v1/content-types/author")
    assert r.json()["data"]["name"] == "Writer" and len(r.json()["data"]["fields"]) == 2
    listing = (await m.get("/v1/content-types")).json()
    assert [t["id"] for t in listing["data"]] == ["author"]


async def test_field_errors_point_into_the_body(apps) -> None:
    body = {
        "name": "Bad",
        "fields": [
            {"id": "title", "type": "text"},
            {"id": "count", "type": "integer"},
            {"id": "title", "type": "text"},
            {"id": "x", "type": "colour"},
            {"id": "Bad-Id", "type": "text"},
            {"id": "ref", "type": "reference", "to": ["nope"]},
            {"id": "e", "type": "enum"},
            {"id": "n", "type": "integer", "validations": {"max_length": 3}},
        ],
    }
    r = await apps.management.put("/v1/content-types/bad", json=body)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    pointers = {e["pointer"] for e in r.json()["errors"]}
    assert {"/fields/2/id", "/fields/3/type", "/fields/4/id", "/fields/5/to/0", "/fields/6/values",
            "/fields/7/validations/max_length"} <= pointers
    assert (await apps.management.get("/v1/content-types/bad")).status_code == 404


async def test_invalid_type_ids_and_unknown_properties(apps) -> None:
    m = apps.management
    assert (await m.put("/v1/content-types/Bad", json={"name": "x", "fields": []})).status_code == 422
    r = await m.put("/v1/content-types/ok", json={"name": "x", "fields": [], "colour": "red"})
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/colour"


async def test_breaking_changes_conflict_with_blocking_entries(blog) -> None:
    m = blog.management
    for title in ("A long title here", "Short"):
        assert (await m.post("/v1/entries/article", json={"fields": {"title": title}})).status_code == 201
    tightened = {**ARTICLE, "fields": [
        {**ARTICLE["fields"][0], "validations": {"max_length": 10}}, *ARTICLE["fields"][1:]]}
    r = await m.put("/v1/content-types/article", json=tightened)
    assert r.status_code == 409, r.text
    assert r.json()["blocking_entries"] == 1
    assert r.json()["errors"][0]["pointer"].startswith("/fields/0")
    retyped = {**ARTICLE, "fields": [
        {"id": "title", "type": "integer"}, {"id": "slug", "type": "slug"}, *ARTICLE["fields"][2:]]}
    r = await m.put("/v1/content-types/article", json=retyped)
    assert r.status_code == 409 and r.json()["blocking_entries"] == 2
    assert (await m.get("/v1/content-types/article")).json()["data"]["version"] == 1
    # Adding a required field never blocks (required is checked at publish).
    added = {**ARTICLE, "fields": [*ARTICLE["fields"], {"id": "summary", "type": "text", "required": True}]}
    assert (await m.put("/v1/content-types/article", json=added)).status_code == 200


async def test_removing_a_field_drops_values_and_rerenders(blog) -> None:
    m = blog.management
    r = await m.post("/v1/entries/article", json={"fields": {"title": "Hi", "rank": 5}})
    entry_id = r.json()["data"]["id"]
    await m.post(f"/v1/entries/article/{entry_id}/publish")
    reduced = {**ARTICLE, "fields": [f for f in ARTICLE["fields"] if f["id"] != "rank"]}
    assert (await m.put("/v1/content-types/article", json=reduced)).status_code == 200
    entry = (await m.get(f"/v1/entries/article/{entry_id}")).json()["data"]
    assert "rank" not in entry["fields"]
    reader = await blog.reader()
    r = await reader.get(f"/api/v1/entries/article/{entry_id}")
    assert r.status_code == 200 and "rank" not in r.json()["data"]["fields"]


async def test_delete_type_conflicts_while_entries_exist(blog) -> None:
    m = blog.management
    r = await m.post("/v1/entries/tag", json={"fields": {"label": "x"}})
    assert (await m.delete("/v1/content-types/tag")).status_code == 409
    await m.delete(f"/v1/entries/tag/{r.json()['data']['id']}")
    # still referenced by article.tags
    assert (await m.delete("/v1/content-types/tag")).status_code == 409
    await m.put("/v1/content-types/lonely", json={"name": "Lonely", "fields": []})
    assert (await m.delete("/v1/content-types/lonely")).status_code == 204
    assert (await m.get("/v1/content-types/lonely")).status_code == 404


async def test_locales_fallback_cycles_and_default(apps) -> None:
    m = apps.management
    r = await m.put("/v1/locales/de", json={"name": "Deutsch", "fallback": "en"})
    assert r.status_code == 201 and r.json()["data"]["fallback"] == "en"
    assert (await m.put("/v1/locales/de-AT", json={"name": "Österreich", "fallback": "de"})).status_code == 201
    r = await m.put("/v1/locales/en", json={"name": "English", "fallback": "de-AT"})
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/fallback"
    assert (await m.put("/v1/locales/fr", json={"name": "Français", "fallback": "xx"})).status_code == 422
    assert (await m.put("/v1/locales/not_a_code", json={"name": "x"})).status_code == 422
    assert (await m.delete("/v1/locales/en")).status_code == 409
    r = await m.put("/v1/locales/de", json={"name": "Deutsch", "fallback": None, "default": True})
    assert r.status_code == 200 and r.json()["data"]["default"] is True
    codes = {loc["code"]: loc["default"] for loc in (await m.get("/v1/locales")).json()["data"]}
    assert codes == {"de": True, "en": False, "de-AT": False}
    assert (await m.delete("/v1/locales/en")).status_code == 204


async def test_delete_locale_with_values_needs_force(blog) -> None:
    m = blog.management
    await m.put("/v1/locales/de", json={"name": "Deutsch", "fallback": "en"})
    r = await m.post("/v1/entries/article?locale=en", json={"fields": {"title": "Hello"}})
    entry_id = r.json()["data"]["id"]
    await m.put(f"/v1/entries/article/{entry_id}?locale=de", json={"fields": {"title": "Hallo"}})
    assert (await m.delete("/v1/locales/de")).status_code == 409
    assert (await m.delete("/v1/locales/de?force=true")).status_code == 204
    entry = (await m.get(f"/v1/entries/article/{entry_id}?locale=*")).json()["data"]
    assert entry["fields"]["title"] == {"en": "Hello"}


async def _all_pages(client, path: str, limit: int) -> tuple[list[str], list[int]]:
    """Follow next_cursor from the first page; (ids or codes in order, every page's size)."""
    seen: list[str] = []
    sizes: list[int] = []
    cursor = None
    while True:
        params = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        body = (await client.get(path, params=params)).json()
        assert body["meta"]["limit"] == limit and body["meta"]["total"] >= len(body["data"])
        seen += [item.get("id") or item["code"] for item in body["data"]]
        sizes.append(len(body["data"]))
        cursor = body["meta"]["next_cursor"]
        if cursor is None:
            return seen, sizes


async def test_schema_lists_page_with_limit_and_cursor(apps) -> None:
    """Content types and locales page like every list, in both apps (limit 1..100, cursor)."""
    m = apps.management
    for type_id in ("t1", "t2", "t3", "t4", "t5"):
        assert (await m.put(f"/v1/content-types/{type_id}", json={"name": type_id})).status_code == 201
    for code in ("de", "fr"):
        assert (await m.put(f"/v1/locales/{code}", json={"name": code})).status_code == 201
    d = await apps.reader()
    for client, prefix in ((m, "/v1"), (d, "/api/v1")):
        first = (await client.get(f"{prefix}/content-types", params={"limit": "2"})).json()
        assert [t["id"] for t in first["data"]] == ["t1", "t2"] and first["meta"]["total"] == 5
        assert await _all_pages(client, f"{prefix}/content-types", 2) == (["t1", "t2", "t3", "t4", "t5"], [2, 2, 1])
        assert await _all_pages(client, f"{prefix}/locales", 2) == (["de", "en", "fr"], [2, 1])
        for path in ("content-types", "locales"):
            for bad in ({"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"cursor": "Not A Cursor!"}):
                r = await client.get(f"{prefix}/{path}", params=bad)
                assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json", (path, bad)
    limited = await apps.key("delivery", content_types=["t2", "t4"])
    async with apps.client("delivery", limited) as client:
        r = await client.get("/api/v1/content-types", params={"limit": "1"})
    assert [t["id"] for t in r.json()["data"]] == ["t2"] and r.json()["meta"] == {"limit": 1, "next_cursor": "t2", "total": 2}
