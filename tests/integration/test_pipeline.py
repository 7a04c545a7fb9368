"""The publish pipeline: outbox relay, deliver steps, prerendered files, purges, entry.delivered.

Real PostgreSQL and Valkey (conftest), the real Dramatiq Redis broker (a namespace per test), the
local object store and S3 (moto's server on loopback), and a recording HTTP server as the CDN.
The relay, sweeper and Dramatiq worker threads run in this process (`WorkerHost`).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from dramatiq.middleware import Middleware

from cms.app.config import PipelineConfig, load_settings
from cms.app.db.pool import connect, create_pool
from cms.app.delivery.purge import RedisPurgeSubscriber
from cms.app.events.outbox import emit
from cms.app.publishing.files import Publisher, republish_all
from cms.storage.objects import LocalObjectStore, ObjectStore, S3ObjectStore
from cms.workers.broker import LocalSteps
from cms.workers.main import republish
from cms.workers.outputs import object_store_from_settings
from cms.workers.relay import Relay
from tests.support import Hosts, Recorder, eventually, fast_config

SETTLE_TIMEOUT = 30.0


# ---------------------------------------------------------------------------------------------
# helpers and fixtures


async def settle(database_url: str, timeout: float = SETTLE_TIMEOUT) -> dict[str, int]:
    """Wait until every event is relayed, every step is done (or failed) and every schema change's
    re-render finished; returns step counts."""
    conn = await connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            unrelayed = await conn.fetchval("SELECT count(*) FROM outbox_events WHERE relayed_at IS NULL")
            open_steps = await conn.fetchval("SELECT count(*) FROM outbox_steps WHERE status IN ('pending', 'running')")
            # Counts of entry events' steps (schema events have steps too, but tests count entries).
            counts = {r["status"]: r["n"] for r in await conn.fetch(
                "SELECT s.status, count(*) AS n FROM outbox_steps s JOIN outbox_events e ON e.id = s.event_id "
                "WHERE e.type LIKE 'entry.%' GROUP BY s.status"
            )}
            rerendering = await conn.fetchval("SELECT count(*) FROM schema_rerenders WHERE finished_at IS NULL AND failed_at IS NULL")
            if unrelayed == 0 and not open_steps and not rerendering:
                return counts
            if time.monotonic() > deadline:
                raise AssertionError(f"pipeline did not settle in {timeout} s: unrelayed={unrelayed} steps={counts}")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


@pytest.fixture
async def site(blog: Any) -> Any:
    """The blog types plus a second locale (de, falling back to en)."""
    r = await blog.management.put("/v1/locales/de", json={"name": "Deutsch", "fallback": "en"})
    assert r.status_code in (200, 201), r.text
    return blog


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder().start()
    yield server
    server.stop()


def make_bucket(endpoint: str) -> str:
    name = f"cms-pipe-{uuid.uuid4().hex[:12]}"
    boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


async def new_entry(apps: Any, type_id: str, fields: dict[str, Any], *, publish: bool = True) -> str:
    r = await apps.management.post(f"/v1/entries/{type_id}", json={"fields": fields})
    assert r.status_code == 201, r.text
    entry_id = r.json()["data"]["id"]
    if publish:
        r = await apps.management.post(f"/v1/entries/{type_id}/{entry_id}/publish")
        assert r.status_code == 200, r.text
    return entry_id


async def api(apps: Any, path: str) -> Any:
    reader = await apps.reader()
    return await reader.get(path)


# ---------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_publish_writes_api_identical_files_and_unpublish_removes_them(
    site: Any, hosts: Hosts, request: pytest.FixtureRequest, backend: str
) -> None:
    if backend == "s3":
        request.getfixturevalue("aws_env")
        endpoint = request.getfixturevalue("moto_endpoint")
        settings = hosts.settings(
            CMS_S3_BUCKET=make_bucket(endpoint), CMS_S3_ENDPOINT_URL=endpoint, CMS_S3_PREFIX="site"
        )
    else:
        settings = hosts.settings()
    store: ObjectStore = object_store_from_settings(settings)
    assert isinstance(store, S3ObjectStore if backend == "s3" else LocalObjectStore)
    await hosts.start(settings)
    # The types' own background work (scheduled when they were saved) first: run after the entries
    # below exist, it would rewrite their files too (harmless, but `other`'s file would then be
    # newer than its entry.delivered, checked below).
    await settle(site.database_url)

    author = await new_entry(site, "author", {"name": "Ada"})
    article = await new_entry(site, "article", {"title": "Hello World", "rank": 1, "author": {"id": author}})
    await site.management.patch(f"/v1/entries/article/{article}?locale=de", json={"fields": {"title": "Hallo Welt"}})
    await site.management.post(f"/v1/entries/article/{article}/publish")
    other = await new_entry(site, "article", {"title": "Second", "rank": 2})
    await settle(site.database_url)

    published_version = (await site.management.get(f"/v1/entries/article/{article}")).json()["data"]["published_version"]
    conn = await connect(site.database_url)
    try:  # files carry the render number of their document (monotonic across entries and ids)
        render_seqs = {r["locale"]: r["render_seq"] for r in await conn.fetch(
            "SELECT locale, render_seq FROM published_documents WHERE entry_id = $1", article)}
    finally:
        await conn.close()
    for locale in ("en", "de"):
        response = await api(site, f"/api/v1/entries/article/{article}?locale={locale}&include=*")
        assert response.status_code == 200
        stored = store.get(f"entries/article/{locale}/{article}.json")
        assert stored is not None, locale
        assert stored.body == response.content
        assert stored.content_type == "application/json"
        assert stored.cache_control == settings.cache_control
        assert stored.version == render_seqs[locale] and render_seqs[locale] >= 2**32
        assert response.json()["data"]["version"] == published_version
        assert stored.surrogate_keys == response.headers["surrogate-key"].split()
        assert f"entry:{author}" in stored.surrogate_keys  # the included author
        by_slug = store.get(f"entries/article/{locale}/by-slug/hello-world.json")
        assert by_slug is not None and by_slug.body == response.content
        slug_response = await api(site, f"/api/v1/entries/article/by-slug/hello-world?locale={locale}&include=*")
        assert slug_response.content == by_slug.body
        index = store.get(f"entries/article/{locale}/index.json")
        listing = await api(site, f"/api/v1/entries/article?locale={locale}&limit=100")
        assert index is not None and index.body == listing.content
        assert [d["id"] for d in json.loads(index.body)["data"]] == [other, article]
        author_file = store.get(f"entries/author/{locale}/{author}.json")
        assert author_file is not None
        assert author_file.body == (await api(site, f"/api/v1/entries/author/{author}?locale={locale}&include=*")).content
    assert json.loads(store.get(f"entries/article/de/{article}.json").body)["data"]["fields"]["title"] == "Hallo Welt"

    # entry.delivered: once per entry event, after its files existed
    conn = await connect(site.database_url)
    try:
        rows = await conn.fetch(
            "SELECT created_at, payload FROM outbox_events WHERE type = 'entry.delivered' AND payload->>'id' = $1",
            article,
        )
        sources = await conn.fetch(
            "SELECT id FROM outbox_events WHERE type = 'entry.published' AND payload->>'id' = $1", article
        )
        assert sorted(r["payload"]["source_event"] for r in rows) == sorted(r["id"] for r in sources)
        assert all(r["payload"]["type"] == "article" and r["payload"]["version"] for r in rows)
        if backend == "local":
            # `other` is written by its own step only (nothing includes it): its file is older
            # than its entry.delivered event
            delivered_at = await conn.fetchval(
                "SELECT created_at FROM outbox_events WHERE type = 'entry.delivered' AND payload->>'id' = $1", other
            )
            for locale in ("en", "de"):
                mtime = (settings.objects_dir / f"entries/article/{locale}/{other}.json").stat().st_mtime
                assert delivered_at.timestamp() >= mtime
    finally:
        await conn.close()

    r = await site.management.post(f"/v1/entries/article/{article}/unpublish")
    assert r.status_code == 200
    await settle(site.database_url)
    for locale in ("en", "de"):
        assert store.get(f"entries/article/{locale}/{article}.json") is None
        assert store.get(f"entries/article/{locale}/by-slug/hello-world.json") is None
        index = store.get(f"entries/article/{locale}/index.json")
        assert index is not None
        assert [d["id"] for d in json.loads(index.body)["data"]] == [other]
        assert index.body == (await api(site, f"/api/v1/entries/article?locale={locale}&limit=100")).content
    assert store.get(f"entries/author/en/{author}.json") is not None


async def test_dependents_are_rerendered_when_a_referenced_entry_changes(site: Any, hosts: Hosts) -> None:
    store = LocalObjectStore(site.settings.objects_dir)
    await hosts.start()
    author = await new_entry(site, "author", {"name": "Ada"})
    articles = [await new_entry(site, "article", {"title": f"Post {i}", "author": {"id": author}}) for i in range(2)]
    await settle(site.database_url)
    body = json.loads(store.get(f"entries/article/en/{articles[0]}.json").body)
    assert body["data"]["fields"]["author"]["fields"]["name"] == "Ada"

    r = await site.management.patch(f"/v1/entries/author/{author}", json={"fields": {"name": "Ada Lovelace"}})
    assert r.status_code == 200, r.text
    await site.management.post(f"/v1/entries/author/{author}/publish")
    await settle(site.database_url)
    for article in articles:
        for locale in ("en", "de"):
            stored = store.get(f"entries/article/{locale}/{article}.json")
            expected = await api(site, f"/api/v1/entries/article/{article}?locale={locale}&include=*")
            assert stored is not None and stored.body == expected.content
            assert json.loads(stored.body)["data"]["fields"]["author"]["fields"]["name"] == "Ada Lovelace"
            by_slug = store.get(f"entries/article/{locale}/by-slug/{json.loads(stored.body)['data']['fields']['slug']}.json")
            assert by_slug is not None and by_slug.body == stored.body

    # the author goes away: the articles now show a plain link
    await site.management.post(f"/v1/entries/author/{author}/unpublish")
    await settle(site.database_url)
    stored = store.get(f"entries/article/en/{articles[1]}.json")
    assert json.loads(stored.body)["data"]["fields"]["author"] == {"id": author, "type": "author"}
    assert store.get(f"entries/author/en/{author}.json") is None


async def test_slug_change_and_delete_leave_no_stale_files(site: Any, hosts: Hosts) -> None:
    store = LocalObjectStore(site.settings.objects_dir)
    await hosts.start()
    article = await new_entry(site, "article", {"title": "First Title"})
    await settle(site.database_url)
    assert store.get("entries/article/en/by-slug/first-title.json") is not None

    r = await site.management.patch(f"/v1/entries/article/{article}", json={"fields": {"slug": "renamed"}})
    assert r.status_code == 200, r.text
    await site.management.post(f"/v1/entries/article/{article}/publish")
    await settle(site.database_url)
    for locale in ("en", "de"):
        assert store.get(f"entries/article/{locale}/by-slug/first-title.json") is None
        renamed = store.get(f"entries/article/{locale}/by-slug/renamed.json")
        assert renamed is not None and renamed.body == store.get(f"entries/article/{locale}/{article}.json").body

    r = await site.management.delete(f"/v1/entries/article/{article}?force=true")
    assert r.status_code == 204
    await settle(site.database_url)
    assert [k for k in store.list("entries/article/") if not k.endswith("index.json")] == []
    assert json.loads(store.get("entries/article/en/index.json").body)["data"] == []

    # the type itself goes: so do its (empty) index files, in every locale
    assert (await site.management.delete("/v1/content-types/article")).status_code == 204
    await settle(site.database_url)
    assert store.list("entries/article/") == []
    assert store.get("entries/author/en/index.json") is not None  # other types keep theirs


async def test_purges_reach_the_cdn_and_delivery_processes(site: Any, hosts: Hosts, recorder: Recorder) -> None:
    received: list[list[str] | None] = []
    subscriber = RedisPurgeSubscriber(hosts.services.redis_url, received.append)
    await subscriber.start()
    assert subscriber.connected
    try:
        settings = hosts.settings(CMS_CDN_PROVIDER="http", CMS_CDN_HTTP_URLS=recorder.url)
        await hosts.start(settings)
        author = await new_entry(site, "author", {"name": "Grace"})
        await settle(site.database_url)
        article = await new_entry(site, "article", {"title": "Purge Me", "author": {"id": author}})
        await settle(site.database_url)

        def tags_for(entry_id: str) -> list[str]:
            return [
                tag for r in recorder.snapshot() if r.method == "PURGE" and r.path == "/"
                for tag in r.headers["surrogate-key"].split() if f"entry:{entry_id}" in r.headers["surrogate-key"]
            ]

        assert {f"entry:{article}", "type:article"} <= set(tags_for(article))
        paths = {r.path for r in recorder.snapshot() if r.method == "PURGE" and r.path != "/"}
        for locale in ("en", "de"):
            assert {
                # the embedded store is served by delivery at /cdn/: that is the path a CDN caches
                f"/cdn/entries/article/{locale}/{article}.json", f"/cdn/entries/article/{locale}/by-slug/purge-me.json",
                f"/cdn/entries/article/{locale}/index.json",
            } <= paths

        # a change of the author purges the article (its document includes the author)
        recorder.requests.clear()
        await site.management.patch(f"/v1/entries/author/{author}", json={"fields": {"name": "Grace Hopper"}})
        await site.management.post(f"/v1/entries/author/{author}/publish")
        await settle(site.database_url)
        assert f"entry:{article}" in tags_for(author)
        assert f"/cdn/entries/article/en/{article}.json" in {r.path for r in recorder.snapshot()}

        async def subscriber_got_them() -> None:
            seen = {tag for tags in received if tags for tag in tags}
            assert {f"entry:{article}", "type:article", f"entry:{author}", "type:author"} <= seen

        await eventually(subscriber_got_them, timeout=5)
    finally:
        await subscriber.stop()


async def test_purge_subscriber_drops_everything_after_a_reconnect(services: Any, redis_client: Any) -> None:
    received: list[list[str] | None] = []
    subscriber = RedisPurgeSubscriber(services.redis_url, received.append)
    await subscriber.start()
    try:
        await redis_client.publish("cms:purge", "entry:a type:t")

        async def got_first() -> None:
            assert ["entry:a", "type:t"] in received

        await eventually(got_first, timeout=5)
        # kill our subscription connection from the server side
        clients = await redis_client.client_list()
        for client in clients:
            if client.get("cmd", "").startswith(("subscribe", "ping")) or "sub=1" in str(client):
                await redis_client.client_kill_filter(_id=client["id"])

        async def reconnected() -> None:
            assert None in received and subscriber.reconnects >= 1 and subscriber.connected

        await eventually(reconnected, timeout=10)
        await redis_client.publish("cms:purge", "entry:b")

        async def got_second() -> None:
            assert ["entry:b"] in received

        await eventually(got_second, timeout=5)
    finally:
        await subscriber.stop()


class Enqueued(Middleware):
    """Counts the messages the broker is given (in all, and by actor)."""

    def __init__(self) -> None:
        self.count = 0
        self.actors: Counter[str] = Counter()

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.count += 1
        self.actors[message.actor_name] += 1


@pytest.mark.parametrize("local_steps", [8, 0])
async def test_the_relaying_worker_runs_its_steps_without_a_message_unless_told_not_to(
    site: Any, hosts: Hosts, local_steps: int
) -> None:
    """A relayed step runs on the relaying worker's own step loop (no Redis round trip); with
    CMS_WORKER_LOCAL_STEPS=0, or when that loop has no room, it goes by message. Files either way."""
    host = await hosts.start(config=fast_config(local_steps=local_steps))
    enqueued = Enqueued()
    host.broker.add_middleware(enqueued)
    await settle(site.database_url)
    ran, messages = host.local.ran, enqueued.count
    article = await new_entry(site, "article", {"title": "Local", "rank": 1})
    await settle(site.database_url)
    r = await api(site, f"/api/v1/entries/article/{article}")
    assert r.status_code == 200
    stored = object_store_from_settings(hosts.settings()).get(f"entries/article/en/{article}.json")
    assert stored is not None and json.loads(stored.body)["data"]["fields"]["title"] == "Local"
    if local_steps:
        assert host.local.ran > ran and enqueued.count == messages  # the deliver step ran here, no message
    else:
        assert host.local.ran == ran == 0 and enqueued.count > messages


def test_local_steps_refuse_beyond_their_limit_and_while_not_running() -> None:
    class Runtime:
        loop: asyncio.AbstractEventLoop | None = None
        config = fast_config()

    runtime = Runtime()
    gate = threading.Event()

    async def step(runtime: Any, event_ids: list[str]) -> dict[str, str]:
        await asyncio.to_thread(gate.wait, 10)
        return {}

    local = LocalSteps(runtime, {"deliver": step}, limit=2)
    assert not local.try_run("deliver", ["e1"])  # no step loop yet
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        runtime.loop = loop
        assert not local.try_run("webhook", ["e1"])  # no local run declared for it here
        assert local.try_run("deliver", ["e1"]) and local.try_run("deliver", ["e2"])
        assert not local.has_room() and not local.try_run("deliver", ["e3"])  # full: this one goes by message
        gate.set()
        deadline = time.monotonic() + 10
        while not local.has_room():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert local.try_run("deliver", ["e4"]) and local.ran == 3
        local.close(10)
        assert not local.has_room() and not local.try_run("deliver", ["e5"])  # closed at shutdown
    finally:
        gate.set()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_local_rerenders_chain_their_batches_and_hand_the_rest_on_at_shutdown() -> None:
    """A type's re-render runs batch after batch on the step loop (no message between two); a type
    sent again while its last batch ran gets one more batch; one type at a time here (`rerenders`),
    others by message; at shutdown a chain stops after its batch, and a batch still running past
    close()'s wait is interrupted (what is left is the sweeper's: no message to a stopping worker)."""
    sent: list[str] = []

    async def send_rerender(type_id: str) -> None:
        sent.append(type_id)

    class Runtime:
        loop: asyncio.AbstractEventLoop | None = None
        config = fast_config()

    runtime = Runtime()
    runtime.send_rerender = send_rerender  # type: ignore[attr-defined]
    ran: list[str] = []
    total = {"a": 3, "b": 1, "c": 5}  # batches each type's re-render has
    finish_one = threading.Semaphore(0)

    async def batch(runtime: Any, type_id: str) -> bool:
        ran.append(type_id)
        assert await asyncio.to_thread(finish_one.acquire, True, 10)
        return ran.count(type_id) < total[type_id]

    def wait_for(check: Any) -> None:
        deadline = time.monotonic() + 10
        while not check():
            assert time.monotonic() < deadline
            time.sleep(0.01)

    local = LocalSteps(runtime, {}, limit=8, rerender=batch, rerenders=1)
    assert not local.try_rerender("a")  # no step loop yet
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        runtime.loop = loop
        assert local.try_rerender("a")
        wait_for(lambda: ran == ["a"])
        assert not local.try_rerender("b")  # one type at a time here: b goes by message
        finish_one.release()
        finish_one.release()
        wait_for(lambda: ran == ["a"] * 3)  # batches 2 and 3 with no send in between
        assert local.try_rerender("a")  # sent again while its last batch runs: one more batch
        finish_one.release()
        wait_for(lambda: ran == ["a"] * 4)
        finish_one.release()  # the 4th finds nothing more: the chain ends, b may start
        wait_for(lambda: local.try_rerender("b"))
        wait_for(lambda: ran[-1] == "b")
        assert ran == ["a"] * 4 + ["b"] and local.batches == 4 and sent == []
        assert local.try_rerender("b")  # sent again during its only batch, then the worker stops
        closing = threading.Thread(target=local.close, args=(10,))
        closing.start()
        wait_for(lambda: local.closed)
        finish_one.release()  # b's batch ends; closed, the chain stops there
        closing.join(10)
        assert not closing.is_alive() and ran.count("b") == 1 and local.batches == 5
        assert not local.try_rerender("b") and not local._chains and sent == []  # closed
        # A batch still running after close()'s wait is interrupted.
        other = LocalSteps(runtime, {}, limit=8, rerender=batch)
        assert other.try_rerender("c")
        wait_for(lambda: ran[-1] == "c")
        started = time.monotonic()
        other.close(0.2)
        assert time.monotonic() - started < 5 and other.batches == 0 and sent == []
        assert not other._chains and not other._tasks
    finally:
        for _ in range(5):
            finish_one.release()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


async def test_a_stream_of_events_is_relayed_in_few_passes(site: Any, hosts: Hosts) -> None:
    """Under a stream, one relay pass per `relay_min_gap` (default 100 ms) takes every event that came
    meanwhile: a pass costs the worker and PostgreSQL the same whatever it carries. The first event
    after a quiet spell is relayed at once."""
    config = fast_config()
    assert config.relay_min_gap == 0.1
    host = await hosts.start(config=config, relay=False)
    relay = Relay(site.database_url, host.queue, config)
    await relay.start()
    conn = await connect(site.database_url)

    async def relayed(count: int) -> None:
        deadline = time.monotonic() + 5
        while relay.relayed < base + count:
            assert time.monotonic() < deadline, relay.relayed
            await asyncio.sleep(0.002)

    try:
        await asyncio.wait_for(relay.listening.wait(), 10)
        await settle(site.database_url)  # what the site's setup left
        base = relay.relayed
        await asyncio.sleep(0.3)  # a quiet spell (the periodic pass of an idle relay holds nothing back)
        started = time.monotonic()
        await emit(conn, "entry.updated", {"id": "first", "type": "article"})
        await relayed(1)
        assert time.monotonic() - started < 0.09  # not held for the gap
        first_passes = relay.passes
        started = time.monotonic()
        for i in range(30):  # one event every 10 ms for 300 ms
            await emit(conn, "entry.updated", {"id": f"stream-{i}", "type": "article"})
            await asyncio.sleep(0.01)
        await relayed(31)
        elapsed = time.monotonic() - started
        stream_passes = relay.passes - first_passes
        # 30 passes without the gap; one per 100 ms (+ the one at either end) with it.
        assert stream_passes <= elapsed / config.relay_min_gap + 2, (stream_passes, elapsed)
        assert stream_passes < 15, stream_passes
    finally:
        await conn.close()
        await relay.stop()


async def test_two_relays_never_double_enqueue_or_double_apply(site: Any, hosts: Hosts) -> None:
    config = fast_config(reenqueue_after=60.0)
    host = await hosts.start(config=config, relay=False)
    relays = [Relay(site.database_url, host.queue, config) for _ in range(2)]
    for relay in relays:
        await relay.start()
    try:
        sem = asyncio.Semaphore(8)

        async def one(i: int) -> str:
            async with sem:
                return await new_entry(site, "article", {"title": f"Concurrent {i}", "rank": i})

        ids = await asyncio.gather(*(one(i) for i in range(40)))
        await settle(site.database_url)
    finally:
        for relay in relays:
            await relay.stop()
    assert all(relay.relayed > 0 for relay in relays), [relay.relayed for relay in relays]
    conn = await connect(site.database_url)
    try:
        steps = await conn.fetch(
            "SELECT s.event_id, s.status, count(*) OVER (PARTITION BY s.event_id) AS n "
            "FROM outbox_steps s JOIN outbox_events e ON e.id = s.event_id WHERE e.type = 'entry.published'"
        )
        assert len(steps) == 40 and all(r["n"] == 1 and r["status"] == "done" for r in steps)
        assert await conn.fetchval("SELECT count(*) FROM (SELECT s.* FROM outbox_steps s JOIN outbox_events e ON e.id = s.event_id WHERE e.type LIKE 'entry.%') AS outbox_steps") == 40
        delivered = await conn.fetch(
            "SELECT payload->>'source_event' AS source, count(*) AS n FROM outbox_events "
            "WHERE type = 'entry.delivered' GROUP BY 1"
        )
        assert len(delivered) == 40 and all(r["n"] == 1 for r in delivered)
        assert await conn.fetchval("SELECT count(*) FROM outbox_events WHERE relayed_at IS NULL") == 0
        all_steps = await conn.fetchval("SELECT count(*) FROM outbox_steps")
    finally:
        await conn.close()
    assert host.queue.sent == all_steps  # one message per step: no relay (or sweeper) sent one twice
    store = LocalObjectStore(site.settings.objects_dir)
    assert {k.rsplit("/", 1)[1][:-5] for k in store.list("entries/article/en/") if "by-slug" not in k} == {*ids, "index"}


async def test_republish_restores_and_cleans_up(site: Any, hosts: Hosts, services: Any) -> None:
    store = LocalObjectStore(site.settings.objects_dir)
    host = await hosts.start()
    article = await new_entry(site, "article", {"title": "Keep Me"})
    await settle(site.database_url)
    await host.stop()
    hosts.started.remove(host)

    original = store.get(f"entries/article/en/{article}.json")
    assert original is not None
    store.delete(f"entries/article/en/{article}.json")
    store.put("entries/article/en/by-slug/stale.json", b"{}", content_type="application/json",
              cache_control="x", surrogate_keys=["entry:gone"], version=1)
    store.put("entries/article/en/ghost.json", b"{}", content_type="application/json",
              cache_control="x", surrogate_keys=["entry:ghost"], version=1)
    store.put("entries/gone_type/en/index.json", b"{}", content_type="application/json",
              cache_control="x", surrogate_keys=["type:gone_type"])
    settings = load_settings({
        "CMS_DATA_DIR": str(site.settings.data_dir), "CMS_DATABASE_URL": site.database_url,
        "CMS_REDIS_URL": services.redis_url,
    })
    progress: list[tuple[int, int]] = []
    assert await asyncio.to_thread(republish, settings, lambda done, total: progress.append((done, total))) == 0
    assert progress and progress[-1][0] == progress[-1][1]
    restored = store.get(f"entries/article/en/{article}.json")
    assert restored is not None and restored.body == original.body and restored.version == original.version
    assert store.get("entries/article/en/by-slug/stale.json") is None
    assert store.get("entries/article/en/ghost.json") is None
    assert store.get("entries/gone_type/en/index.json") is None
    assert store.get("entries/article/en/by-slug/keep-me.json") is not None

    # a second run finds everything right: nothing is rewritten, removed or purged
    pool = await create_pool(site.database_url, min_size=1, max_size=2)
    try:
        again = await republish_all(pool, Publisher(store, settings, only_changed=True))
    finally:
        await pool.close()
    assert again.entries == 1 and again.changes.keys == [] and again.changes.tags == []
    assert len(again.changes.kept) == 2 * 2 + 3 * 2  # entry + by-slug per locale, 3 indexes per locale


async def test_sweeper_finds_exactly_the_steps_that_need_a_message(db: Any) -> None:
    from cms.workers import pipeline

    config = PipelineConfig(reenqueue_after=10, reenqueue_busy_after=60, max_attempts=3)
    cases = {
        # name: (status, attempts, enqueued_at offset s, lease_until offset s, next_attempt_at offset s)
        "never-sent": ("pending", 0, None, None, 0),
        "just-sent": ("pending", 0, -1, None, 0),
        "sent-20s-ago": ("pending", 0, -20, None, 0),
        "sent-90s-ago": ("pending", 0, -90, None, 0),
        "retry-not-due": ("pending", 1, None, None, 30),
        "running-leased": ("running", 1, -40, 20, 0),
        "running-expired": ("running", 1, -40, -5, 0),
        "running-expired-resent": ("running", 1, -2, -5, 0),
        "running-expired-last-try": ("running", 3, -40, -5, 0),
        "done": ("done", 1, -40, None, 0),
    }
    async with db.acquire() as conn:
        for name, (status, attempts, enqueued, lease, due) in cases.items():
            await conn.execute("INSERT INTO outbox_events (id, type, payload) VALUES ($1, 'entry.published', '{}')", name)
            await conn.execute(
                "INSERT INTO outbox_steps (event_id, step, status, attempts, enqueued_at, lease_until, next_attempt_at) "
                "VALUES ($1, 'deliver', $2, $3, now() + make_interval(secs => $4), now() + make_interval(secs => $5), "
                "now() + make_interval(secs => $6))",
                name, status, attempts, enqueued, lease, due,
            )
        async with conn.transaction():
            busy = await pipeline.due_steps(conn, config, queue_idle=False)
        assert busy.failed == 1
        assert sorted(e for e, _ in busy.due) == ["never-sent", "running-expired", "sent-90s-ago"]
        async with conn.transaction():
            idle = await pipeline.due_steps(conn, config, queue_idle=True)
        assert sorted(e for e, _ in idle.due) == ["sent-20s-ago"]  # the others were just sent
        assert await conn.fetchval(
            "SELECT status FROM (SELECT s.* FROM outbox_steps s JOIN outbox_events e ON e.id = s.event_id WHERE e.type LIKE 'entry.%') AS outbox_steps WHERE event_id = 'running-expired-last-try'"
        ) == "failed"
        # a duplicate message for a step that is leased, done or not due yet claims nothing
        for name in ("running-leased", "done", "retry-not-due"):
            assert await pipeline.claim(db, name, "deliver", config) is None
        claimed = await pipeline.claim(db, "running-expired", "deliver", config)
        assert claimed is not None and claimed.attempt == 2
        async with conn.transaction():
            await pipeline.complete(conn, claimed)
        stale = pipeline.Claim(claimed.event, "deliver", 1)  # the worker that lost the lease
        with pytest.raises(pipeline.LostLease):
            async with conn.transaction():
                await pipeline.complete(conn, stale)


async def test_content_type_change_rewrites_files_without_republish(site: Any, hosts: Hosts) -> None:
    """A removed or added field reaches the prerendered files (also of entries that include one)."""
    from tests.support import ARTICLE

    store = LocalObjectStore(site.settings.objects_dir)
    await hosts.start()
    author = await new_entry(site, "author", {"name": "Ada"})
    article = await new_entry(site, "article", {"title": "T", "rank": 3, "author": {"id": author}})
    await settle(site.database_url)
    assert b'"rank":3' in store.get(f"entries/article/en/{article}.json").body

    reduced = {**ARTICLE, "fields": [f for f in ARTICLE["fields"] if f["id"] != "rank"]}
    assert (await site.management.put("/v1/content-types/article", json=reduced)).status_code == 200
    r = await site.management.put("/v1/content-types/author", json={"name": "Author", "fields": [
        {"id": "name", "type": "text", "required": True}, {"id": "bio", "type": "text"}]})
    assert r.status_code == 200, r.text
    await settle(site.database_url)
    for locale in ("en", "de"):
        stored = store.get(f"entries/article/{locale}/{article}.json")
        expected = await api(site, f"/api/v1/entries/article/{article}?locale={locale}&include=*")
        assert stored is not None and stored.body == expected.content
        assert b'"rank"' not in stored.body and b'"bio":null' in stored.body
    index = store.get("entries/article/en/index.json")
    assert index is not None and index.body == (await api(site, "/api/v1/entries/article?locale=en&limit=100")).content


# ---------------------------------------------------------------------------------------------
# batched deliver steps


async def _pending_deliver_steps(db: Any) -> list[str]:
    """Give every unrelayed entry event its deliver step (what the relay does), without messages."""
    async with db.acquire() as conn:
        rows = await conn.fetch(
            "INSERT INTO outbox_steps (event_id, step) SELECT id, 'deliver' FROM outbox_events "
            "WHERE relayed_at IS NULL AND type IN ('entry.published', 'entry.unpublished', 'entry.deleted') "
            "ORDER BY seq RETURNING event_id"
        )
        await conn.execute("UPDATE outbox_events SET relayed_at = now() WHERE relayed_at IS NULL")
    return [r["event_id"] for r in rows]


async def _deliver_once(site: Any, db: Any, event_ids: list[str], batch: int) -> tuple[dict[str, str], list[str]]:
    """One deliver run on this loop (the actor's own function); returns its outcomes and its SQL."""
    from types import SimpleNamespace

    from cms.app.db.pool import QUERY_LOG
    from cms.workers.actors.deliver import deliver_step
    from cms.workers.actors.purge import PurgeSender

    runtime = SimpleNamespace(
        pool=db, config=fast_config(deliver_batch=batch), publisher=Publisher(LocalObjectStore(site.settings.objects_dir), site.settings),
        purge=PurgeSender(None, None),
    )
    log: list[str] = []
    token = QUERY_LOG.set(log)
    try:
        outcomes = await deliver_step(runtime, event_ids)
    finally:
        QUERY_LOG.reset(token)
    return outcomes, log


async def test_one_deliver_run_takes_the_backlog_with_a_constant_number_of_queries(site: Any, db: Any) -> None:
    """A worker that finds a backlog delivers it in one run: the SQL it runs does not grow with
    the number of entries, and every entry gets its files and its own entry.delivered."""
    store = LocalObjectStore(site.settings.objects_dir)
    author = await new_entry(site, "author", {"name": "Ada"})
    await _pending_deliver_steps(db)
    await _deliver_once(site, db, [], batch=100)  # the author first: included by every article

    statements: dict[int, int] = {}
    for n in (3, 12):
        ids = [await new_entry(site, "article", {"title": f"Batch {n} {i}", "author": {"id": author}}) for i in range(n)]
        events = await _pending_deliver_steps(db)
        assert len(events) == n
        outcomes, log = await _deliver_once(site, db, events[:1], batch=100)
        assert outcomes == {event: "done" for event in events}  # asked for one, took all n
        statements[n] = len(log)
        for entry_id in ids:
            stored = store.get(f"entries/article/en/{entry_id}.json")
            assert stored is not None
            expected = await api(site, f"/api/v1/entries/article/{entry_id}?include=*")
            assert stored.body == expected.content  # byte-identical to the API, author inlined
            assert b'"Ada"' in stored.body
        delivered = await db.fetch(
            "SELECT payload->>'source_event' AS source FROM outbox_events WHERE type = 'entry.delivered' "
            "AND payload->>'source_event' = ANY($1::text[])", events,
        )
        assert sorted(r["source"] for r in delivered) == sorted(events)  # exactly one each
    assert statements[3] == statements[12], statements


async def test_a_bad_event_in_a_batch_fails_alone(site: Any, db: Any) -> None:
    store = LocalObjectStore(site.settings.objects_dir)
    good = [await new_entry(site, "author", {"name": f"Good {i}"}) for i in range(3)]
    async with db.acquire() as conn:  # an event the deliver step cannot handle (no entry id)
        await conn.execute(
            "INSERT INTO outbox_events (id, type, payload) VALUES ('bad-event', 'entry.published', '{\"type\": \"author\"}')"
        )
    events = await _pending_deliver_steps(db)
    outcomes, _ = await _deliver_once(site, db, events, batch=100)
    assert outcomes.pop("bad-event") == "pending"  # retried after its backoff
    assert set(outcomes.values()) == {"done"} and len(outcomes) == 3
    for entry_id in good:
        assert store.get(f"entries/author/en/{entry_id}.json") is not None
    row = await db.fetchrow("SELECT status, attempts, last_error FROM outbox_steps WHERE event_id = 'bad-event'")
    assert (row["status"], row["attempts"]) == ("pending", 1) and "KeyError" in row["last_error"]
