"""Webhooks against real HTTP receivers on 127.0.0.1: subscriptions, signed deliveries, retries kept in
PostgreSQL, the delivery log, redelivery, ping, rotation, 410, ordering, hanging receivers, SSRF."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook

from cms.app.db.pool import connect
from cms.app.webhooks import fanout
from cms.app.webhooks import repository as webhooks_repo
from cms.app.webhooks.signing import verify_webhook
from tests.support import ARTICLE, AUTHOR, TAG, Apps, Hosts, Recorder, eventually, fast_config

FAST = {"CMS_WEBHOOK_ALLOW_PRIVATE": "1", "CMS_WEBHOOK_RETRY_SCHEDULE": "0.2,0.4,0.6", "CMS_WEBHOOK_TIMEOUT_SECONDS": "2"}


@pytest.fixture
def receivers() -> Any:
    started: list[Recorder] = []

    def start(**options: Any) -> Recorder:
        server = Recorder(**options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


async def _blog(apps: Apps) -> None:
    for type_id, body in (("author", AUTHOR), ("tag", TAG), ("article", ARTICLE)):
        assert (await apps.management.put(f"/v1/content-types/{type_id}", json=body)).status_code == 201


async def _subscribe(apps: Apps, url: str, **extra: Any) -> dict[str, Any]:
    r = await apps.management.post("/v1/webhooks", json={"url": url, "events": ["entry.*"], **extra})
    assert r.status_code == 201, r.text
    return r.json()["data"]


async def _publish(apps: Apps, title: str, entry_id: str | None = None) -> str:
    m = apps.management
    if entry_id is None:
        entry_id = (await m.post("/v1/entries/article", json={"fields": {"title": title}})).json()["data"]["id"]
    else:
        assert (await m.patch(f"/v1/entries/article/{entry_id}", json={"fields": {"title": title}})).status_code == 200
    assert (await m.post(f"/v1/entries/article/{entry_id}/publish")).status_code == 200
    return entry_id


async def _deliveries(apps: Apps, webhook_id: str, **params: str) -> list[dict[str, Any]]:
    r = await apps.management.get(f"/v1/webhooks/{webhook_id}/deliveries", params={"limit": "100", **params})
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def _only(apps: Apps, webhook_id: str, **params: str) -> dict[str, Any]:
    deliveries = await _deliveries(apps, webhook_id, **params)
    assert len(deliveries) == 1, deliveries
    return deliveries[0]


def _published(server: Recorder) -> list[Any]:
    return [r for r in server.snapshot() if r.json()["type"] == "entry.published"]


async def test_subscriptions_show_the_secret_once_and_check_what_they_are_given(apps_with: Any) -> None:
    async with apps_with() as apps:
        m = apps.management
        r = await m.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["*"]})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/url"  # loopback refused
        apps.management_app.state.webhook_resolver = _resolver({"hooks.example": "93.184.216.34"})
        created = await _subscribe(apps, "https://hooks.example/cms", events=["entry.published", "release.*"],
                                   types=["article"], headers={"X-Team": "web"})
        assert created["secret"].startswith("whsec_") and created["active"] is True
        got = (await m.get(f"/v1/webhooks/{created['id']}")).json()["data"]
        assert "secret" not in got and got["events"] == ["entry.published", "release.*"] and got["types"] == ["article"]
        assert "secret" not in json.dumps((await m.get("/v1/webhooks")).json())
        conn = await connect(apps.database_url)
        try:  # stored encrypted, never in plaintext
            stored = await conn.fetchval("SELECT secret FROM webhooks WHERE id = $1", created["id"])
            assert created["secret"].encode() not in bytes(stored)
            assert base64.b64decode(created["secret"][6:]) not in bytes(stored)
        finally:
            await conn.close()
        for bad, pointer in (
            ({"url": "ftp://hooks.example/x", "events": ["*"]}, "/url"),
            ({"url": "https://hooks.example/x", "events": ["entry.nope"]}, "/events/0"),
            ({"url": "https://hooks.example/x", "events": []}, "/events"),
            ({"url": "https://hooks.example/x", "events": ["*"], "headers": {"webhook-id": "x"}}, "/headers/webhook-id"),
            ({"url": "https://hooks.example/x", "events": ["*"], "headers": {"Host": "evil"}}, "/headers/Host"),
            ({"url": "https://hooks.example/x", "events": ["*"], "types": ["Bad Type"]}, "/types/0"),
            ({"url": "https://user:pw@hooks.example/x", "events": ["*"]}, "/url"),
        ):
            r = await m.post("/v1/webhooks", json=bad)
            assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == pointer, (bad, r.text)
        apps.management_app.state.webhook_resolver = _resolver({"hooks.example": "10.0.0.7"})
        r = await m.post("/v1/webhooks", json={"url": "https://hooks.example/x", "events": ["*"]})
        assert r.status_code == 422 and "private" in r.json()["errors"][0]["detail"], r.text
        r = await m.patch(f"/v1/webhooks/{created['id']}", json={"active": False, "events": ["*"]})
        assert r.status_code == 200 and r.json()["data"]["active"] is False and r.json()["data"]["version"] == 2
        # scope and type limits
        reader = await apps.key("management", scopes=["content:read"])
        async with apps.client("management", reader) as client:
            assert (await client.get("/v1/webhooks")).status_code == 403
        limited = await apps.key("management", scopes=["webhooks:manage"], content_types=["author"])
        async with apps.client("management", limited) as client:
            assert (await client.get(f"/v1/webhooks/{created['id']}")).status_code == 404  # not of its types
            r = await client.post("/v1/webhooks", json={"url": "https://hooks.example/x", "events": ["*"], "types": ["article"]})
            assert r.status_code == 422, r.text
        assert (await m.delete(f"/v1/webhooks/{created['id']}")).status_code == 204
        assert (await m.get(f"/v1/webhooks/{created['id']}")).status_code == 404


def _resolver(answers: dict[str, str]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        return [answers[host]] if host in answers else []

    return resolve


async def test_a_publish_is_delivered_signed_with_the_event_id(apps_with: Any, hosts: Hosts, receivers: Any) -> None:
    async with apps_with(**FAST) as apps:
        await _blog(apps)
        receiver = receivers()
        hook = await _subscribe(apps, f"{receiver.url}/hook", headers={"X-Team": "web"})
        await hosts.start(hosts.settings(**FAST), fast_config())
        entry_id = await _publish(apps, "Hello Hooks")

        async def arrived() -> Any:
            published = _published(receiver)
            assert len(published) == 1
            return published[0]

        request = await eventually(arrived, timeout=15)
        headers = request.headers
        # the library receivers use, and the package's own helper, both accept it
        StandardWebhook(hook["secret"]).verify(request.body, {k: v for k, v in headers.items()})
        verify_webhook(headers, request.body, hook["secret"])
        body = request.json()
        assert body["data"]["id"] == entry_id and body["data"]["type"] == "article"
        assert body["data"]["entry"]["fields"]["title"] == "Hello Hooks" and body["data"]["entry"]["id"] == entry_id
        assert headers["x-team"] == "web" and headers["content-type"] == "application/json"
        conn = await connect(apps.database_url)
        try:
            event_id = await conn.fetchval(
                "SELECT id FROM outbox_events WHERE type = 'entry.published' AND payload->>'id' = $1", entry_id)
        finally:
            await conn.close()
        assert headers["webhook-id"] == event_id
        datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))

        async def logged() -> None:
            deliveries = [d for d in await _deliveries(apps, hook["id"]) if d["event_type"] == "entry.published"]
            assert [d["status"] for d in deliveries] == ["succeeded"] and len(deliveries[0]["attempts"]) == 1
            assert deliveries[0]["attempts"][0]["status_code"] == 200

        await eventually(logged, timeout=10)


async def test_failures_follow_the_schedule_keep_the_id_and_end_failed_then_redeliver(
    apps_with: Any, hosts: Hosts, receivers: Any,
) -> None:
    async with apps_with(**FAST) as apps:
        await _blog(apps)
        receiver = receivers(status=500)
        hook = await _subscribe(apps, receiver.url, events=["entry.published"])
        await hosts.start(hosts.settings(**FAST), fast_config())
        await _publish(apps, "Flaky")

        async def failed() -> dict[str, Any]:
            delivery = await _only(apps, hook["id"])
            assert delivery["status"] == "failed", delivery
            return delivery

        delivery = await eventually(failed, timeout=20)
        attempts = delivery["attempts"]
        assert len(attempts) == 4 and all(a["status_code"] == 500 for a in attempts)  # 1 + len(schedule)
        times = [datetime.fromisoformat(a["at"].replace("Z", "+00:00")) for a in attempts]
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
        assert all(gap >= want - 0.05 for gap, want in zip(gaps, (0.2, 0.4, 0.6), strict=True)), gaps
        ids = {r.headers["webhook-id"] for r in receiver.snapshot()}
        assert ids == {delivery["event_id"]} and len(receiver.snapshot()) == 4
        receiver.status = 200
        r = await apps.management.post(f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver")
        assert r.status_code == 200, r.text

        async def redelivered() -> None:
            again = await _only(apps, hook["id"], status="succeeded")
            assert len(again["attempts"]) == 5

        await eventually(redelivered, timeout=10)
        assert {r.headers["webhook-id"] for r in receiver.snapshot()} == {delivery["event_id"]}


async def test_a_receiver_down_for_most_of_the_schedule_gets_every_event_in_order(
    apps_with: Any, hosts: Hosts, receivers: Any,
) -> None:
    env = {**FAST, "CMS_WEBHOOK_RETRY_SCHEDULE": "0.3,0.3,0.3,0.3,0.3,0.3"}
    async with apps_with(**env) as apps:
        await _blog(apps)
        receiver = receivers(status=503)
        hook = await _subscribe(apps, receiver.url, events=["entry.published"])
        await hosts.start(hosts.settings(**env), fast_config())
        entry_id = await _publish(apps, "v1")
        await _publish(apps, "v2", entry_id)
        await _publish(apps, "v3", entry_id)
        async def retried() -> list[Any]:  # down for most of the schedule: at least two attempts
            attempts = receiver.snapshot()
            assert len(attempts) >= 2
            return attempts

        await eventually(retried, timeout=10)
        await asyncio.sleep(0.3)
        sent = receiver.snapshot()
        # while the first event of the entry is not delivered, its later events wait
        assert len(sent) >= 2 and {r.json()["data"]["version"] for r in sent} == {1}
        receiver.status = 200

        async def all_delivered() -> None:
            ok = _published(receiver)[len(sent):]
            assert [r.json()["data"]["version"] for r in ok] == [1, 2, 3]
            statuses = [d["status"] for d in await _deliveries(apps, hook["id"])]
            assert statuses == ["succeeded"] * 3

        await eventually(all_delivered, timeout=20)
        versions = [r.json()["data"]["version"] for r in receiver.snapshot() if r.headers.get("webhook-id")]
        assert versions == sorted(versions)  # never a later version before an earlier one


async def test_a_later_event_fanned_out_first_waits_for_the_earlier_one(apps_with: Any) -> None:
    """Any worker takes any fan-out step: an entry's second event may be fanned out before its first.
    Its delivery must still wait until the first event's delivery exists and has finished."""
    async with apps_with(**FAST) as apps:
        await _blog(apps)
        hook = await _subscribe(apps, "http://127.0.0.1:9/hook", events=["entry.published"])
        entry_id = await _publish(apps, "v1")
        await _publish(apps, "v2", entry_id)
        conn = await connect(apps.database_url)
        try:
            rows = await conn.fetch("SELECT id, seq, type, payload, created_at FROM outbox_events "
                                    "WHERE type = 'entry.published' ORDER BY seq")
            first, second = (fanout.Event(r["id"], r["seq"], r["type"], r["payload"], r["created_at"])
                             for r in rows)
            await conn.executemany("INSERT INTO outbox_steps (event_id, step) VALUES ($1, 'webhook')",
                                   [(first.id,), (second.id,)])

            async def fan_out(event: fanout.Event) -> None:
                async with conn.transaction():
                    await webhooks_repo.insert_deliveries(conn, await fanout.deliveries_for(conn, [event]))
                    await conn.execute("UPDATE outbox_steps SET status = 'done' WHERE event_id = $1", event.id)

            async def claim() -> list[str]:
                undo = conn.transaction()  # rolled back: nothing is really taken
                await undo.start()
                try:
                    return [r["event_id"] for r in await webhooks_repo.claim_due(conn, 10, 30, 4)]
                finally:
                    await undo.rollback()

            await fan_out(second)
            assert await claim() == []  # the first event is not fanned out yet
            await fan_out(first)
            assert await claim() == [first.id]  # the second waits for the first to finish
            await conn.execute("UPDATE webhook_deliveries SET status = 'succeeded' WHERE event_id = $1", first.id)
            assert await claim() == [second.id]
            assert len(await _deliveries(apps, hook["id"])) == 2
        finally:
            await conn.close()


