"""Online schema changes (issue 13): a content type or locale change commits without touching the
entries; the workers bring entries, documents, files and indexes to the new shape in resumable
batches (app/schema/rerenders.py), with progress on GET /v1/content-types/{id} and an event at
the end. CMS_SCHEMA_INLINE_ENTRIES=0 sends every change to the background, as on a big site."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest

from cms.app.db import locks
from cms.app.entries.repository import PUBLISHED_DATA
from cms.storage.objects import LocalObjectStore
from cms.workers import main as worker_main
from tests.integration.test_pipeline import Enqueued, api, new_entry, settle
from tests.support import ARTICLE, AUTHOR, TAG, Hosts, eventually, fast_config

BACKGROUND = {"CMS_SCHEMA_INLINE_ENTRIES": "0"}
ENTRIES = 23  # with batches of 7: four batches of the type's entries


async def _blog(site: Any) -> None:
    for type_id, body in (("author", AUTHOR), ("tag", TAG), ("article", ARTICLE)):
        r = await site.management.put(f"/v1/content-types/{type_id}", json=body)
        assert r.status_code == 201, r.text


def _without(body: dict[str, Any], field_id: str, *extra: dict[str, Any]) -> dict[str, Any]:
    return {**body, "fields": [f for f in body["fields"] if f["id"] != field_id] + list(extra)}


async def test_a_change_commits_at_once_and_the_workers_apply_it_in_batches(
    apps_with: Any, hosts: Hosts, db: asyncpg.Pool,
) -> None:
    async with apps_with(**BACKGROUND) as site:
        await _blog(site)
        # New types have nothing to re-render: their background work starts at its finish, so it
        # never rewrites the entries written before a worker gets to it (they have their own events).
        started = {r["type"]: r["phase"] for r in await db.fetch("SELECT type, phase FROM schema_rerenders")}
        assert started == {"author": "finish", "tag": "finish", "article": "finish"}
        author = await new_entry(site, "author", {"name": "Ada"})
        ids = [await new_entry(site, "article", {"title": f"T{i}", "rank": i, "author": {"id": author}})
               for i in range(ENTRIES)]
        # a draft edited after its publish: its published copy is stored apart, and conformed too
        r = await site.management.patch(f"/v1/entries/article/{ids[1]}", json={"fields": {"title": "Edited"}})
        assert r.status_code == 200, r.text
        assert await db.fetchval("SELECT published_data ? 'rank' FROM entries WHERE id = $1", ids[1])
        changed = _without(ARTICLE, "rank", {"id": "summary", "type": "text", "indexed": True})
        r = await site.management.put("/v1/content-types/article", json=changed)
        assert r.status_code == 200, r.text
        rendering = r.json()["data"]["rendering"]
        assert rendering["status"] == "running" and rendering["entries_total"] == ENTRIES
        assert rendering["entries_done"] == 0 and rendering["version"] == r.json()["data"]["version"]

        # Filtered counts on the new indexed field wait for its published_values rows (migration 0014).
        ready = "SELECT field, ready FROM indexed_fields WHERE type = 'article' ORDER BY field"
        assert [tuple(r) for r in await db.fetch(ready)] == [("summary", False)]
        # The request did not touch the entries; delivery keeps answering with the previous shape.
        assert await db.fetchval("SELECT count(*) FROM entries WHERE type = 'article' AND data ? 'rank'") == ENTRIES
        first = await api(site, f"/api/v1/entries/article/{ids[0]}")
        assert first.status_code == 200 and b'"rank":0' in first.content
        # A removed field cannot come back while its values are still being dropped.
        again = await site.management.put("/v1/content-types/article", json=changed | {"fields": [
            *changed["fields"], {"id": "rank", "type": "text"}]})
        assert again.status_code == 409, again.text
        assert "still being dropped" in again.text

        # A worker killed in a batch left its lease behind: it runs out and the batch runs again.
        await db.execute("UPDATE schema_rerenders SET lease_token = 'dead', lease_until = now() - interval '1 second'")
        await hosts.start(config=fast_config(rerender_batch=7))
        await settle(site.database_url)

        done = (await site.management.get("/v1/content-types/article")).json()["data"]["rendering"]
        assert done["status"] == "done" and done["phase"] == "done"
        assert done["entries_done"] == ENTRIES and done["dependents_done"] == 0 and done["finished_at"]
        assert await db.fetchval("SELECT count(*) FROM entries WHERE type = 'article' AND data ? 'rank'") == 0
        assert await db.fetchval(  # (published_data is NULL while it is the same as data)
            f"SELECT count(*) FROM entries WHERE type = 'article' AND {PUBLISHED_DATA} ? 'rank'") == 0
        assert await db.fetchval(
            "SELECT published_data IS NOT NULL AND NOT published_data ? 'rank' FROM entries WHERE id = $1", ids[1])
        store = LocalObjectStore(site.settings.objects_dir)

        async def new_shape() -> None:
            for entry_id in ids:
                served = await api(site, f"/api/v1/entries/article/{entry_id}?locale=en&include=*")
                assert b'"rank"' not in served.content and b'"summary":null' in served.content
                stored = store.get(f"entries/article/en/{entry_id}.json")
                assert stored is not None and stored.body == served.content

        await eventually(new_shape)
        index = store.get("entries/article/en/index.json")
        assert index is not None and b'"rank"' not in index.body and b'"summary":null' in index.body
        # The new indexed field's indexes were built without blocking writes, and are valid.
        valid = await db.fetch(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname LIKE 'pd_%_article_summary'")
        assert {r["relname"] for r in valid} == {"pd_idx_article_summary", "pd_new_article_summary",
                                                  "pd_trgm_article_summary"}
        assert all(r["indisvalid"] for r in valid)
        assert [tuple(r) for r in await db.fetch(ready)] == [("summary", True)]
        assert await db.fetchval("SELECT count(*) FROM published_values WHERE type = 'article' AND field = 'summary'"
                                 " AND value = 'null'::jsonb") == ENTRIES * 1  # one locale
        assert not await db.fetchval("SELECT count(*) FROM published_values WHERE type = 'article' AND field = 'rank'")
        events = await db.fetch("SELECT payload FROM outbox_events WHERE type = 'content_type.rerendered'")
        payloads = [e["payload"] for e in events if e["payload"]["id"] == "article"]
        assert payloads[-1]["entries"] == ENTRIES and payloads[-1]["version"] == done["version"]

        # Sync clients page through the type again at the end of the background work, not only at the
        # change (when most documents still had the old shape).
        from cms.app.events.feed import START, entry_changes

        async with db.acquire() as conn:
            schema_changes = [c for c in await entry_changes(conn, START, 1000, "article") if c.schema]
        assert len(schema_changes) >= 3  # the blog's PUT, this change, and its content_type.rerendered
        last_saved = await db.fetchval(
            "SELECT max(seq) FROM outbox_events WHERE type = 'content_type.saved' AND payload->>'id' = 'article'")
        assert schema_changes[-1].position.seq > last_saved

        # Done: the field may come back, and comes back empty.
        r = await site.management.put("/v1/content-types/article", json=ARTICLE)
        assert r.status_code == 200, r.text
        await settle(site.database_url)
        served = await api(site, f"/api/v1/entries/article/{ids[3]}?locale=en")
        assert b'"rank":null' in served.content


@pytest.mark.parametrize("local_steps", [8, 0])
async def test_a_rerender_runs_batch_after_batch_on_the_worker_without_messages(
    apps_with: Any, hosts: Hosts, local_steps: int,
) -> None:
    """The worker that starts a type's re-render runs every batch on its own step loop: no message,
    so no broker poll, between two batches. With CMS_WORKER_LOCAL_STEPS=0, one message per batch."""
    async with apps_with(**BACKGROUND) as site:
        # (reenqueue_after: the sweeper would send a message for a re-render that waits 3 s)
        host = await hosts.start(config=fast_config(rerender_batch=7, local_steps=local_steps, reenqueue_after=60.0))
        enqueued = Enqueued()
        host.broker.add_middleware(enqueued)
        await _blog(site)
        ids = [await new_entry(site, "article", {"title": f"T{i}", "rank": i}) for i in range(ENTRIES)]
        await settle(site.database_url)
        batches, messages = host.local.batches, enqueued.actors["cms.rerender"]
        r = await site.management.put("/v1/content-types/article", json=_without(ARTICLE, "rank"))
        assert r.status_code == 200, r.text
        await settle(site.database_url)
        done = (await site.management.get("/v1/content-types/article")).json()["data"]["rendering"]
        assert done["status"] == "done" and done["entries_done"] == ENTRIES
        # Four batches of entries (7, 7, 7, 2), the dependents, the finish.
        if local_steps:
            assert host.local.batches - batches >= 6 and enqueued.actors["cms.rerender"] == messages
        else:
            assert host.local.batches == 0 and enqueued.actors["cms.rerender"] - messages >= 6
        stored = LocalObjectStore(site.settings.objects_dir).get(f"entries/article/en/{ids[-1]}.json")
        assert stored is not None and b'"rank"' not in stored.body and b'"title":"T22"' in stored.body


class _Said(logging.Handler):
    """The messages of one logger, whatever the logging configuration does to the root's handlers."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize("local_steps", [8, 0], ids=["chained", "by-message"])
