"""Delivery REST: published content, includes, caching headers, cache purges, preview, /cdn/."""

from __future__ import annotations

import asyncio

from cms.app import render
from cms.app.db.pool import QUERY_LOG
from cms.app.publishing.documents import record_link_places
from cms.app.schema.registry import load_types
from tests.support import ARTICLE, AUTHOR, TAG, eventually


async def _seed(blog, n: int = 3) -> dict:
    m = blog.management
    authors = []
    for name in ("Ada", "Grace"):
        r = await m.post("/v1/entries/author", json={"fields": {"name": name}})
        authors.append(r.json()["data"]["id"])
        await m.post(f"/v1/entries/author/{authors[-1]}/publish")
    tag = (await m.post("/v1/entries/tag", json={"fields": {"label": "python"}})).json()["data"]["id"]
    await m.post(f"/v1/entries/tag/{tag}/publish")
    articles = []
    for i in range(n):
        r = await m.post("/v1/entries/article", json={"fields": {
            "title": f"Post {i}", "rank": i, "author": {"id": authors[i % 2]}, "tags": [{"id": tag}],
        }})
        articles.append(r.json()["data"]["id"])
        assert (await m.post(f"/v1/entries/article/{articles[-1]}/publish")).status_code == 200
    return {"authors": authors, "tag": tag, "articles": articles}


async def test_auth_required_unless_public(blog) -> None:
    d = blog.delivery
    r = await d.get("/api/v1/entries/article")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = await d.get("/api/v1/entries/article", headers={"Authorization": "Bearer cms_dk_nope"})
    assert r.status_code == 401
    r = await d.get("/api/v1/entries/article", headers={"X-API-Key": await blog.key("delivery")})
    assert r.status_code == 200


async def test_entry_shape_by_id_and_slug(blog) -> None:
    seeded = await _seed(blog)
    d = await blog.reader()
    r = await d.get(f"/api/v1/entries/article/{seeded['articles'][0]}")
    assert r.status_code == 200
    entry = r.json()["data"]
    assert set(entry) == {"id", "type", "locale", "version", "created_at", "updated_at", "published_at", "fields"}
    assert entry["fields"]["author"] == {"id": seeded["authors"][0], "type": "author"}
    assert entry["fields"]["body"] is None and entry["fields"]["slug"] == "post-0"
    by_slug = await d.get("/api/v1/entries/article/by-slug/post-0")
    assert by_slug.content == r.content
    assert (await d.get("/api/v1/entries/article/by-slug/nope")).status_code == 404
    assert (await d.get("/api/v1/entries/author/" + seeded["articles"][0])).status_code == 404
    assert (await d.get("/api/v1/entries/nope/x")).status_code == 404


async def test_drafts_are_not_delivered(blog) -> None:
    m = blog.management
    r = await m.post("/v1/entries/article", json={"fields": {"title": "Secret"}})
    d = await blog.reader()
    assert (await d.get(f"/api/v1/entries/article/{r.json()['data']['id']}")).status_code == 404
    assert (await d.get("/api/v1/entries/article")).json()["meta"]["total"] == 0


async def test_include_depth_and_fields(blog) -> None:
    seeded = await _seed(blog)
    d = await blog.reader()
    r = await d.get("/api/v1/entries/article?include=author&sort=rank")
    first = r.json()["data"][0]
    assert first["fields"]["author"]["fields"]["name"] == "Ada"
    assert first["fields"]["tags"] == [{"id": seeded["tag"], "type": "tag"}]  # not included
    r = await d.get("/api/v1/entries/article?include=*&sort=rank&fields=title,author")
    first = r.json()["data"][0]
    assert set(first["fields"]) == {"title", "author"}
    assert first["fields"]["author"]["fields"]["name"] == "Ada"
    surrogate = r.headers["surrogate-key"].split()
    assert "type:article" in surrogate and f"entry:{seeded['authors'][0]}" in surrogate
    assert f"entry:{seeded['tag']}" in surrogate
    assert r.headers["cache-tag"] == ",".join(surrogate)
    r = await d.get(f"/api/v1/entries/article/{seeded['articles'][0]}?include=tags")
    assert r.json()["data"]["fields"]["tags"][0]["fields"]["label"] == "python"
    assert (await d.get("/api/v1/entries/article?include=title")).status_code == 400
    assert (await d.get("/api/v1/entries/article?depth=4&include=author")).status_code == 400