async def test_410_disables_the_endpoint(apps_with: Any, hosts: Hosts, receivers: Any) -> None:
    async with apps_with(**FAST) as apps:
        await _blog(apps)
        gone = receivers(status=410)
        hook = await _subscribe(apps, gone.url, events=["entry.published"])
        await hosts.start(hosts.settings(**FAST), fast_config())
        await _publish(apps, "Once")

        async def disabled() -> None:
            got = (await apps.management.get(f"/v1/webhooks/{hook['id']}")).json()["data"]
            assert got["active"] is False and "410" in got["disabled_reason"]

        await eventually(disabled, timeout=15)
        await _publish(apps, "Twice")
        await asyncio.sleep(1.0)
        assert len(gone.snapshot()) == 1  # one attempt, then nothing more


async def test_five_days_of_failures_disable_the_endpoint_and_a_success_forgives(
    apps_with: Any, hosts: Hosts, receivers: Any,
) -> None:
    async with apps_with(**FAST) as apps:
        await _blog(apps)
        failing, flaky = receivers(status=500), receivers(status=500)
        doomed = await _subscribe(apps, failing.url, events=["entry.published"])
        recovering = await _subscribe(apps, flaky.url, events=["entry.published"])
        conn = await connect(apps.database_url)
        try:  # both have failed since a while: one for 5 days and a minute, one for 4 days
            await conn.execute("UPDATE webhooks SET failing_since = now() - interval '5 days 1 minute' WHERE id = $1",
                               doomed["id"])
            await conn.execute("UPDATE webhooks SET failing_since = now() - interval '4 days' WHERE id = $1",
                               recovering["id"])
            await hosts.start(hosts.settings(**FAST), fast_config())
            await _publish(apps, "Once")

            async def disabled() -> None:
                got = (await apps.management.get(f"/v1/webhooks/{doomed['id']}")).json()["data"]
                assert got["active"] is False and got["disabled_reason"] == "failing for 5 days"

            await eventually(disabled, timeout=15)
            assert len(failing.snapshot()) == 1  # disabled at its first failure past 5 days
            assert (await apps.management.get(f"/v1/webhooks/{recovering['id']}")).json()["data"]["active"] is True
            flaky.status = 200

            async def forgiven() -> None:
                assert await conn.fetchval("SELECT failing_since FROM webhooks WHERE id = $1", recovering["id"]) is None

            await eventually(forgiven, timeout=15)
            got = (await apps.management.get(f"/v1/webhooks/{recovering['id']}")).json()["data"]
            assert got["active"] is True and got["disabled_reason"] is None
        finally:
            await conn.close()