async def test_a_worker_stopping_mid_rerender_gives_its_lease_back_and_hands_the_rest_on(
    apps_with: Any, hosts: Hosts, db: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, local_steps: int,
) -> None:
    """A re-render batch still running when a worker's stop has waited long enough is interrupted,
    whether the worker chained it or a message brought it (CMS_WORKER_LOCAL_STEPS=0): it gives its
    lease back at once, so the next worker's sweeper sends the rest on as soon as the re-render has
    been idle `reenqueue_after` (not after the lease, here 10 minutes, runs out). No message goes
    to the stopping worker (its Dramatiq threads would take it and be stopped in it)."""
    monkeypatch.setattr(worker_main, "STOP_TIMEOUT_MS", 300)
    config = fast_config(rerender_batch=7, lease_seconds=600.0, reenqueue_after=600.0, local_steps=local_steps)
    async with apps_with(**BACKGROUND) as site:
        first = await hosts.start(config=config)
        await _blog(site)
        for i in range(ENTRIES):
            await new_entry(site, "article", {"title": f"T{i}", "rank": i})
        await settle(site.database_url)
        await first.stop()
        hosts.started.remove(first)
        r = await site.management.put("/v1/content-types/article", json=_without(ARTICLE, "rank"))
        assert r.status_code == 200, r.text
        async with db.acquire() as blocker, blocker.transaction():
            # Schema changes' lock, held: the batch's parts wait for it (as behind a schema change).
            await blocker.execute("SELECT pg_advisory_xact_lock($1)", locks.SCHEMA)
            stopping = await hosts.start(config=config)
            enqueued = Enqueued()
            stopping.broker.add_middleware(enqueued)

            async def claimed() -> None:
                assert await db.fetchval("SELECT lease_token FROM schema_rerenders WHERE type = 'article'")

            await eventually(claimed)
            said = _Said()
            logging.getLogger("cms.workers.broker").addHandler(said)
            try:
                await stopping.stop()
            finally:
                logging.getLogger("cms.workers.broker").removeHandler(said)
            hosts.started.remove(stopping)
            assert await db.fetchval("SELECT lease_token FROM schema_rerenders WHERE type = 'article'") is None
            assert any("interrupting the re-render batch of article" in line for line in said.lines)
            assert stopping.local.batches == 0 and not stopping.local._tasks
            if local_steps:  # (by message, the one that brought the batch may be counted or not yet)
                assert enqueued.actors["cms.rerender"] == 0
        await hosts.start(config=fast_config(
            rerender_batch=7, lease_seconds=600.0, reenqueue_after=0.5, local_steps=local_steps))
        await settle(site.database_url)
        done = (await site.management.get("/v1/content-types/article")).json()["data"]["rendering"]
        assert done["status"] == "done" and done["entries_done"] == ENTRIES


