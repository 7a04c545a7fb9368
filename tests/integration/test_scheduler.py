"""Scheduled actions over the API, and the scheduler: timing, failures, releases, leadership."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg

from cms.app.db.pool import connect
from cms.workers.scheduler import Scheduler, run_due


def _at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


async def _rows(apps, sql: str, *args) -> list:
    conn = await asyncpg.connect(apps.database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _article(m, entry_id: str, **fields) -> None:
    r = await m.put(f"/v1/entries/article/{entry_id}", json={"fields": fields or {"title": f"T {entry_id}"}})
    assert r.status_code == 201, r.text


async def _schedule(m, **body) -> dict:
    r = await m.post("/v1/scheduled-actions", json=body)
    assert r.status_code == 201, r.text
    return r.json()["data"]


async def _fire(apps) -> int:
    conn = await connect(apps.database_url)
    try:
        return await run_due(conn, apps.settings.assets_url)
    finally:
        await conn.close()


async def _published_events(apps) -> Counter:
    rows = await _rows(apps, "SELECT payload FROM outbox_events WHERE type = 'entry.published'")
    return Counter(json.loads(r["payload"])["id"] for r in rows)


async def _until(check, timeout: float) -> float:
    """Poll check() until truthy; returns the seconds it took (fails after timeout)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not await check():
        assert loop.time() - started < timeout, "timed out"
        await asyncio.sleep(0.05)
    return loop.time() - started


def _start(apps, stop: asyncio.Event) -> tuple[Scheduler, asyncio.Task]:
    scheduler = Scheduler(apps.database_url, apps.settings.assets_url)
    return scheduler, asyncio.create_task(scheduler.run(stop))


async def test_publish_fires_within_two_seconds_of_at(blog) -> None:
    m = blog.management
    await _article(m, "e1")
    action = await _schedule(m, action="publish", entry={"type": "article", "id": "e1"}, at=_at(1.0))
    assert action["status"] == "pending" and action["error"] is None and action["release"] is None
    assert action["entry"] == {"type": "article", "id": "e1"} and action["action"] == "publish"
    assert action["at"].endswith("Z") and action["executed_at"] is None
    assert action["created_by"]["kind"] == "key"
    stop = asyncio.Event()
    scheduler, task = _start(blog, stop)
    try:
        async def published() -> bool:
            return (await m.get("/v1/entries/article/e1")).json()["data"]["status"] == "published"

        await _until(published, 5)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert not scheduler.is_leader  # stopped cleanly, lock given up
    row = (await _rows(blog, "SELECT a.at, a.executed_at, e.published_at FROM scheduled_actions a "
                             "JOIN entries e ON e.id = a.entry_id WHERE a.id = $1", action["id"]))[0]
    assert row["at"] <= row["published_at"] < row["at"] + timedelta(seconds=2)
    done = (await m.get(f"/v1/scheduled-actions/{action['id']}")).json()["data"]
    assert done["status"] == "done" and done["executed_at"] and done["error"] is None
    # Too late to cancel.
    r = await m.delete(f"/v1/scheduled-actions/{action['id']}")
    assert r.status_code == 409
    audit = await _rows(blog, "SELECT actor FROM audit_log WHERE action = 'entry.publish'")
    assert json.loads(audit[-1]["actor"])["kind"] == "system"