async def test_include_splices_at_the_stored_link_places_and_older_documents_alike(apps_with, db) -> None:
    """Documents stored since migration 0020 say where their links are; those stored before (links
    NULL) take the decoding path; both answer the same bytes."""
    async with apps_with(CMS_DELIVERY_CACHE_MB="0") as apps:  # every read computed
        for type_id, body in (("author", AUTHOR), ("tag", TAG), ("article", ARTICLE)):
            assert (await apps.management.put(f"/v1/content-types/{type_id}", json=body)).status_code == 201
        seeded = await _seed(apps)
        d = await apps.reader()
        urls = [
            "/api/v1/entries/article?include=author,tags&sort=rank", "/api/v1/entries/article?include=author",
            f"/api/v1/entries/article/{seeded['articles'][1]}?include=*",
        ]
        by_places = [(await d.get(url)).content for url in urls]
        rows = await db.fetch("SELECT entry_id, body, links FROM published_documents WHERE type = 'article'")
        before = await db.fetch("SELECT entry_id, render_seq FROM published_documents WHERE type = 'article'")
        assert len(rows) == 3
        for row in rows:
            assert [(field, linked) for field, _, _, linked in row["links"]] == [
                ("author", render.decode(row["body"])["fields"]["author"]["id"]), ("tags", seeded["tag"]),
            ]
            for _, start, end, linked in row["links"]:
                link = render.decode(row["body"][start:end])
                assert link["id"] == linked and set(link) == {"id", "type"}
        await db.execute("UPDATE published_documents SET links = NULL")
        assert [(await d.get(url)).content for url in urls] == by_places
        # `cms republish` gives them their places again, from their bytes (no new render number)
        async with db.acquire() as conn:
            assert await record_link_places(conn, await load_types(conn), "article") == 3
        again = await db.fetch("SELECT entry_id, links, render_seq FROM published_documents WHERE type = 'article'")
        assert {r["entry_id"]: r["links"] for r in again} == {r["entry_id"]: r["links"] for r in rows}
        assert {r["entry_id"]: r["render_seq"] for r in again} == {r["entry_id"]: r["render_seq"] for r in before}
        assert [(await d.get(url)).content for url in urls] == by_places
        first = render.decode(by_places[0])["data"][0]["fields"]
        assert first["author"]["fields"]["name"] == "Ada" and first["tags"][0]["fields"]["label"] == "python"
        assert render.decode(by_places[2])["data"]["fields"]["author"]["fields"]["name"] == "Grace"


async def test_depth_resolves_nested_references_and_cycles(apps) -> None:
    m = apps.management
    await m.put("/v1/content-types/node", json={"name": "Node", "fields": [
        {"id": "name", "type": "text"}, {"id": "next", "type": "reference", "to": ["node"]}]})
    await m.put("/v1/entries/node/a", json={"fields": {"name": "A", "next": {"id": "b"}}})
    await m.put("/v1/entries/node/b", json={"fields": {"name": "B", "next": {"id": "a"}}})
    for node in ("a", "b"):
        assert (await m.post(f"/v1/entries/node/{node}/publish")).status_code == 200
    d = await apps.reader()
    r = await d.get("/api/v1/entries/node/a?include=next&depth=3")
    data = r.json()["data"]
    assert data["fields"]["next"]["fields"]["next"]["fields"]["next"]["fields"]["name"] == "B"
    assert data["fields"]["next"]["fields"]["next"]["fields"]["next"]["fields"]["next"] == {"id": "a", "type": "node"}
    r = await d.get("/api/v1/entries/node/a?include=next")
    assert r.json()["data"]["fields"]["next"]["fields"]["next"] == {"id": "a", "type": "node"}