@pytest.mark.parametrize("settings", [BACKGROUND, {}], ids=["background", "inline"])
async def test_a_change_that_leaves_documents_as_they_were_rewrites_no_document_or_file(
    apps_with: Any, hosts: Hosts, db: asyncpg.Pool, settings: dict[str, str],
) -> None:
    """A loosened rule and a newly `indexed` field change no published document: no new row
    version, no new render number, no file rewritten (no CDN purge of a whole type), and the new
    indexed field still gets its published_values (filtered totals). A change that does alter the
    documents rewrites them and their files, also after a small type's change re-rendered the
    documents in its request."""
    async with apps_with(**settings) as site:
        await _blog(site)
        author = await new_entry(site, "author", {"name": "Ada"})
        ids = [await new_entry(site, "article", {"title": f"T{i}", "rank": i, "author": {"id": author}})
               for i in range(9)]
        await hosts.start(config=fast_config(rerender_batch=4))
        await settle(site.database_url)
        store = LocalObjectStore(site.settings.objects_dir)
        keys = [f"entries/article/en/{i}.json" for i in ids]

        def files() -> list[tuple[int, int]]:
            return [(store.path_for(k).stat().st_ino, store.get(k).version) for k in keys]  # type: ignore[union-attr]

        documents = "SELECT entry_id, render_seq, xmin::text AS x FROM published_documents WHERE type = 'article' ORDER BY 1"
        before_docs, before_files = [tuple(r) for r in await db.fetch(documents)], files()
        title = ARTICLE["fields"][0]
        looser = [{**title, "validations": {"max_length": 300}}, *ARTICLE["fields"][1:]]
        looser = [{**f, "indexed": True} if f["id"] == "slug" else f for f in looser]
        r = await site.management.put("/v1/content-types/article", json={**ARTICLE, "fields": looser})
        assert r.status_code == 200, r.text
        await settle(site.database_url)
        assert (await site.management.get("/v1/content-types/article")).json()["data"]["rendering"]["status"] == "done"
        assert [tuple(r) for r in await db.fetch(documents)] == before_docs
        assert files() == before_files
        assert await db.fetchval(
            "SELECT count(*) FROM published_values WHERE type = 'article' AND field = 'slug'") == len(ids)
        listed = await api(site, "/api/v1/entries/article?filter[slug][eq]=t3&locale=en")
        assert listed.status_code == 200 and listed.json()["meta"]["total"] == 1, listed.text
        # nor do the files that include a type whose documents did not change
        r = await site.management.put("/v1/content-types/author", json={**AUTHOR, "description": "People"})
        assert r.status_code == 200, r.text
        await settle(site.database_url)
        assert files() == before_files

        r = await site.management.put("/v1/content-types/article", json={**ARTICLE, "fields": [
            *looser, {"id": "summary", "type": "text"}]})
        assert r.status_code == 200, r.text
        await settle(site.database_url)
        after = [tuple(r) for r in await db.fetch(documents)]
        assert all(a[1] > b[1] for a, b in zip(after, before_docs, strict=True))
        assert all(version > old for (_, version), (_, old) in zip(files(), before_files, strict=True))
        assert all(b'"summary":null' in store.get(k).body for k in keys)  # type: ignore[union-attr]