async def test_failed_action_records_the_error(blog) -> None:
    m = blog.management
    await _article(m, "untitled", rank=3)  # no title: cannot be published
    await _article(m, "live")
    assert (await m.post("/v1/entries/article/live/publish")).status_code == 200
    bad = await _schedule(m, action="publish", entry={"type": "article", "id": "untitled"}, at=_at(-60))
    off = await _schedule(m, action="unpublish", entry={"type": "article", "id": "live"}, at=_at(-30))
    later = await _schedule(m, action="publish", entry={"type": "article", "id": "live"}, at=_at(3600))
    assert await _fire(blog) == 2
    failed = (await m.get(f"/v1/scheduled-actions/{bad['id']}")).json()["data"]
    assert failed["status"] == "failed" and "title" in failed["error"] and failed["executed_at"]
    assert (await m.get("/v1/entries/article/untitled")).json()["data"]["status"] == "draft"
    assert (await m.get(f"/v1/scheduled-actions/{off['id']}")).json()["data"]["status"] == "done"
    assert (await m.get("/v1/entries/article/live")).json()["data"]["status"] == "draft"
    assert (await m.get(f"/v1/scheduled-actions/{later['id']}")).json()["data"]["status"] == "pending"
    assert await _fire(blog) == 0
    # An entry deleted before its time: the action fails, it does not linger.
    await _article(m, "doomed")
    doomed = await _schedule(m, action="publish", entry={"type": "article", "id": "doomed"}, at=_at(-1))
    assert (await m.delete("/v1/entries/article/doomed")).status_code == 204
    assert await _fire(blog) == 1
    gone = (await m.get(f"/v1/scheduled-actions/{doomed['id']}")).json()["data"]
    assert gone["status"] == "failed" and "not found" in gone["error"]


async def test_cancel_list_and_validation(blog) -> None:
    m = blog.management
    await _article(m, "e1")
    ids = [(await _schedule(m, action="publish", entry={"type": "article", "id": "e1"}, at=_at(100 + i)))["id"]
           for i in range(5)]
    assert (await m.delete(f"/v1/scheduled-actions/{ids[0]}")).status_code == 204
    canceled = (await m.get(f"/v1/scheduled-actions/{ids[0]}")).json()["data"]
    assert canceled["status"] == "canceled"
    assert (await m.delete(f"/v1/scheduled-actions/{ids[0]}")).status_code == 409
    assert (await m.delete("/v1/scheduled-actions/nope")).status_code == 404
    assert (await m.get("/v1/scheduled-actions/nope")).status_code == 404

    page = (await m.get("/v1/scheduled-actions", params={"status": "pending", "limit": 3})).json()
    assert page["meta"]["total"] == 4 and len(page["data"]) == 3
    rest = (await m.get("/v1/scheduled-actions", params={
        "status": "pending", "limit": 3, "cursor": page["meta"]["next_cursor"],
    })).json()
    assert rest["meta"]["next_cursor"] is None
    assert [a["id"] for a in page["data"] + rest["data"]] == ids[1:]  # ordered by `at`
    assert (await m.get("/v1/scheduled-actions", params={"status": "canceled"})).json()["meta"]["total"] == 1
    assert (await m.get("/v1/scheduled-actions")).json()["meta"]["total"] == 5
    assert (await m.get("/v1/scheduled-actions", params={"status": "later"})).status_code == 400
    assert (await m.get("/v1/scheduled-actions", params={"cursor": "zzz"})).status_code == 400

    async def errors(body) -> set[str]:
        r = await m.post("/v1/scheduled-actions", json=body)
        assert r.status_code == 422, r.text
        return {e["pointer"] for e in r.json()["errors"]}

    assert await errors({"action": "publish", "entry": {"type": "article", "id": "e1"}, "at": "2030-01-01T00:00:00"}) == {"/at"}
    assert await errors({"action": "publish", "entry": {"type": "article", "id": "e1"}, "at": "tomorrow"}) == {"/at"}
    assert await errors({"action": "delete", "entry": {"type": "article", "id": "e1"}, "at": _at(5)}) == {"/action"}
    assert await errors({"action": "publish", "at": _at(5)}) == {""}
    assert await errors({"action": "publish", "entry": {"type": "article", "id": "e1"}, "release": "r", "at": _at(5)}) == {""}
    assert await errors({"action": "publish", "entry": {"type": "Article", "id": "bad id"}, "at": _at(5), "x": 1}) == {
        "/entry/type", "/entry/id", "/x",
    }
    assert await errors({"action": "publish", "entry": {"type": "article", "id": "missing"}, "at": _at(5)}) == {"/entry"}
    assert await errors({"action": "publish", "release": "missing", "at": _at(5)}) == {"/release"}
    # Offsets other than Z are fine and come back as UTC.
    action = await _schedule(m, action="publish", entry={"type": "article", "id": "e1"}, at="2030-01-01T10:00:00+02:00")
    assert action["at"] == "2030-01-01T08:00:00.000Z"