async def test_unpublished_reference_stays_a_link(blog) -> None:
    m = blog.management
    author = (await m.post("/v1/entries/author", json={"fields": {"name": "Hidden"}})).json()["data"]["id"]
    r = await m.post("/v1/entries/article", json={"fields": {"title": "X", "author": {"id": author}}})
    await m.post(f"/v1/entries/article/{r.json()['data']['id']}/publish")
    d = await blog.reader()
    data = (await d.get("/api/v1/entries/article?include=author")).json()["data"]
    assert data[0]["fields"]["author"] == {"id": author, "type": "author"}


async def test_filters_sort_and_cursor_over_http(blog) -> None:
    await _seed(blog, 6)
    d = await blog.reader()
    r = await d.get("/api/v1/entries/article?filter[rank][gt]=1&filter[rank][lt]=5&sort=-rank&limit=2")
    body = r.json()
    assert [e["fields"]["rank"] for e in body["data"]] == [4, 3] and body["meta"]["total"] == 3
    r = await d.get(
        f"/api/v1/entries/article?filter[rank][gt]=1&filter[rank][lt]=5&sort=-rank&limit=2&cursor={body['meta']['next_cursor']}"
    )
    assert [e["fields"]["rank"] for e in r.json()["data"]] == [2]
    r = await d.get(f"/api/v1/entries/article?sort=rank&cursor={body['meta']['next_cursor']}")
    assert r.status_code == 400 and r.json()["errors"][0]["parameter"] == "cursor"
    r = await d.get("/api/v1/entries/article?filter[author.name][eq]=Grace")
    assert r.json()["meta"]["total"] == 3
    r = await d.get("/api/v1/entries/article?q=post&sort=rank&limit=1")
    assert r.json()["meta"]["total"] == 6
    r = await d.get("/api/v1/entries/article?filter[nope][eq]=1")
    assert r.status_code == 400 and r.json()["errors"][0]["parameter"] == "filter[nope][eq]"


async def test_etag_304_and_cache_headers(blog) -> None:
    seeded = await _seed(blog, 1)
    d = await blog.reader()
    url = f"/api/v1/entries/article/{seeded['articles'][0]}"
    r = await d.get(url)
    etag = r.headers["etag"]
    assert etag.startswith('"') and r.headers["cache-control"] == "public, max-age=60, stale-while-revalidate=300"
    assert r.headers["surrogate-key"] == f"entry:{seeded['articles'][0]}"
    r2 = await d.get(url, headers={"If-None-Match": etag})
    assert r2.status_code == 304 and r2.content == b"" and r2.headers["etag"] == etag
    assert r2.headers["cache-control"] == r.headers["cache-control"]
    listing = await d.get("/api/v1/entries/article")
    assert (await d.get("/api/v1/entries/article", headers={"If-None-Match": listing.headers["etag"]})).status_code == 304


async def test_publish_purges_the_delivery_cache(blog) -> None:
    m = blog.management
    seeded = await _seed(blog, 1)
    article = seeded["articles"][0]
    d = await blog.reader()
    before = await d.get(f"/api/v1/entries/article/{article}")
    listing = await d.get("/api/v1/entries/article?include=author")
    assert (await d.get(f"/api/v1/entries/article/{article}")).content == before.content  # from the cache
    await m.patch(f"/v1/entries/article/{article}", json={"fields": {"title": "Changed"}})
    await m.post(f"/v1/entries/article/{article}/publish")

    async def changed() -> None:
        r = await d.get(f"/api/v1/entries/article/{article}")
        assert r.json()["data"]["fields"]["title"] == "Changed"
        assert r.headers["etag"] != before.headers["etag"]

    await eventually(changed)
    # An included entry's change purges lists that include it.
    await m.patch(f"/v1/entries/author/{seeded['authors'][0]}", json={"fields": {"name": "Ada L."}})
    await m.post(f"/v1/entries/author/{seeded['authors'][0]}/publish")

    async def included_changed() -> None:
        r = await d.get("/api/v1/entries/article?include=author")
        assert r.json()["data"][0]["fields"]["author"]["fields"]["name"] == "Ada L."

    await eventually(included_changed)
    assert listing.status_code == 200