async def test_an_author_change_rewrites_the_files_of_articles_that_include_authors(
    apps_with: Any, hosts: Hosts,
) -> None:
    async with apps_with(**BACKGROUND) as site:
        await _blog(site)
        authors = [await new_entry(site, "author", {"name": f"A{i}"}) for i in range(3)]
        articles = [await new_entry(site, "article", {"title": f"T{i}", "author": {"id": authors[i % 3]}})
                    for i in range(9)]
        await hosts.start(config=fast_config(rerender_batch=4))
        await settle(site.database_url)
        r = await site.management.put("/v1/content-types/author", json={**AUTHOR, "fields": [
            *AUTHOR["fields"], {"id": "bio", "type": "text"}]})
        assert r.status_code == 200, r.text
        await settle(site.database_url)
        done = (await site.management.get("/v1/content-types/author")).json()["data"]["rendering"]
        assert done["status"] == "done" and done["entries_done"] == 3 and done["dependents_done"] == 9
        store = LocalObjectStore(site.settings.objects_dir)
        for article in articles:
            stored = store.get(f"entries/article/en/{article}.json")
            served = await api(site, f"/api/v1/entries/article/{article}?locale=en&include=*")
            assert stored is not None and stored.body == served.content and b'"bio":null' in stored.body


async def test_a_write_during_the_background_work_meets_the_new_shape(apps_with: Any, db: asyncpg.Pool) -> None:
    """No worker runs: the change stays unapplied, and each write conforms its own entry first."""
    async with apps_with(**BACKGROUND) as site:
        await _blog(site)
        entry = await new_entry(site, "article", {"title": "T", "rank": 1, "body": "Body"})
        flipped = _without(ARTICLE, "rank")
        flipped["fields"] = [{**f, "localized": False} if f["id"] == "body" else f for f in flipped["fields"]]
        r = await site.management.put("/v1/content-types/article", json=flipped)
        assert r.status_code == 200, r.text
        assert await db.fetchval("SELECT data -> 'body' FROM entries WHERE id = $1", entry) == {"en": "Body"}

        r = await site.management.patch(f"/v1/entries/article/{entry}", json={"fields": {"title": "T2"}})
        assert r.status_code == 200, r.text
        fields = r.json()["data"]["fields"]
        assert fields["body"] == "Body" and "rank" not in fields and fields["title"] == "T2"
        stored = await db.fetchrow("SELECT data, published_data, version FROM entries WHERE id = $1", entry)
        assert stored["data"]["body"] == {"_": "Body"} and "rank" not in stored["data"]
        assert stored["published_data"]["body"] == {"_": "Body"} and stored["version"] == 2  # the PATCH only

        r = await site.management.post(f"/v1/entries/article/{entry}/publish")
        assert r.status_code == 200, r.text
        served = (await api(site, f"/api/v1/entries/article/{entry}?locale=en")).json()["data"]["fields"]
        assert served["body"] == "Body" and served["title"] == "T2" and "rank" not in served