async def test_scopes(blog) -> None:
    m = blog.management
    await _article(m, "e1")
    action = await _schedule(m, action="publish", entry={"type": "article", "id": "e1"}, at=_at(100))
    secrets = [await blog.key("management", scopes=s) for s in (["content:read"], ["content:write", "content:read"])]
    body = {"action": "publish", "entry": {"type": "article", "id": "e1"}, "at": _at(100)}
    for secret in secrets:
        async with blog.client("management", secret) as client:
            assert (await client.get("/v1/scheduled-actions")).status_code == 200
            assert (await client.get(f"/v1/scheduled-actions/{action['id']}")).status_code == 200
            assert (await client.post("/v1/scheduled-actions", json=body)).status_code == 403
            assert (await client.delete(f"/v1/scheduled-actions/{action['id']}")).status_code == 403
    secret = await blog.key("management", scopes=["content:publish"], content_types=["author"])
    async with blog.client("management", secret) as client:
        assert (await client.post("/v1/scheduled-actions", json=body)).status_code == 403


async def test_release_scheduling(blog) -> None:
    m = blog.management
    await _article(m, "e1")
    await _article(m, "e2")
    entries = [{"type": "article", "id": "e1"}, {"type": "article", "id": "e2"}]
    rid = (await m.post("/v1/releases", json={"title": "R", "entries": entries})).json()["data"]["id"]
    r = await m.post("/v1/scheduled-actions", json={"action": "unpublish", "release": rid, "at": _at(1)})
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/action"
    action = await _schedule(m, action="publish", release=rid, at=_at(-1))
    assert action["release"] == rid and action["entry"] is None
    # A release with a pending action cannot be deleted.
    assert (await m.delete(f"/v1/releases/{rid}")).status_code == 409
    assert await _fire(blog) == 1
    assert (await m.get(f"/v1/scheduled-actions/{action['id']}")).json()["data"]["status"] == "done"
    assert (await m.get(f"/v1/releases/{rid}")).json()["data"]["status"] == "published"
    assert await _published_events(blog) == Counter({"e1": 1, "e2": 1})
    assert len(await _rows(blog, "SELECT 1 FROM outbox_events WHERE type = 'release.published'")) == 1
    # Published releases cannot be scheduled again; a failing release leaves everything unpublished.
    r = await m.post("/v1/scheduled-actions", json={"action": "publish", "release": rid, "at": _at(1)})
    assert r.status_code == 422
    await _article(m, "bad", rank=1)
    rid2 = (await m.post("/v1/releases", json={"title": "R2", "entries": [
        {"type": "article", "id": "e1"}, {"type": "article", "id": "bad"},
    ]})).json()["data"]["id"]
    action2 = await _schedule(m, action="publish", release=rid2, at=_at(-1))
    assert await _fire(blog) == 1
    failed = (await m.get(f"/v1/scheduled-actions/{action2['id']}")).json()["data"]
    assert failed["status"] == "failed" and "/entries/1" in failed["error"]
    assert (await m.get(f"/v1/releases/{rid2}")).json()["data"]["status"] == "open"
    assert await _published_events(blog) == Counter({"e1": 1, "e2": 1})


async def _due_actions(m, prefix: str, count: int) -> list[str]:
    ids = []
    for i in range(count):
        await _article(m, f"{prefix}{i}")
        ids.append((await _schedule(m, action="publish", entry={"type": "article", "id": f"{prefix}{i}"}, at=_at(-1)))["id"])
    return ids