async def test_query_count_is_constant_in_page_size_and_depth(blog) -> None:
    await _seed(blog, 12)
    d = await blog.reader()
    await d.get("/api/v1/entries/article?limit=1")  # warm up: key lookup, type registry

    log_of_last: list[str] = []

    async def count(url: str) -> int:
        log: list[str] = []
        token = QUERY_LOG.set(log)
        try:
            r = await d.get(url)
            await asyncio.sleep(0.01)
        finally:
            QUERY_LOG.reset(token)
        assert r.status_code == 200, r.text
        log_of_last[:] = log
        return len(log)

    small = await count("/api/v1/entries/article?limit=2&include=author,tags")
    large = await count("/api/v1/entries/article?limit=12&include=author,tags")
    deep = await count("/api/v1/entries/article?limit=12&include=*&depth=3")
    assert small == large, (small, large)
    assert small == 1, log_of_last  # the page, its count and its includes: one statement
    assert deep <= 4  # + at most one query per further level
    cached = await count("/api/v1/entries/article?limit=12&include=author,tags")
    assert cached == 0


async def test_a_page_and_its_includes_are_one_statement_that_keeps_every_include_rule(apps_with, db) -> None:
    """The page's statement brings what its rows include (repository.included_along): an unpublished target
    and a type the key may not read stay links, an entry linked twice is embedded twice, the same
    bytes come from the page as from the entry alone; a row stored without its links' places
    (before migration 0020) gets its includes from a second statement."""
    async with apps_with(CMS_DELIVERY_CACHE_MB="0") as apps:  # every read computed
        m = apps.management
        for type_id, body in (("author", AUTHOR), ("tag", TAG), ("article", ARTICLE)):
            assert (await m.put(f"/v1/content-types/{type_id}", json=body)).status_code == 201
        seeded = await _seed(apps, 3)  # articles 0 and 2 by Ada, 1 by Grace; all tagged
        hidden = (await m.post("/v1/entries/author", json={"fields": {"name": "Draft"}})).json()["data"]["id"]
        r = await m.post("/v1/entries/article", json={"fields": {"title": "By a draft", "rank": 9, "author": {"id": hidden}}})
        assert (await m.post(f"/v1/entries/article/{r.json()['data']['id']}/publish")).status_code == 200
        limited = apps.client("delivery", await apps.key("delivery", content_types=["article", "author"]))

        async def statements(client, url: str) -> tuple[int, list]:
            log: list[str] = []
            token = QUERY_LOG.set(log)
            try:
                r = await client.get(url)
                await asyncio.sleep(0.01)  # asyncpg calls query loggers soon after, not at once
            finally:
                QUERY_LOG.reset(token)
            assert r.status_code == 200, r.text
            return len(log), r.json()["data"]

        d = await apps.reader()
        async with limited:
            for client in (limited, d):
                await statements(client, "/api/v1/entries/article?limit=1")  # warm up: key lookup, types
            count, page = await statements(limited, "/api/v1/entries/article?include=*&sort=rank")
            assert count == 1
            assert [e["fields"]["title"] for e in page] == ["Post 0", "Post 1", "Post 2", "By a draft"]  # in order
            fields = {e["fields"]["title"]: e["fields"] for e in page}
            assert fields["Post 0"]["author"]["fields"]["name"] == "Ada"
            assert fields["Post 2"]["author"]["fields"]["name"] == "Ada"  # once per linking entry
            assert fields["Post 1"]["author"]["fields"]["name"] == "Grace"
            assert fields["Post 0"]["tags"] == [{"id": seeded["tag"], "type": "tag"}]  # a type it may not read
            assert fields["By a draft"]["author"] == {"id": hidden, "type": "author"}  # not published
            _, alone = await statements(limited, f"/api/v1/entries/article/{seeded['articles'][0]}?include=*")
            assert alone == page[0]
        # ranked by a search (a statement that is a WITH itself), then its next page by cursor
        r = await d.get("/api/v1/entries/article?q=post&include=author&limit=2")
        ranked = r.json()
        assert [e["fields"]["author"]["fields"]["name"] for e in ranked["data"]] == ["Ada", "Grace"]
        assert ranked["meta"]["total"] == 3 and ranked["meta"]["next_cursor"]
        count, rest = await statements(d, f"/api/v1/entries/article?q=post&include=author&limit=2&cursor={ranked['meta']['next_cursor']}")
        assert count == 1 and [e["fields"]["author"]["fields"]["name"] for e in rest] == ["Ada"]
        count, chosen = await statements(d, "/api/v1/entries/article?include=author&fields=title,author&sort=rank")
        assert count == 1 and [set(e["fields"]) for e in chosen] == [{"title", "author"}] * 4
        assert chosen[1]["fields"]["author"]["fields"]["name"] == "Grace"
        count, page = await statements(d, "/api/v1/entries/article?include=tags&sort=rank")
        assert count == 1 and page[1]["fields"]["tags"][0]["fields"]["label"] == "python"
        assert page[1]["fields"]["author"] == {"id": seeded["authors"][1], "type": "author"}  # not asked for
        await db.execute("UPDATE published_documents SET links = NULL WHERE entry_id = $1", seeded["articles"][1])
        count, again = await statements(d, "/api/v1/entries/article?include=tags&sort=rank")
        assert count == 1 and again == page  # its tag was looked up through the other rows' links
        count, again = await statements(d, "/api/v1/entries/article?include=author&sort=rank")
        assert count == 2 and again[1]["fields"]["author"]["fields"]["name"] == "Grace"