async def test_a_hanging_receiver_costs_one_attempt_and_blocks_no_one(apps_with: Any, hosts: Hosts, receivers: Any) -> None:
    async with apps_with(**FAST) as apps:  # CMS_WEBHOOK_TIMEOUT_SECONDS=2 here, 15 by default
        await _blog(apps)
        hanging = receivers(delay=30)
        healthy = receivers()
        slow = await _subscribe(apps, hanging.url, events=["entry.published"])
        await _subscribe(apps, healthy.url, events=["entry.published"])
        await hosts.start(hosts.settings(**FAST), fast_config())
        await _publish(apps, "Now")

        async def healthy_got_it() -> None:
            assert len(_published(healthy)) == 1

        await eventually(healthy_got_it, timeout=5)  # not after the hanging one's 2 s

        async def timed_out() -> None:
            delivery = await _only(apps, slow["id"])
            assert delivery["attempts"] and "timeout" in delivery["attempts"][0]["error"]

        await eventually(timed_out, timeout=10)


async def test_ping_and_secret_rotation(apps_with: Any, hosts: Hosts, receivers: Any) -> None:
    async with apps_with(**FAST) as apps:
        receiver = receivers()
        hook = await _subscribe(apps, receiver.url, events=["content_type.saved"], types=["nothing_here"])
        await hosts.start(hosts.settings(**FAST), fast_config())
        r = await apps.management.post(f"/v1/webhooks/{hook['id']}/test")
        assert r.status_code == 201 and r.json()["data"]["event_type"] == "ping"

        async def pinged() -> Any:
            requests = receiver.snapshot()
            assert len(requests) == 1
            return requests[0]

        ping = await eventually(pinged, timeout=10)
        assert ping.json()["type"] == "ping" and ping.json()["data"]["webhook_id"] == hook["id"]
        verify_webhook(ping.headers, ping.body, hook["secret"])
        rotated = (await apps.management.post(f"/v1/webhooks/{hook['id']}/rotate-secret")).json()["data"]
        assert rotated["secret"] != hook["secret"]
        assert (await apps.management.post(f"/v1/webhooks/{hook['id']}/test")).status_code == 201

        async def pinged_again() -> Any:
            requests = receiver.snapshot()
            assert len(requests) == 2
            return requests[1]

        second = await eventually(pinged_again, timeout=10)
        assert len(second.headers["webhook-signature"].split()) == 2  # during the grace: both secrets sign
        verify_webhook(second.headers, second.body, rotated["secret"])
        verify_webhook(second.headers, second.body, hook["secret"])