async def test_making_a_field_unique_with_duplicates_is_refused_by_a_query(apps_with: Any) -> None:
    async with apps_with(**BACKGROUND) as site:
        await _blog(site)
        for label in ("x", "x", "y", "z", "z", "z"):
            await new_entry(site, "tag", {"label": label}, publish=False)
        unique = {**TAG, "fields": [{"id": "label", "type": "text", "unique": True}]}
        r = await site.management.put("/v1/content-types/tag", json=unique)
        assert r.status_code == 409, r.text
        assert r.json()["blocking_entries"] == 5
        assert r.json()["errors"][0]["pointer"] == "/fields/0/id"
        # A changed rule is checked against the stored values (only this field's are read).
        short = {**TAG, "fields": [{"id": "label", "type": "text", "validations": {"max_length": 0}}]}
        assert (await site.management.put("/v1/content-types/tag", json=short)).status_code == 409


@pytest.mark.parametrize("settings", [BACKGROUND, {}], ids=["background", "inline"])
async def test_a_field_made_unique_holds_its_existing_values_at_once(apps_with: Any, settings: dict[str, str]) -> None:
    """Making a field unique registers the values entries already have, in the change's request
    (one statement): a new entry with one of them is refused at once, on a big site (background)
    as on a small one, not only after the old entries are written again."""
    async with apps_with(**settings) as site:
        await _blog(site)
        first = await new_entry(site, "tag", {"label": "taken"}, publish=False)
        await new_entry(site, "tag", {"label": "other"}, publish=False)
        unique = {**TAG, "fields": [{"id": "label", "type": "text", "unique": True}]}
        assert (await site.management.put("/v1/content-types/tag", json=unique)).status_code == 200
        r = await site.management.put("/v1/entries/tag/second", json={"fields": {"label": "taken"}})
        assert r.status_code == 409, r.text
        r = await site.management.patch(f"/v1/entries/tag/{first}", json={"fields": {"label": "free"}})
        assert r.status_code == 200, r.text  # the value moves with its entry
        r = await site.management.put("/v1/entries/tag/second", json={"fields": {"label": "taken"}})
        assert r.status_code == 201, r.text


_NUMBERS = [2, 2.0, 0.5, 1.5e-07, 1e-05, 0.0001, 1e16, 1.5e16, 1e20, 1e300, -0.0, -3.25, 123456789.125, 0.1 + 0.2]


async def test_a_unique_number_has_the_same_text_in_python_and_in_sql(db: asyncpg.Pool) -> None:
    """entry_unique_values holds one text per value: what a write registers (Python) and what a
    schema change registers (SQL, over the stored jsonb) must be the same text, exponents included."""
    import msgspec

    from cms.app.schema.repository import _UNIQUE_TEXT
    from cms.app.schema.values import values_equal_for_unique

    for number in _NUMBERS:
        stored = msgspec.json.encode(number).decode()  # as the entry's data holds it
        in_sql = await db.fetchval(f"SELECT {_UNIQUE_TEXT} FROM (SELECT $1::text::jsonb AS value) v", stored)  # noqa: S608
        assert values_equal_for_unique(number) == in_sql, (number, stored)