async def test_preview_shows_drafts_without_caching(blog) -> None:
    m = blog.management
    r = await m.post("/v1/entries/article", json={"fields": {"title": "Draft only"}})
    entry_id = r.json()["data"]["id"]
    d = blog.delivery
    preview_key = await blog.key("preview")
    r = await d.get(f"/preview/v1/entries/article/{entry_id}", headers={"Authorization": f"Bearer {preview_key}"})
    assert r.status_code == 200 and r.json()["data"]["fields"]["title"] == "Draft only"
    assert r.headers["cache-control"] == "no-store"
    r = await d.get("/preview/v1/entries/article/by-slug/draft-only", headers={"Authorization": f"Bearer {preview_key}"})
    assert r.status_code == 200
    r = await d.get("/preview/v1/entries/article", headers={"Authorization": f"Bearer {preview_key}"})
    assert r.json()["meta"]["total"] == 1
    delivery_key = await blog.key("delivery")
    r = await d.get(f"/preview/v1/entries/article/{entry_id}", headers={"Authorization": f"Bearer {delivery_key}"})
    assert r.status_code == 403
    from tests.support import ADMIN_SECRET

    r = await d.get(f"/preview/v1/entries/article/{entry_id}", headers={"Authorization": f"Bearer {ADMIN_SECRET}"})
    assert r.status_code == 200


async def test_content_types_and_locales_routes(blog) -> None:
    d = await blog.reader()
    types = (await d.get("/api/v1/content-types")).json()["data"]
    assert {t["id"] for t in types} == {"article", "author", "tag"}
    assert (await d.get("/api/v1/content-types/article")).json()["data"]["display_field"] == "title"
    assert (await d.get("/api/v1/content-types/zzz")).status_code == 404
    locales = (await d.get("/api/v1/locales")).json()["data"]
    assert locales[0]["code"] == "en" and locales[0]["default"] is True
    assert (await d.get("/api/v1/entries/article?locale=xx")).status_code == 400


async def test_cdn_serves_objects_and_refuses_traversal(blog) -> None:
    root = blog.settings.objects_dir
    (root / "entries" / "article").mkdir(parents=True)
    (root / "entries" / "article" / "x.json").write_bytes(b'{"data":1}')
    (root.parent / "secret.txt").write_text("nope")
    d = blog.delivery
    r = await d.get("/cdn/entries/article/x.json")
    assert r.status_code == 200 and r.content == b'{"data":1}'
    assert r.headers["content-type"].startswith("application/json")
    for bad in ("/cdn/../secret.txt", "/cdn/%2e%2e/secret.txt", "/cdn/entries/..%2f..%2fsecret.txt", "/cdn/.meta/x"):
        r = await d.get(bad)
        assert r.status_code == 404, bad


