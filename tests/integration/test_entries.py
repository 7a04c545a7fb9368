"""Entries over the management API: writes, validation, publishing, versions, preconditions."""

from __future__ import annotations

import asyncio

import asyncpg

from cms.app.db.pool import QUERY_LOG


async def _author(m, name: str = "Ada", publish: bool = True) -> str:
    r = await m.post("/v1/entries/author", json={"fields": {"name": name}})
    assert r.status_code == 201, r.text
    author_id = r.json()["data"]["id"]
    if publish:
        assert (await m.post(f"/v1/entries/author/{author_id}/publish")).status_code == 200
    return author_id


async def _outbox(apps) -> list[tuple[str, dict]]:
    conn = await asyncpg.connect(apps.database_url)
    try:
        rows = await conn.fetch("SELECT type, payload::text FROM outbox_events ORDER BY seq")
    finally:
        await conn.close()
    import json

    return [(r["type"], json.loads(r["payload"])) for r in rows]


async def test_create_shape_etag_location_and_outbox(blog) -> None:
    m = blog.management
    r = await m.post("/v1/entries/article", json={"fields": {"title": "Hello", "rank": 2}})
    assert r.status_code == 201
    entry = r.json()["data"]
    assert r.headers["etag"] == '"1"' and r.headers["location"] == f"/v1/entries/article/{entry['id']}"
    assert entry["version"] == 1 and entry["status"] == "draft" and entry["published_version"] is None
    assert entry["locale"] == "en" and entry["type"] == "article"
    assert entry["fields"] == {"title": "Hello", "slug": "hello", "body": None, "rank": 2, "author": None, "tags": []}
    assert entry["created_at"].endswith("Z")
    events = await _outbox(blog)
    assert events[-1][0] == "entry.created" and events[-1][1]["id"] == entry["id"]


async def test_validation_errors_have_pointers_and_store_nothing(blog) -> None:
    m = blog.management
    r = await m.post("/v1/entries/article", json={"fields": {
        "title": 5, "rank": "high", "nope": 1, "author": {"id": "x", "type": "tag"}, "tags": {"id": "t"},
    }})
    assert r.status_code == 422
    pointers = {e["pointer"] for e in r.json()["errors"]}
    assert pointers == {"/fields/title", "/fields/rank", "/fields/nope", "/fields/author/type", "/fields/tags"}
    r = await m.post("/v1/entries/article", json={"fields": {"title": "x" * 201}})
    assert r.status_code == 422 and r.json()["errors"][0]["detail"] == "must be at most 200 characters"
    listing = (await m.get("/v1/entries/article")).json()
    assert listing["meta"]["total"] == 0


async def test_put_upsert_with_client_id_and_replace_semantics(blog) -> None:
    m = blog.management
    r = await m.put("/v1/entries/article/my-id", json={"fields": {"title": "One", "rank": 1}})
    assert r.status_code == 201 and r.json()["data"]["id"] == "my-id"
    r = await m.put("/v1/entries/article/my-id", json={"fields": {"title": "Two"}})
    assert r.status_code == 200
    data = r.json()["data"]
    assert data["version"] == 2 and data["fields"]["rank"] is None and data["fields"]["title"] == "Two"
    # The same content again is not a new version.
    r = await m.put("/v1/entries/article/my-id", json={"fields": {"title": "Two", "slug": "two"}})
    assert r.json()["data"]["version"] == 2
    assert (await m.put("/v1/entries/author/my-id", json={"fields": {"name": "x"}})).status_code == 409
    assert (await m.put("/v1/entries/article/bad%20id", json={"fields": {}})).status_code in (404, 422)


