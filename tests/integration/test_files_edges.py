"""Prerendered files at the edges: a deleted and recreated id, an id that names the index file, an
index left to a step that then fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cms.app.db.pool import connect, create_pool
from cms.app.publishing.files import Changes, Publisher, republish_all
from cms.storage.objects import LocalObjectStore
from tests.support import Apps


async def _deliver(apps: Apps, publisher: Publisher, *entries: tuple[str, str], later: set[str] = frozenset()) -> Changes:
    """What deliver steps for these (id, type) do, in one run; `later`: types whose index another
    pending step will write."""
    changes = Changes()
    conn = await connect(apps.database_url)
    try:
        payloads = [{"id": entry_id, "type": type_id, "locales": ["en"]} for entry_id, type_id in entries]

        async def left_to_later(type_id: str) -> bool:
            return type_id in later

        await publisher.deliver(conn, payloads, changes, left_to_later)
    finally:
        await conn.close()
    return changes


def _store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


async def test_a_deleted_and_recreated_id_reaches_the_files(blog: Apps, tmp_path: Path) -> None:
    """v4 of `same` is on the store; it is deleted and a new `same` (v1) published before any step
    ran: the new entry's files replace the old ones (the version guard compares render numbers,
    which never go back), and `cms republish` would have repaired it too."""
    m = blog.management
    store = _store(tmp_path)
    publisher = Publisher(store, blog.settings)
    assert (await m.put("/v1/entries/article/same", json={"fields": {"title": "Old 1"}})).status_code == 201
    for i in range(2, 5):
        assert (await m.patch("/v1/entries/article/same", json={"fields": {"title": f"Old {i}"}})).status_code == 200
    assert (await m.post("/v1/entries/article/same/publish")).json()["data"]["published_version"] == 4
    await _deliver(blog, publisher, ("same", "article"))
    old = store.get("entries/article/en/same.json")
    assert old is not None and json.loads(old.body)["data"]["fields"]["title"] == "Old 4"

    assert (await m.delete("/v1/entries/article/same?force=true")).status_code == 204
    assert (await m.put("/v1/entries/article/same", json={"fields": {"title": "New"}})).status_code == 201
    assert (await m.post("/v1/entries/article/same/publish")).json()["data"]["published_version"] == 1
    await _deliver(blog, publisher, ("same", "article"), ("same", "article"))  # the delete's and the publish's
    for key in ("entries/article/en/same.json", "entries/article/en/by-slug/new.json"):
        stored = store.get(key)
        assert stored is not None and json.loads(stored.body)["data"]["fields"]["title"] == "New", key
        assert stored.version is not None and stored.version > old.version
    assert store.get("entries/article/en/by-slug/old-4.json") is None
    index = json.loads(store.get("entries/article/en/index.json").body)  # type: ignore[union-attr]
    assert [e["fields"]["title"] for e in index["data"]] == ["New"]

    # republish repairs a store left with the old file (as a failed step would have left it)
    store.put("entries/article/en/same.json", old.body, content_type="application/json", cache_control="x",
              surrogate_keys=["entry:same"], version=old.version)
    pool = await create_pool(blog.database_url, max_size=2)
    try:
        await republish_all(pool, Publisher(store, blog.settings, only_changed=True))
    finally:
        await pool.close()
    assert json.loads(store.get("entries/article/en/same.json").body)["data"]["fields"]["title"] == "New"  # type: ignore[union-attr]


async def test_an_id_that_names_the_index_file_is_refused_and_never_touches_it(blog: Apps, tmp_path: Path) -> None:
    m = blog.management
    for entry_id in ("index", "INDEX", "Index"):
        r = await m.put(f"/v1/entries/article/{entry_id}", json={"fields": {"title": "x"}})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/id", r.text
    for atomic in (True, False):
        r = await m.post("/v1/bulk", json={"atomic": atomic, "actions": [
            {"op": "upsert", "type": "article", "id": "index", "fields": {"title": "x"}}]})
        if atomic:
            assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/actions/0/id", r.text
        else:
            assert r.json()["data"]["results"][0]["status"] == 422
    assert (await m.get("/v1/entries/article/index")).status_code == 404
    # an entry with that id from before the rule (written directly) still never touches index.json
    store = _store(tmp_path)
    publisher = Publisher(store, blog.settings)
    other = (await m.post("/v1/entries/article", json={"fields": {"title": "Other"}})).json()["data"]["id"]
    assert (await m.post(f"/v1/entries/article/{other}/publish")).status_code == 200
    conn = await connect(blog.database_url)
    try:
        await conn.execute("INSERT INTO entries (id, type, data, version) VALUES ('index', 'article', "
                           "'{\"title\": {\"en\": \"Legacy\"}}', 1)")
    finally:
        await conn.close()
    assert (await m.post("/v1/entries/article/index/publish")).status_code == 200
    await _deliver(blog, publisher, (other, "article"), ("index", "article"))
    index = json.loads(store.get("entries/article/en/index.json").body)  # type: ignore[union-attr]
    assert "meta" in index and {e["id"] for e in index["data"]} == {other, "index"}
    assert (await m.delete("/v1/entries/article/index?force=true")).status_code == 204
    await _deliver(blog, publisher, ("index", "article"))
    index = json.loads(store.get("entries/article/en/index.json").body)  # type: ignore[union-attr]
    assert "meta" in index and [e["id"] for e in index["data"]] == [other]


class _FailingStore(LocalObjectStore):
    """The local store, except that writing one key always fails (a poison entry, a broken path)."""

    def __init__(self, root: Path, poison: str) -> None:
        super().__init__(root)
        self.poison = poison

    def put_copies(self, keys: list[str], body: bytes, **kwargs: Any) -> list[bool]:  # (put is one key of it)
        if self.poison in keys:
            raise OSError(f"cannot write {self.poison}")
        return super().put_copies(keys, body, **kwargs)


async def test_an_index_left_to_a_failing_step_is_still_written(blog: Apps, tmp_path: Path) -> None:
    """Step A leaves the index to step B (pending); B's own entry file cannot be written, for good.
    B still writes the index, so A's entry is in it."""
    m = blog.management
    ids = []
    for title in ("First", "Second"):
        entry_id = (await m.post("/v1/entries/article", json={"fields": {"title": title}})).json()["data"]["id"]
        assert (await m.post(f"/v1/entries/article/{entry_id}/publish")).status_code == 200
        ids.append(entry_id)
    store = _FailingStore(tmp_path / "objects", f"entries/article/en/{ids[1]}.json")
    publisher = Publisher(store, blog.settings)
    await _deliver(blog, publisher, (ids[0], "article"), later={"article"})
    assert store.get("entries/article/en/index.json") is None  # left to B
    for _attempt in range(3):
        try:
            await _deliver(blog, publisher, (ids[1], "article"))
        except OSError:
            pass
        else:
            raise AssertionError("B's entry file should fail")
    index = json.loads(store.get("entries/article/en/index.json").body)  # type: ignore[union-attr]
    assert {e["id"] for e in index["data"]} == set(ids)