async def test_a_unique_number_written_with_an_exponent_is_still_taken(apps_with: Any) -> None:
    async with apps_with(**BACKGROUND) as site:
        await _blog(site)
        weighed = {**TAG, "fields": [{"id": "label", "type": "text"}, {"id": "weight", "type": "number"}]}
        assert (await site.management.put("/v1/content-types/tag", json=weighed)).status_code == 200
        await new_entry(site, "tag", {"label": "tiny", "weight": 1.5e-07}, publish=False)
        await new_entry(site, "tag", {"label": "huge", "weight": 1e300}, publish=False)
        unique = {**weighed, "fields": [{"id": "label", "type": "text"}, {"id": "weight", "type": "number", "unique": True}]}
        assert (await site.management.put("/v1/content-types/tag", json=unique)).status_code == 200  # SQL registers
        for i, written in enumerate(("0.00000015", "1.5e-7", "1e300", "1E+300")):
            r = await site.management.put(f"/v1/entries/tag/t{i}", content=f'{{"fields": {{"weight": {written}}}}}',
                                          headers={"Content-Type": "application/json"})
            assert r.status_code == 409, (written, r.text)
        r = await site.management.put("/v1/entries/tag/t9", json={"fields": {"weight": 1.6e-07}})
        assert r.status_code == 201, r.text


async def test_text_made_indexed_or_unique_on_a_big_type_keeps_the_request_o1_and_long_values_unpublished(
    apps_with: Any,
) -> None:
    """KEY_TEXT_MAX on a big type: a new `unique` finds a stored longer value in its one SQL pass
    (409); a new `indexed` alone reads nothing, and the entry holding such a value is then a 422 at
    publish (it could not be indexed), not a 500."""
    from cms.app.schema.model import KEY_TEXT_MAX

    async with apps_with(**BACKGROUND) as site:
        await _blog(site)
        long_one = await new_entry(site, "tag", {"label": "z" * (KEY_TEXT_MAX + 1)}, publish=False)
        await new_entry(site, "tag", {"label": "short"}, publish=False)
        unique = {**TAG, "fields": [{"id": "label", "type": "text", "unique": True}]}
        r = await site.management.put("/v1/content-types/tag", json=unique)
        assert r.status_code == 409 and r.json()["blocking_entries"] == 1, r.text
        indexed = {**TAG, "fields": [{"id": "label", "type": "text", "indexed": True}]}
        assert (await site.management.put("/v1/content-types/tag", json=indexed)).status_code == 200
        r = await site.management.post(f"/v1/entries/tag/{long_one}/publish")
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/fields/label", r.text
        r = await site.management.patch(f"/v1/entries/tag/{long_one}", json={"fields": {"label": "shorter"}})
        assert r.status_code == 200, r.text
        assert (await site.management.post(f"/v1/entries/tag/{long_one}/publish")).status_code == 200


async def test_a_locale_deleted_on_a_big_site_goes_in_the_background(
    apps_with: Any, hosts: Hosts, db: asyncpg.Pool,
) -> None:
    async with apps_with(**BACKGROUND) as site:
        await _blog(site)
        r = await site.management.put("/v1/locales/de", json={"name": "Deutsch", "fallback": "en"})
        assert r.status_code == 201, r.text
        entry = await new_entry(site, "article", {"title": "T"})
        r = await site.management.patch(f"/v1/entries/article/{entry}?locale=de", json={"fields": {"title": "Titel"}})
        assert r.status_code == 200, r.text
        assert (await site.management.post(f"/v1/entries/article/{entry}/publish")).status_code == 200
        await hosts.start(config=fast_config(rerender_batch=7))
        await settle(site.database_url)
        store = LocalObjectStore(site.settings.objects_dir)
        assert store.get(f"entries/article/de/{entry}.json") is not None

        await hosts.stop_all()  # hold the background work: the locale cannot come back meanwhile
        assert (await site.management.delete("/v1/locales/de?force=true")).status_code == 204
        assert await db.fetchval("SELECT data -> 'title' ? 'de' FROM entries WHERE id = $1", entry)
        r = await site.management.put("/v1/locales/de", json={"name": "Deutsch"})
        assert r.status_code == 409 and "still being dropped" in r.text

        await hosts.start(config=fast_config(rerender_batch=7))
        await settle(site.database_url)
        assert not await db.fetchval("SELECT data -> 'title' ? 'de' FROM entries WHERE id = $1", entry)
        assert await db.fetchval("SELECT count(*) FROM published_documents WHERE locale = 'de'") == 0
        assert store.list("entries/article/de/") == []
        assert (await site.management.put("/v1/locales/de", json={"name": "Deutsch"})).status_code == 201