async def test_content_type_restricted_keys(blog) -> None:
    await _seed(blog, 1)
    key = await blog.key("delivery", content_types=["author"])
    d = blog.delivery
    headers = {"Authorization": f"Bearer {key}"}
    assert (await d.get("/api/v1/entries/author", headers=headers)).status_code == 200
    assert (await d.get("/api/v1/entries/article", headers=headers)).status_code == 403


async def test_cached_answers_keep_every_rule(blog) -> None:
    """The hot path serves cache hits before the full app: same bytes and headers, same refusals."""
    seeded = await _seed(blog, 1)
    m = blog.management
    d = blog.delivery
    r = await m.post("/v1/keys", json={"name": "k", "kind": "delivery"})
    key = r.json()["data"]
    auth = {"Authorization": f"Bearer {key['secret']}"}
    url = f"/api/v1/entries/article/{seeded['articles'][0]}?include=author"
    first = await d.get(url, headers=auth)
    cache = blog.delivery_app.state.cache
    hits = cache.hits
    second = await d.get(url, headers={"X-API-Key": key["secret"]})
    assert cache.hits == hits  # not through the full app's get(): answered by the fast path's peek()
    assert second.content == first.content
    for header in ("etag", "cache-control", "surrogate-key", "cache-tag", "content-type"):
        assert second.headers[header] == first.headers[header], header
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert (await d.get(url, headers={**auth, "If-None-Match": first.headers["etag"]})).status_code == 304
    # no credential, a wrong one, a restricted one: refused although the answer is cached
    assert (await d.get(url)).status_code == 401
    assert (await d.get(url, headers={"Authorization": "Bearer cms_dk_wrong"})).status_code == 401
    limited = await blog.key("delivery", content_types=["author"])
    assert (await d.get(url, headers={"Authorization": f"Bearer {limited}"})).status_code == 403
    management = await blog.key("management", scopes=["content:read"])
    assert (await d.get(url, headers={"Authorization": f"Bearer {management}"})).status_code == 401
    # revoked: refused at once, cache or not
    assert (await m.delete(f"/v1/keys/{key['id']}")).status_code == 204

    async def refused() -> None:
        assert (await d.get(url, headers=auth)).status_code == 401

    await eventually(refused, timeout=1.0)


async def test_preview_list_reads_the_drafts_assets_in_one_query(blog) -> None:
    """Drafts are rendered on the fly; their assets come from one query for the page, not one per draft."""
    from cms.app.db.pool import connect

    m = blog.management
    body = {"name": "Gallery", "fields": [{"id": "title", "type": "text"}, {"id": "image", "type": "asset"}]}
    assert (await m.put("/v1/content-types/gallery", json=body)).status_code == 201
    conn = await connect(blog.database_url)
    try:
        await conn.execute(
            "INSERT INTO assets (id, filename, content_type, size, sha256, alt) "
            "SELECT 'img' || i, 'img' || i || '.png', 'image/png', 100 + i, repeat('0', 64), 'Image ' || i "
            "FROM generate_series(0, 9) AS i"
        )
    finally:
        await conn.close()
    for i in range(10):
        r = await m.post("/v1/entries/gallery", json={"fields": {"title": f"G{i}", "image": {"id": f"img{i}"}}})
        assert r.status_code == 201, r.text
    d = blog.delivery
    headers = {"Authorization": f"Bearer {await blog.key('preview')}"}
    await d.get("/preview/v1/entries/gallery?limit=1", headers=headers)  # warm up: key lookup, types

    async def count(limit: int) -> tuple[int, dict]:
        log: list[str] = []
        token = QUERY_LOG.set(log)
        try:
            r = await d.get(f"/preview/v1/entries/gallery?limit={limit}&sort=title", headers=headers)
        finally:
            QUERY_LOG.reset(token)
        assert r.status_code == 200, r.text
        return len(log), r.json()

    small, _ = await count(2)
    large, page = await count(10)
    assert small == large, (small, large)
    images = {e["fields"]["title"]: e["fields"]["image"] for e in page["data"]}
    assert len(images) == 10 and images["G3"]["id"] == "img3" and images["G3"]["alt"] == "Image 3"