async def test_an_entry_files_metadata_names_its_slug_and_older_files_are_read(blog: Apps, tmp_path: Path) -> None:
    """The next write of an entry learns the slug it was indexed under from its file's metadata (no
    read of the old body); a file written before that metadata existed is read instead. Either way
    the by-slug file of a slug the entry gave up goes."""
    m = blog.management
    store = _store(tmp_path)
    publisher = Publisher(store, blog.settings)
    key = "entries/article/en/s1.json"

    async def publish(title: str) -> None:
        assert (await m.put("/v1/entries/article/s1", json={"fields": {"title": title}})).status_code in (200, 201)
        assert (await m.post("/v1/entries/article/s1/publish")).status_code == 200
        await _deliver(blog, publisher, ("s1", "article"))

    await publish("First")
    assert store.head(key)["cms-slug"] == "first"  # type: ignore[index]
    assert store.get("entries/article/en/by-slug/first.json") is not None

    # a file from before the metadata: its body tells the old slug
    old = store.get(key)
    assert old is not None
    store.put(key, old.body, content_type="application/json", cache_control=old.cache_control,
              surrogate_keys=old.surrogate_keys, version=old.version)
    assert "cms-slug" not in store.head(key)  # type: ignore[operator]
    pool = await create_pool(blog.database_url, max_size=2)
    try:  # republish gives such a file the metadata, though its bytes are right
        await republish_all(pool, Publisher(store, blog.settings, only_changed=True))
    finally:
        await pool.close()
    assert store.head(key)["cms-slug"] == "first" and store.get(key).body == old.body  # type: ignore[index,union-attr]
    store.put(key, old.body, content_type="application/json", cache_control=old.cache_control,
              surrogate_keys=old.surrogate_keys, version=old.version)
    await publish("Second")
    assert store.get("entries/article/en/by-slug/first.json") is None
    assert store.get("entries/article/en/by-slug/second.json") is not None
    assert store.head(key)["cms-slug"] == "second"  # type: ignore[index]

    # the metadata is what is read: a slug only the metadata names is the one given up
    current = store.get(key)
    assert current is not None
    for k in (key, "entries/article/en/by-slug/ghost.json"):
        store.put(k, current.body, content_type="application/json", cache_control=current.cache_control,
                  surrogate_keys=current.surrogate_keys, version=current.version, metadata={"cms-slug": "ghost"})
    await publish("Third")
    assert store.get("entries/article/en/by-slug/ghost.json") is None
    assert store.head(key)["cms-slug"] == "third"  # type: ignore[index]
    assert json.loads(store.get("entries/article/en/by-slug/third.json").body)["data"]["id"] == "s1"  # type: ignore[union-attr]

    # unpublished: its files go (the existence check is the metadata's too)
    assert (await m.post("/v1/entries/article/s1/unpublish")).status_code == 200
    await _deliver(blog, publisher, ("s1", "article"))
    assert store.head(key) is None and store.get("entries/article/en/by-slug/third.json") is None
    # a type without a slug field: its entry files say so
    assert (await m.put("/v1/entries/author/au1", json={"fields": {"name": "Ann"}})).status_code == 201
    assert (await m.post("/v1/entries/author/au1/publish")).status_code == 200
    await _deliver(blog, publisher, ("au1", "author"))
    assert store.head("entries/author/en/au1.json")["cms-slug"] == "-"  # type: ignore[index]