async def test_an_address_that_turned_private_is_refused_at_send_time(apps_with: Any, hosts: Hosts, receivers: Any) -> None:
    """Saved while hooks.example pointed at a public address; when the worker sends, the name
    answers with the loopback receiver: refused, never connected, the attempt says why."""
    async with apps_with(CMS_WEBHOOK_RETRY_SCHEDULE="0.2", CMS_WEBHOOK_TIMEOUT_SECONDS="2") as apps:
        receiver = receivers()
        port = receiver.url.rsplit(":", 1)[1]
        apps.management_app.state.webhook_resolver = _resolver({"hooks.example": "93.184.216.34"})
        hook = await _subscribe(apps, f"http://hooks.example:{port}/x", events=["*"])
        settings = hosts.settings(CMS_WEBHOOK_RETRY_SCHEDULE="0.2", CMS_WEBHOOK_TIMEOUT_SECONDS="2")
        await hosts.start(settings, fast_config(), webhook_options={"resolver": _resolver({"hooks.example": "127.0.0.1"})})
        assert (await apps.management.post(f"/v1/webhooks/{hook['id']}/test")).status_code == 201

        async def refused() -> None:
            delivery = await _only(apps, hook["id"])
            assert delivery["status"] == "failed" and len(delivery["attempts"]) == 2
            assert all("refused" in a["error"] for a in delivery["attempts"])

        await eventually(refused, timeout=10)
        assert receiver.snapshot() == []