async def test_concurrent_run_due_applies_each_action_once(blog) -> None:
    m = blog.management
    await _due_actions(m, "c", 20)
    conns = [await connect(blog.database_url) for _ in range(3)]
    try:
        counts = await asyncio.gather(*(run_due(c, blog.settings.assets_url) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sum(counts) == 20
    assert await _published_events(blog) == Counter({f"c{i}": 1 for i in range(20)})
    statuses = await _rows(blog, "SELECT status, count(*) AS n FROM scheduled_actions GROUP BY status")
    assert {r["status"]: r["n"] for r in statuses} == {"done": 20}


async def test_two_schedulers_one_leader_and_failover(blog) -> None:
    m = blog.management
    await _due_actions(m, "d", 20)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    a, task_a = _start(blog, stop_a)
    b, task_b = _start(blog, stop_b)
    tasks = {id(a): (task_a, stop_a), id(b): (task_b, stop_b)}
    try:
        async def all_done() -> bool:
            rows = await _rows(blog, "SELECT count(*) AS n FROM scheduled_actions WHERE status = 'done'")
            return rows[0]["n"] == 20

        await _until(all_done, 10)
        assert await _published_events(blog) == Counter({f"d{i}": 1 for i in range(20)})
        for _ in range(10):
            assert [a.is_leader, b.is_leader].count(True) == 1
            await asyncio.sleep(0.1)
        leader, standby = (a, b) if a.is_leader else (b, a)

        # The leader dies: its connection closes, the lock goes with it, the standby takes over.
        leader_task, leader_stop = tasks[id(leader)]
        leader_task.cancel()
        await asyncio.gather(leader_task, return_exceptions=True)

        async def standby_leads() -> bool:
            return standby.is_leader

        took = await _until(standby_leads, 5)
        print(f"\nstandby took over after {took:.2f} s")
        await _article(m, "after")
        action = await _schedule(m, action="publish", entry={"type": "article", "id": "after"}, at=_at(0.5))

        async def fired() -> bool:
            return (await m.get(f"/v1/scheduled-actions/{action['id']}")).json()["data"]["status"] == "done"

        await _until(fired, 5)

        # A leader whose connection is killed from outside gives up the lock too; someone leads again.
        other_stop = asyncio.Event()
        c, task_c = _start(blog, other_stop)
        tasks[id(c)] = (task_c, other_stop)
        await asyncio.sleep(0.3)
        assert standby.is_leader and not c.is_leader
        pid = standby.conn.get_server_pid()
        await _rows(blog, "SELECT pg_terminate_backend($1)", pid)

        async def someone_leads_again() -> bool:
            return (standby.is_leader or c.is_leader) and (standby.conn is None or standby.conn.get_server_pid() != pid)

        await _until(someone_leads_again, 5)
        assert [standby.is_leader, c.is_leader].count(True) == 1
        await _article(m, "after2")
        action = await _schedule(m, action="publish", entry={"type": "article", "id": "after2"}, at=_at(0))
        await _until(fired, 5)
        assert (await _published_events(blog))["after2"] == 1
    finally:
        for _, stop in tasks.values():
            stop.set()
        await asyncio.gather(*(t for t, _ in tasks.values()), return_exceptions=True)


async def test_scheduler_process_fires_and_stops_on_sigterm(blog, services) -> None:
    import os
    import signal
    import sys

    m = blog.management
    await _article(m, "p1")
    action = await _schedule(m, action="publish", entry={"type": "article", "id": "p1"}, at=_at(0.5))
    env = {**os.environ, "CMS_DATABASE_URL": blog.database_url, "CMS_REDIS_URL": services.redis_url,
           "CMS_DATA_DIR": str(blog.settings.data_dir)}
    code = "import sys; from cms.app.config import load_settings; from cms.workers.scheduler import run_scheduler; " \
           "sys.exit(run_scheduler(load_settings()))"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, env=env)
    try:
        async def fired() -> bool:
            return (await m.get(f"/v1/scheduled-actions/{action['id']}")).json()["data"]["status"] == "done"

        await _until(fired, 15)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