async def test_patch_merges_and_null_clears(blog) -> None:
    m = blog.management
    r = await m.post("/v1/entries/article", json={"fields": {"title": "T", "rank": 4, "body": "text"}})
    entry_id = r.json()["data"]["id"]
    r = await m.patch(
        f"/v1/entries/article/{entry_id}", json={"fields": {"rank": None, "body": "new"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    fields = r.json()["data"]["fields"]
    assert fields["rank"] is None and fields["body"] == "new" and fields["title"] == "T"
    assert r.json()["data"]["version"] == 2


async def test_localized_fields_and_locale_star(blog) -> None:
    m = blog.management
    await m.put("/v1/locales/de", json={"name": "Deutsch", "fallback": "en"})
    r = await m.post("/v1/entries/article", json={"fields": {"title": "Hello", "rank": 1}})
    entry_id = r.json()["data"]["id"]
    r = await m.patch(f"/v1/entries/article/{entry_id}?locale=de", json={"fields": {"title": "Hallo", "rank": 2}})
    assert r.status_code == 200
    star = (await m.get(f"/v1/entries/article/{entry_id}?locale=*")).json()["data"]["fields"]
    assert star["title"] == {"en": "Hello", "de": "Hallo"}
    assert star["rank"] == {"en": 2}  # non-localized: shared, keyed by the default locale
    assert (await m.get(f"/v1/entries/article/{entry_id}?locale=xx")).status_code == 400
    await m.post(f"/v1/entries/article/{entry_id}/publish")
    reader = await blog.reader()
    de = (await reader.get(f"/api/v1/entries/article/{entry_id}?locale=de")).json()["data"]
    assert de["fields"]["title"] == "Hallo" and de["locale"] == "de"
    # A locale without its own value falls back along the chain.
    await m.put("/v1/locales/de-CH", json={"name": "Schweiz", "fallback": "de"})
    ch = (await reader.get(f"/api/v1/entries/article/{entry_id}?locale=de-CH")).json()["data"]
    assert ch["fields"]["title"] == "Hallo"


async def test_slugs_generated_transliterated_and_unique(blog) -> None:
    m = blog.management
    slugs = []
    for _ in range(3):
        r = await m.post("/v1/entries/article", json={"fields": {"title": "Déjà Vu, Again!"}})
        slugs.append(r.json()["data"]["fields"]["slug"])
    assert slugs == ["deja-vu-again", "deja-vu-again-2", "deja-vu-again-3"]
    r = await m.post("/v1/entries/article", json={"fields": {"title": "x", "slug": "deja-vu-again"}})
    assert r.status_code == 409 and r.json()["errors"][0]["pointer"] == "/fields/slug"
    r = await m.post("/v1/entries/article", json={"fields": {"title": "x", "slug": "Not A Slug"}})
    assert r.status_code == 422


async def test_a_write_that_keeps_the_unique_values_leaves_their_rows_alone(blog, db) -> None:
    """Unique values are checked and registered again only when a write changes them."""
    m = blog.management
    first = (await m.post("/v1/entries/article", json={"fields": {"title": "Kept"}})).json()["data"]["id"]
    other = (await m.post("/v1/entries/article", json={"fields": {"title": "Other"}})).json()["data"]["id"]

    async def statements(entry_id: str, fields: dict) -> list[str]:
        log: list[str] = []
        token = QUERY_LOG.set(log)
        try:
            r = await m.patch(f"/v1/entries/article/{entry_id}", json={"fields": fields})
        finally:
            QUERY_LOG.reset(token)
        assert r.status_code == 200, r.text
        return [q for q in log if "entry_unique_values" in q]

    # the slug stays "kept": only the registered values are read
    assert await statements(first, {"title": "Kept, retitled"}) == [
        "SELECT field, locale, value FROM entry_unique_values WHERE entry_id = $1"]
    assert await statements(first, {"slug": "moved"})  # checked and registered again
    r = await m.patch(f"/v1/entries/article/{other}", json={"fields": {"slug": "moved"}})
    assert r.status_code == 409 and r.json()["errors"][0]["pointer"] == "/fields/slug"
    assert await db.fetch("SELECT value FROM entry_unique_values WHERE entry_id = $1", first) == [("moved",)]
    r = await m.patch(f"/v1/entries/article/{other}", json={"fields": {"slug": "kept"}})  # free again
    assert r.status_code == 200


async def test_a_write_after_a_localized_flip_registers_the_unique_values_anew(blog) -> None:
    """A schema change that makes a unique field localized reshapes the entries' data; the next
    write of an entry registers its values in their new shape, so another entry cannot take them
    (review: comparing with the entry's previous data skipped that)."""
    from tests.support import ARTICLE

    m = blog.management
    first = (await m.post("/v1/entries/article", json={"fields": {"title": "Hello"}})).json()["data"]["id"]
    fields = [dict(f, localized=True) if f["id"] == "slug" else f for f in ARTICLE["fields"]]
    assert (await m.put("/v1/content-types/article", json={**ARTICLE, "fields": fields})).status_code == 200
    assert (await m.patch(f"/v1/entries/article/{first}", json={"fields": {"title": "Hello again"}})).status_code == 200
    r = await m.post("/v1/entries/article", json={"fields": {"title": "Other", "slug": "hello"}})
    assert r.status_code == 409 and r.json()["errors"][0]["pointer"] == "/fields/slug"


async def test_a_localized_flip_of_a_unique_field_registers_its_values_in_the_new_shape(apps) -> None:
    """The values move between `_` and the default locale: registered so at once (no write of the
    entries needed), and a flip that would make two entries share a value is refused."""
    m = apps.management

    def thing(localized: bool) -> dict:
        return {"name": "Thing", "fields": [{"id": "code", "type": "text", "unique": True, "localized": localized}]}

    assert (await m.put("/v1/content-types/thing", json=thing(False))).status_code == 201
    assert (await m.put("/v1/locales/de", json={"name": "German"})).status_code in (200, 201)
    await m.put("/v1/entries/thing/a", json={"fields": {"code": "x"}})
    assert (await m.put("/v1/content-types/thing", json=thing(True))).status_code == 200
    r = await m.put("/v1/entries/thing/b", json={"fields": {"code": "x"}})  # en, as a's value now is
    assert r.status_code == 409 and r.json()["errors"][0]["pointer"] == "/fields/code", r.text
    await m.put("/v1/entries/thing/b", json={"fields": {"code": "y"}})
    assert (await m.put("/v1/entries/thing/c?locale=de", json={"fields": {"code": "x"}})).status_code == 201
    # back to one value per entry: c's only value (de) would become "x" beside a's
    r = await m.put("/v1/content-types/thing", json=thing(False))
    assert r.status_code == 409 and r.json()["errors"][0]["pointer"] == "/fields/0/localized", r.text
    assert r.json()["blocking_entries"] == 2
    await m.delete("/v1/entries/thing/c")
    assert (await m.put("/v1/content-types/thing", json=thing(False))).status_code == 200
    r = await m.put("/v1/entries/thing/d", json={"fields": {"code": "y"}})
    assert r.status_code == 409, r.text


async def test_concurrent_writes_of_one_slug_leave_one_winner(blog) -> None:
    m = blog.management
    results = await asyncio.gather(*[
        m.post("/v1/entries/article", json={"fields": {"title": "Race", "slug": "race"}}) for _ in range(6)
    ])
    codes = sorted(r.status_code for r in results)
    assert codes.count(201) == 1 and set(codes) <= {201, 409}
    assert (await m.get("/v1/entries/article")).json()["meta"]["total"] == 1


async def test_publish_checks_required_and_references(blog) -> None:
    m = blog.management
    r = await m.post("/v1/entries/article", json={"fields": {"rank": 1, "author": {"id": "ghost"}}})
    entry_id = r.json()["data"]["id"]
    r = await m.post(f"/v1/entries/article/{entry_id}/publish")
    assert r.status_code == 422
    assert {e["pointer"] for e in r.json()["errors"]} == {"/fields/title", "/fields/author"}
    author = await _author(m, publish=False)  # referenced entries need not be published
    r = await m.patch(f"/v1/entries/article/{entry_id}", json={"fields": {"title": "ok", "author": {"id": author}}})
    r = await m.post(f"/v1/entries/article/{entry_id}/publish")
    assert r.status_code == 200
    data = r.json()["data"]
    assert data["status"] == "published" and data["published_version"] == data["version"] == 2
    assert data["first_published_at"] is not None
    await m.patch(f"/v1/entries/article/{entry_id}", json={"fields": {"rank": 9}})
    r = await m.get(f"/v1/entries/article/{entry_id}")
    assert r.json()["data"]["status"] == "changed" and r.json()["data"]["published_version"] == 2
    statuses = {s: (await m.get(f"/v1/entries/article?status={s}")).json()["meta"]["total"]
                for s in ("draft", "published", "changed")}
    assert statuses == {"draft": 0, "published": 0, "changed": 1}
    assert [e[0] for e in await _outbox(blog)][-2:] == ["entry.published", "entry.updated"]


async def test_unpublish_and_delete_rules(blog) -> None:
    m = blog.management
    reader = await blog.reader()
    author = await _author(m)
    assert (await reader.get(f"/api/v1/entries/author/{author}")).status_code == 200
    r = await m.delete(f"/v1/entries/author/{author}")
    assert r.status_code == 409
    r = await m.post(f"/v1/entries/author/{author}/unpublish")
    assert r.status_code == 200 and r.json()["data"]["status"] == "draft"

    async def gone() -> None:
        assert (await reader.get(f"/api/v1/entries/author/{author}")).status_code == 404

    from tests.support import eventually

    await eventually(gone)
    assert (await m.delete(f"/v1/entries/author/{author}")).status_code == 204
    assert (await m.get(f"/v1/entries/author/{author}")).status_code == 404
    other = await _author(m, "Bob")
    assert (await m.delete(f"/v1/entries/author/{other}?force=true")).status_code == 204
    assert [e[0] for e in await _outbox(blog)][-1] == "entry.deleted"


async def test_published_copy_is_stored_only_while_the_draft_differs(blog) -> None:
    """An entry published as it is stores its content once (published_data NULL); editing the draft
    keeps the published content, which delivery and the management API go on showing."""
    m = blog.management
    reader = await blog.reader()
    author = await _author(m, "Ada")
    conn = await asyncpg.connect(blog.database_url)
    try:
        async def stored() -> tuple[object, object]:
            row = await conn.fetchrow("SELECT data::text, published_data::text FROM entries WHERE id = $1", author)
            return row[0], row[1]

        data, published = await stored()
        assert "Ada" in data and published is None
        r = await m.patch(f"/v1/entries/author/{author}", json={"fields": {"name": "Ada L."}})
        assert r.status_code == 200, r.text
        data, published = await stored()
        assert "Ada L." in data and published is not None and "Ada L." not in published and "Ada" in published
        r = await m.patch(f"/v1/entries/author/{author}", json={"fields": {"name": "Ada Lovelace"}})
        assert r.status_code == 200, r.text
        assert "Ada L." not in (await stored())[1]  # still the published content, not the previous draft
        served = (await reader.get(f"/api/v1/entries/author/{author}")).json()["data"]["fields"]
        assert served["name"] == "Ada"
        r = await m.post(f"/v1/entries/author/{author}/publish")
        assert r.status_code == 200, r.text
        data, published = await stored()
        assert "Ada Lovelace" in data and published is None
        r = await m.post(f"/v1/entries/author/{author}/unpublish")
        assert r.status_code == 200 and r.json()["data"]["status"] == "draft"
        assert await conn.fetchval(
            "SELECT published_data IS NULL AND published_version IS NULL FROM entries WHERE id = $1", author)
    finally:
        await conn.close()
    r = await m.patch(f"/v1/entries/author/{author}", json={"fields": {"name": "Ada K."}})
    assert r.status_code == 200 and r.json()["data"]["status"] == "draft", r.text


async def test_if_match_stale_version_is_412_and_changes_nothing(blog) -> None:
    m = blog.management
    r = await m.post("/v1/entries/article", json={"fields": {"title": "v1"}})
    entry_id = r.json()["data"]["id"]
    r = await m.put(f"/v1/entries/article/{entry_id}", json={"fields": {"title": "v2"}}, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.headers["etag"] == '"2"'
    for method, path in (
        ("PUT", f"/v1/entries/article/{entry_id}"), ("PATCH", f"/v1/entries/article/{entry_id}"),
        ("POST", f"/v1/entries/article/{entry_id}/publish"), ("DELETE", f"/v1/entries/article/{entry_id}"),
    ):
        body = {"fields": {"title": "stale"}} if method in ("PUT", "PATCH") else None
        r = await m.request(method, path, json=body, headers={"If-Match": '"1"'})
        assert r.status_code == 412, (method, r.text)
        assert r.json()["type"] == "urn:cms:problem:precondition-failed"
    entry = (await m.get(f"/v1/entries/article/{entry_id}")).json()["data"]
    assert entry["fields"]["title"] == "v2" and entry["status"] == "draft"


async def test_versions_list_get_restore(blog) -> None:
    m = blog.management
    r = await m.post("/v1/entries/article", json={"fields": {"title": "first"}})
    entry_id = r.json()["data"]["id"]
    await m.patch(f"/v1/entries/article/{entry_id}", json={"fields": {"title": "second"}})
    versions = (await m.get(f"/v1/entries/article/{entry_id}/versions")).json()
    assert [v["version"] for v in versions["data"]] == [2, 1]
    assert versions["data"][1]["action"] == "create" and versions["data"][0]["actor"]["kind"] == "key"
    v1 = (await m.get(f"/v1/entries/article/{entry_id}/versions/1")).json()["data"]
    assert v1["fields"]["title"] == {"en": "first"}
    r = await m.post(f"/v1/entries/article/{entry_id}/versions/1/restore")
    assert r.status_code == 200
    assert r.json()["data"]["version"] == 3 and r.json()["data"]["fields"]["title"] == "first"
    assert (await m.get(f"/v1/entries/article/{entry_id}/versions/99")).status_code == 404


async def test_management_list_filters_sort_and_paging(blog) -> None:
    m = blog.management
    for i in range(5):
        await m.post("/v1/entries/article", json={"fields": {"title": f"T{i}", "rank": i}})
    r = await m.get("/v1/entries/article?filter[rank][gte]=2&sort=rank&limit=2")
    body = r.json()
    assert [e["fields"]["rank"] for e in body["data"]] == [2, 3] and body["meta"]["total"] == 3
    r = await m.get(f"/v1/entries/article?filter[rank][gte]=2&sort=rank&limit=2&cursor={body['meta']['next_cursor']}")
    assert [e["fields"]["rank"] for e in r.json()["data"]] == [4] and r.json()["meta"]["next_cursor"] is None


async def test_concurrent_puts_of_a_new_id_create_once_and_replace(blog) -> None:
    m = blog.management
    results = await asyncio.gather(*[
        m.put("/v1/entries/article/same-id", json={"fields": {"title": f"T{i}"}}) for i in range(5)
    ])
    codes = sorted(r.status_code for r in results)
    assert codes.count(201) == 1 and set(codes) <= {200, 201}, [r.text for r in results]
    entry = (await m.get("/v1/entries/article/same-id")).json()["data"]
    assert entry["fields"]["title"] in {f"T{i}" for i in range(5)}
    versions = (await m.get("/v1/entries/article/same-id/versions")).json()["meta"]["total"]
    assert versions == entry["version"]


async def test_writes_reuse_the_type_and_locales_until_the_schema_changes(blog) -> None:
    """PATCH and publish read the content type and the locales only when the schema version read
    with the locked entry moved (migration 0026): a constant, smaller number of round trips, and a
    schema change (a new field, a new locale) is seen by the very next write."""
    m = blog.management
    author = await _author(m)
    r = await m.post("/v1/entries/article", json={"fields": {"title": "Counted", "rank": 1, "author": {"id": author}}})
    assert r.status_code == 201, r.text
    article = r.json()["data"]["id"]

    async def run(call):
        log: list[str] = []
        token = QUERY_LOG.set(log)
        try:
            r = await call()
        finally:
            QUERY_LOG.reset(token)
        assert r.status_code == 200, r.text
        return log

    def schema_reads(log: list[str]) -> list[str]:
        return [q for q in log if "FROM content_types" in q or "FROM locales" in q]

    await run(lambda: m.patch(f"/v1/entries/article/{article}", json={"fields": {"title": "Warm"}}))
    patch = await run(lambda: m.patch(f"/v1/entries/article/{article}", json={"fields": {"title": "Again"}}))
    publish = await run(lambda: m.post(f"/v1/entries/article/{article}/publish"))
    assert schema_reads(patch) == [] and schema_reads(publish) == [], (patch, publish)
    # BEGIN, the schema lock, the locked entry, unique values, update, version, audit+outbox, COMMIT
    assert len(patch) == 8, patch
    # BEGIN, lock, entry, the references' check, mark, documents, references, audit+outbox, COMMIT
    assert len(publish) == 9, publish

    # A new field: the next write knows it (a stale type would answer 422 for an unknown field).
    r = await m.get("/v1/content-types/article")
    body = r.json()["data"]
    fields = [*body["fields"], {"id": "subtitle", "type": "text"}]
    r = await m.put("/v1/content-types/article", json={"name": body["name"], "display_field": "title", "fields": fields},
                    headers={"If-Match": r.headers["ETag"]})
    assert r.status_code == 200, r.text
    log = await run(lambda: m.patch(f"/v1/entries/article/{article}", json={"fields": {"subtitle": "New"}}))
    assert schema_reads(log), log
    assert (await m.get(f"/v1/entries/article/{article}")).json()["data"]["fields"]["subtitle"] == "New"
    # A new locale, the same.
    assert (await m.put("/v1/locales/fr", json={"name": "Français", "fallback": "en"})).status_code == 201
    log = await run(lambda: m.patch(f"/v1/entries/article/{article}?locale=fr", json={"fields": {"title": "Bonjour"}}))
    assert schema_reads(log), log


def test_write_schemas_are_kept_per_database_and_version() -> None:
    """Databases cloned from one template share their first schema version: the key is the
    database too; a new version replaces the old parse; the number of databases is bounded."""
    import uuid

    from cms.app.entries.service import WriteSchemas
    from cms.app.schema.model import Locales

    class Type:
        def __init__(self, type_id: str) -> None:
            self.id = type_id

    schemas = WriteSchemas()
    first, second = uuid.uuid4(), uuid.uuid4()
    en, de = Locales({"en": {}}, "en"), Locales({"de": {}}, "de")
    schemas.put(1, first, Type("article"), en)  # type: ignore[arg-type]
    assert schemas.get(1, first, "article")[1] is en  # type: ignore[index]
    assert schemas.get(2, first, "article") is None  # another database, the same version
    assert schemas.get(1, second, "article") is None and schemas.get(1, first, "author") is None
    schemas.put(1, second, Type("article"), de)  # type: ignore[arg-type]
    assert schemas.get(1, first, "article") is None and schemas.get(1, second, "article")[1] is de  # type: ignore[index]
    for database in range(2, 2 + WriteSchemas.MAX_DATABASES):
        schemas.put(database, first, Type("article"), en)  # type: ignore[arg-type]
    assert len(schemas._by_database) == WriteSchemas.MAX_DATABASES and schemas.get(1, second, "article") is None