async def test_a_worker_killed_between_attempts_and_during_sends_loses_nothing(
    apps_with: Any, services: Any, database_url: str, receivers: Any, tmp_path: Any,
) -> None:
    """kill -9 the worker (a process, `cms worker`) three times while deliveries are in flight (the
    receiver takes 0.3 s to answer) and while one endpoint is between attempts: every event arrives,
    and once a delivery is recorded as succeeded it is never sent again."""
    import os
    import uuid

    from .test_pipeline_faults import WorkerProcess

    env_fast = {**FAST, "CMS_WEBHOOK_RETRY_SCHEDULE": "0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5"}
    async with apps_with(**env_fast) as apps:
        await _blog(apps)
        slow = receivers(delay=0.3)
        flaky = receivers(status=503)
        await _subscribe(apps, slow.url, events=["entry.published"])
        await _subscribe(apps, flaky.url, events=["entry.published"])
        env = {
            **os.environ, **env_fast, "CMS_DATABASE_URL": database_url, "CMS_REDIS_URL": services.redis_url,
            "CMS_DATA_DIR": str(apps.settings.data_dir), "CMS_BROKER_NAMESPACE": f"cms-test-hooks-{uuid.uuid4().hex[:8]}",
            "CMS_STEP_LEASE_SECONDS": "2", "CMS_WEBHOOK_TIMEOUT_SECONDS": "1", "CMS_SWEEP_INTERVAL_SECONDS": "0.5",
            "CMS_REENQUEUE_AFTER_SECONDS": "1", "CMS_RELAY_INTERVAL_SECONDS": "0.2", "CMS_WORKER_POLL_MS": "50",
            "CMS_COUNT_QUERIES": "0",
        }
        worker = WorkerProcess(env, tmp_path / "worker.log")
        await worker.start()
        try:
            ids = [await _publish(apps, f"Post {i}") for i in range(12)]
            for _ in range(3):
                await asyncio.sleep(1.0)
                await worker.kill()  # SIGKILL: mid-send for the slow endpoint, between attempts for the flaky one
                await worker.start()
            flaky.status = 200

            async def everything_succeeded() -> None:
                conn = await connect(database_url)
                try:
                    counts = dict(await conn.fetch("SELECT status, count(*) FROM webhook_deliveries GROUP BY 1"))
                finally:
                    await conn.close()
                assert counts == {"succeeded": 24}, counts

            await eventually(everything_succeeded, timeout=60)
        finally:
            await worker.stop()
        for server in (slow, flaky):
            got = {r.json()["data"]["id"] for r in _published(server)}
            assert got == set(ids), (server.url, len(got))
        conn = await connect(database_url)
        try:
            # the last answer each receiver gave was recorded: no send came after a recorded success
            rows = await conn.fetch(
                "SELECT d.event_id, w.url, max(a.n) AS last, d.attempts FROM webhook_deliveries d "
                "JOIN webhooks w ON w.id = d.webhook_id JOIN webhook_attempts a ON a.delivery_id = d.id "
                "GROUP BY d.event_id, w.url, d.attempts"
            )
        finally:
            await conn.close()
        received: dict[tuple[str, str], int] = {}
        for server in (slow, flaky):
            for r in server.snapshot():
                key = (r.headers["webhook-id"], server.url)
                received[key] = received.get(key, 0) + 1
        for row in rows:
            sent = received[(row["event_id"], row["url"].rstrip("/"))]
            assert sent <= row["attempts"], (row["event_id"], sent, row["attempts"])  # never more than attempts made
        await asyncio.sleep(1.5)
        assert sum(len(s.snapshot()) for s in (slow, flaky)) == sum(received.values())  # quiet after success


async def test_failing_endpoints_do_not_slow_the_healthy_ones(apps_with: Any, hosts: Hosts, receivers: Any) -> None:
    """3 endpoints answer 500 to everything (retries pending in 5 s) while 3 answer 200: the healthy
    ones get every event about as fast as with no failing neighbour."""
    settings = {**FAST, "CMS_WEBHOOK_RETRY_SCHEDULE": "5,300"}
    async with apps_with(**settings) as apps:
        await _blog(apps)
        failing = [receivers(status=500) for _ in range(3)]
        healthy = [receivers() for _ in range(3)]
        for server in [*failing, *healthy]:
            await _subscribe(apps, server.url, events=["entry.published"])
        await hosts.start(hosts.settings(**settings), fast_config())
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n in range(30):
            await _publish(apps, f"Post {n}")
        published = loop.time()

        async def all_delivered() -> None:
            assert [len(_published(server)) for server in healthy] == [30, 30, 30]

        await eventually(all_delivered, timeout=30)
        # Never held back until the failing ones' retries (due 5 s after their first attempts).
        assert loop.time() - published < 4.5, (published - started, loop.time() - published)
        assert all(len(_published(server)) >= 30 for server in failing)  # each tried once at least
