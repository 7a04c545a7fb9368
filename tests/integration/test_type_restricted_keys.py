"""A credential limited to some content types sees only those, whichever way a request reaches
another type: includes stay links, filters through references are refused (API.md, "Credentials")."""

from __future__ import annotations

from tests.integration.test_delivery import _seed
from tests.support import Apps, eventually


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_an_included_reference_of_another_type_stays_a_link(blog: Apps) -> None:
    seeded = await _seed(blog, 2)
    article = seeded["articles"][0]
    limited = _auth(await blog.key("delivery", content_types=["article", "tag"]))
    full = _auth(await blog.key("delivery"))
    d = blog.delivery
    for url in (
        f"/api/v1/entries/article/{article}?include=author,tags",
        f"/api/v1/entries/article/{article}?include=*&depth=3",
        f"/api/v1/entries/article/{article}?include=author&fields=author",
        "/api/v1/entries/article?include=author,tags",
        "/api/v1/entries/article?include=*&depth=2",
    ):
        # The unrestricted key first, so the restricted one would meet its cached answer if keys were shared.
        open_answer = (await d.get(url, headers=full)).json()["data"]
        answers = [(await d.get(url, headers=limited)).json()["data"] for _ in range(2)]  # miss, then the cache
        for data in answers:
            entries = data if isinstance(data, list) else [data]
            for entry in entries:
                assert entry["fields"]["author"] == {"id": entry["fields"]["author"]["id"], "type": "author"}, url
                if "tags" in entry["fields"]:
                    assert entry["fields"]["tags"][0]["fields"] == {"label": "python"}, url  # allowed: resolved
        opened = open_answer if isinstance(open_answer, list) else [open_answer]
        assert opened[0]["fields"]["author"]["fields"]["name"] in ("Ada", "Grace"), url
    # Preview (drafts rendered on the fly) applies the same rule.
    preview = _auth(await blog.key("preview", content_types=["article"]))
    r = await d.get(f"/preview/v1/entries/article/{article}?include=author", headers=preview)
    assert r.status_code == 200 and r.json()["data"]["fields"]["author"]["type"] == "author"
    assert "fields" not in r.json()["data"]["fields"]["author"]