@pytest.mark.parametrize("settings", [BACKGROUND, {}], ids=["background", "inline"])
async def test_a_rerender_keeps_the_parsed_search_of_unchanged_text_and_parses_changed_text(
    apps_with: Any, hosts: Hosts, db: asyncpg.Pool, settings: dict[str, str],
) -> None:
    """Parsing the search text is the largest PostgreSQL cost of writing a document: a schema
    change's re-render keeps the stored tsvector when the text is the one it was parsed from
    (migration 0027's search_key), and parses it when the text changed or the key is unknown (a
    document written before the migration). Shown with a marker word put into the stored tsvector
    alone: kept where the text is unchanged, gone where it was parsed again."""
    async with apps_with(**settings) as site:
        await _blog(site)
        kept, edited, legacy = [await new_entry(site, "article", {"title": f"Alpha {i}", "rank": i}) for i in range(3)]
        await hosts.start(config=fast_config(rerender_batch=7))
        await settle(site.database_url)
        keys = "SELECT entry_id, search_key FROM published_documents WHERE type = 'article' ORDER BY entry_id"
        assert all(r["search_key"] is not None for r in await db.fetch(keys))
        async with db.acquire() as conn, conn.transaction():
            # (the marker alone, key kept: past the trigger that forgets the key of another writer's tsvector)
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "UPDATE published_documents SET search = search || to_tsvector('simple', 'zeppelin') WHERE type = 'article'")
        await db.execute("UPDATE published_documents SET search_key = NULL WHERE entry_id = $1", legacy)
        # a draft edit, published after the change: its text changes then
        r = await site.management.patch(f"/v1/entries/article/{edited}", json={"fields": {"title": "Beta"}})
        assert r.status_code == 200, r.text

        def found(q: str) -> Any:
            return db.fetch(
                "SELECT entry_id FROM published_documents WHERE type = 'article' "
                "AND search @@ plainto_tsquery('simple', $1) ORDER BY entry_id", q)

        assert [r["entry_id"] for r in await found("zeppelin")] == sorted([kept, edited, legacy])
        # the change: one more optional field (every document's bytes change, no text does)
        r = await site.management.put(
            "/v1/content-types/article", json={**ARTICLE, "fields": [*ARTICLE["fields"], {"id": "note", "type": "text"}]})
        assert r.status_code == 200, r.text
        await settle(site.database_url)
        rendering = (await site.management.get("/v1/content-types/article")).json()["data"]["rendering"]
        assert rendering["status"] == "done", rendering
        served = await api(site, f"/api/v1/entries/article/{kept}?locale=en")
        assert b'"note":null' in served.content  # re-rendered
        # kept where the text is the same; the legacy document's text was parsed again
        assert [r["entry_id"] for r in await found("zeppelin")] == sorted([kept, edited])
        assert [r["entry_id"] for r in await found("alpha")] == sorted([kept, edited, legacy])
        r = await site.management.post(f"/v1/entries/article/{edited}/publish")
        assert r.status_code == 200, r.text
        assert [r["entry_id"] for r in await found("beta")] == [edited]
        assert [r["entry_id"] for r in await found("zeppelin")] == [kept]
        assert all(r["search_key"] is not None for r in await db.fetch(keys))
        listed = await api(site, "/api/v1/entries/article?q=beta&locale=en")
        assert [d["id"] for d in listed.json()["data"]] == [edited]
        # A writer that does not know the key (an older app during a rolling deploy) makes it forgotten.
        await db.execute("UPDATE published_documents SET search = to_tsvector('simple', 'other') WHERE entry_id = $1", kept)
        assert await db.fetchval("SELECT search_key FROM published_documents WHERE entry_id = $1", kept) is None