async def test_a_filter_through_a_reference_into_another_type_is_403(blog: Apps) -> None:
    await _seed(blog, 2)
    limited = _auth(await blog.key("delivery", content_types=["article"]))
    d = blog.delivery
    for url in (
        "/api/v1/entries/article?filter[author.name][startswith]=A",
        "/api/v1/entries/article?filter[author.nope][eq]=x",  # the answer must not say whether the field exists
        "/api/v1/entries/article?filter[tags.label][eq]=python",
    ):
        for _ in range(2):  # the full app, then the fast path with a known credential
            r = await d.get(url, headers=limited)
            assert r.status_code == 403, (url, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
    # own fields and a reference's id are the key's own data: allowed
    assert (await d.get("/api/v1/entries/article?filter[rank][gte]=0", headers=limited)).status_code == 200
    full = _auth(await blog.key("delivery"))
    assert len((await d.get("/api/v1/entries/article?filter[author.name][eq]=Ada", headers=full)).json()["data"]) == 1
    # preview and the management list: the same rule
    preview = _auth(await blog.key("preview", content_types=["article"]))
    assert (await d.get("/preview/v1/entries/article?filter[author.name][eq]=Ada", headers=preview)).status_code == 403
    manager = blog.client("management", await blog.key("management", scopes=["content:read"], content_types=["article"]))
    async with manager:
        assert (await manager.get("/v1/entries/article?filter[author.name][eq]=Ada")).status_code == 403
        assert (await manager.get("/v1/entries/article?filter[rank][gte]=0")).status_code == 200


async def test_graphql_where_through_a_reference_into_another_type_is_forbidden(blog: Apps) -> None:
    await _seed(blog, 2)
    limited = blog.client("delivery", await blog.key("delivery", content_types=["article", "tag"]))
    async with limited:
        query = '{ articleCollection(where: {author: {name: {startsWith: "A"}}}) { total } }'
        got = (await limited.post("/graphql", json={"query": query})).json()
        assert got["data"] is None and got["errors"][0]["extensions"]["code"] == "FORBIDDEN", got
        allowed = '{ articleCollection(where: {tags: {label: {eq: "python"}}}) { total } }'
        got = (await limited.post("/graphql", json={"query": allowed})).json()
        assert got == {"data": {"articleCollection": {"total": 2}}}, got


async def test_schema_writes_stay_within_the_keys_types(blog: Apps) -> None:
    secret = await blog.key("management", scopes=["schema:write"], content_types=["article", "newtype"])
    limited = blog.client("management", secret)
    body = {"name": "X", "fields": [{"id": "title", "type": "text"}]}
    async with limited:
        assert (await limited.put("/v1/content-types/author", json={"name": "A", "fields": []})).status_code == 403
        r = await limited.put("/v1/content-types/newtype", json=body)  # listed, but new: no creating types
        assert r.status_code == 403, r.text
        assert (await blog.management.get("/v1/content-types/newtype")).status_code == 404
        assert (await limited.put("/v1/locales/de", json={"name": "German"})).status_code == 403
        assert (await limited.delete("/v1/locales/en")).status_code == 403
        listed = (await limited.get("/v1/content-types")).json()
        assert [t["id"] for t in listed["data"]] == ["article"] and listed["meta"]["total"] == 1
        # its own type it may change
        article = (await limited.get("/v1/content-types/article")).json()["data"]
        article["description"] = "changed by a limited key"
        assert (await limited.put("/v1/content-types/article", json=article)).status_code == 200
    author = (await blog.management.get("/v1/content-types/author")).json()["data"]
    assert [f["id"] for f in author["fields"]] == ["name"]  # untouched


async def test_releases_schedules_and_events_of_other_types_are_hidden(blog: Apps) -> None:
    m = blog.management
    article = (await m.post("/v1/entries/article", json={"fields": {"title": "A"}})).json()["data"]["id"]
    author = (await m.post("/v1/entries/author", json={"fields": {"name": "Ada"}})).json()["data"]["id"]
    own = (await m.post("/v1/releases", json={"title": "own", "entries": [{"type": "article", "id": article}]})).json()["data"]
    mixed = (await m.post("/v1/releases", json={"title": "mixed", "entries": [
        {"type": "article", "id": article}, {"type": "author", "id": author},
    ]})).json()["data"]
    at = "2999-01-01T00:00:00Z"
    actions = {}
    for name, target in (("article", {"entry": {"type": "article", "id": article}}),
                         ("author", {"entry": {"type": "author", "id": author}}),
                         ("own", {"release": own["id"]}), ("mixed", {"release": mixed["id"]})):
        r = await m.post("/v1/scheduled-actions", json={"action": "publish", "at": at, **target})
        assert r.status_code == 201, r.text
        actions[name] = r.json()["data"]["id"]
    secret = await blog.key("management", scopes=["content:read", "content:publish"], content_types=["article"])
    limited = blog.client("management", secret)
    async with limited:
        listed = (await limited.get("/v1/releases")).json()
        assert [r["id"] for r in listed["data"]] == [own["id"]] and listed["meta"]["total"] == 1
        assert (await limited.get(f"/v1/releases/{own['id']}")).status_code == 200
        assert (await limited.get(f"/v1/releases/{mixed['id']}")).status_code == 403
        listed = (await limited.get("/v1/scheduled-actions")).json()
        assert sorted(a["id"] for a in listed["data"]) == sorted([actions["article"], actions["own"]])
        assert listed["meta"]["total"] == 2
        for hidden in ("author", "mixed"):
            assert (await limited.get(f"/v1/scheduled-actions/{actions[hidden]}")).status_code == 403
            assert (await limited.delete(f"/v1/scheduled-actions/{actions[hidden]}")).status_code == 403
            assert (await m.get(f"/v1/scheduled-actions/{actions[hidden]}")).json()["data"]["status"] == "pending"
        # release.published: seen only when every entry of the release is of the key's types
        assert (await m.post(f"/v1/releases/{mixed['id']}/publish")).status_code == 200
        assert (await m.post(f"/v1/releases/{own['id']}/publish")).status_code == 200

        async def feed_filtered() -> None:
            seen = [(e["type"], e["data"]["id"]) for e in (await limited.get("/v1/events", params={"limit": 100})).json()["data"]]
            everything = [(e["type"], e["data"]["id"]) for e in (await m.get("/v1/events", params={"limit": 100})).json()["data"]]
            assert ("release.published", mixed["id"]) in everything
            assert ("release.published", own["id"]) in seen
            assert ("release.published", mixed["id"]) not in seen
            assert not any(event_id == author for _, event_id in seen)

        await eventually(feed_filtered, 3.0)
