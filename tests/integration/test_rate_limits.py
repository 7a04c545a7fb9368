"""Rate limits: GCRA per credential (per address without one), headers on every answer, 429 with
Retry-After, a key's own limit, one limit shared by every management process through Redis, a
share per delivery process without Redis per request, and management working when Redis is down."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg

from tests.support import eventually, open_apps


def _remaining(r) -> int:
    return int(r.headers["ratelimit"].split("r=")[1].split(";")[0])


async def test_management_limits_per_credential_with_headers_and_429(apps_with) -> None:
    async with apps_with(CMS_RATE_LIMIT_MANAGEMENT="5/60") as apps:
        m = apps.management
        answers = [await m.get("/v1/content-types") for _ in range(5)]
        assert [r.status_code for r in answers] == [200] * 5
        assert all(r.headers["ratelimit-policy"] == '"default";q=5;w=60' for r in answers)
        assert [_remaining(r) for r in answers] == [4, 3, 2, 1, 0]
        refused = await m.get("/v1/content-types")
        assert refused.status_code == 429 and refused.json()["type"] == "urn:cms:problem:rate-limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 12 and refused.headers["ratelimit-policy"]
        assert refused.headers["content-type"].startswith("application/problem+json")
        # Writes are refused the same way, and nothing is written.
        assert (await m.put("/v1/content-types/x", json={"name": "X", "fields": []})).status_code == 429
        # Probes are never limited.
        assert (await m.get("/healthz")).status_code == 200 and "ratelimit" not in (await m.get("/healthz")).headers

        async def recorded() -> None:
            conn = await asyncpg.connect(apps.database_url)
            try:
                rows = await conn.fetch("SELECT actor->>'id' AS actor_id, target FROM audit_log WHERE action = 'auth.denied'")
            finally:
                await conn.close()
            assert any(r["actor_id"] == "bootstrap" and r["target"] == "GET /v1/content-types" for r in rows)

        await eventually(recorded, timeout=3.0)
        # Another credential has its own budget, and a key's own rate_limit replaces the default.
        own = apps.client("management", await _key_directly(apps, rate_limit="2/60"))
        async with own:
            statuses = [(await own.get("/v1/content-types")).status_code for _ in range(3)]
            assert statuses == [200, 200, 429]
        # Without a valid credential the client's address is the identity (401s count too).
        anonymous = apps.client("management")
        async with anonymous:
            statuses = [(await anonymous.get("/v1/content-types")).status_code for _ in range(6)]
            assert statuses == [401] * 5 + [429]


async def _key_directly(apps, **extra) -> str:
    """A key made straight through the service (the admin's own budget is spent)."""
    from cms.app.credentials.schemas import Credential
    from cms.app.credentials.service import create_key
    from cms.app.db.pool import connect

    conn = await connect(apps.database_url)
    try:
        admin = Credential(id="system", kind="system", name="test", scopes=frozenset({"content:read"}))
        _, secret = await create_key(conn, {"name": "own", "kind": "management", "scopes": ["content:read"], **extra},
                                     admin, request_id=None, ip=None)
        return secret
    finally:
        await conn.close()


async def test_every_management_process_shares_one_limit(database_url: str, services, tmp_path: Path) -> None:
    env = {"CMS_RATE_LIMIT_MANAGEMENT": "6/60", "CMS_BROKER_NAMESPACE": f"cms-test-shared-{uuid.uuid4().hex[:8]}"}
    async with open_apps(database_url, services.redis_url, tmp_path / "a", env) as a, \
            open_apps(database_url, services.redis_url, tmp_path / "b", env) as b:
        statuses = [(await (a if i % 2 else b).management.get("/v1/locales")).status_code for i in range(8)]
        assert statuses == [200] * 6 + [429] * 2


async def test_delivery_limits_locally_with_a_share_per_process(database_url: str, services, tmp_path: Path) -> None:
    env = {"CMS_RATE_LIMIT_DELIVERY": "10/60", "CMS_BROKER_NAMESPACE": f"cms-test-shared-{uuid.uuid4().hex[:8]}"}
    async with open_apps(database_url, services.redis_url, tmp_path / "a", env) as a:
        key = {"Authorization": f"Bearer {await a.key('delivery')}"}
        d = a.delivery
        assert (await a.management.put("/v1/content-types/page", json={"name": "P", "fields": []})).status_code == 201
        # The fast path (cache hits) is limited like the rest.
        answers = [await d.get("/api/v1/entries/page", headers=key) for _ in range(11)]
        assert [r.status_code for r in answers] == [200] * 10 + [429]
        assert answers[0].headers["ratelimit-policy"] == '"default";q=10;w=60'
        assert [_remaining(r) for r in answers[:10]] == list(range(9, -1, -1))  # computed, then cache hits
        assert int(answers[-1].headers["retry-after"]) >= 1
        # A 304 from the cache, and answers of the full app (GraphQL), carry the headers as well.
        third = {"Authorization": f"Bearer {await a.key('delivery')}"}
        tag = answers[1].headers["etag"]
        not_modified = await d.get("/api/v1/entries/page", headers={**third, "If-None-Match": tag})
        assert not_modified.status_code == 304 and _remaining(not_modified) == 9
        graphql = await d.post("/graphql", json={"query": "{ __typename }"}, headers=third)
        assert graphql.status_code == 200 and _remaining(graphql) == 8
        async with open_apps(database_url, services.redis_url, tmp_path / "b", env) as b:
            # Two delivery processes now: each allows its share (5 of 10) to a new identity.
            limiters = (a.delivery_app.state.limiter, b.delivery_app.state.limiter)

            async def both_counted() -> None:
                assert [limiter.processes for limiter in limiters] == [2, 2]

            await eventually(both_counted, timeout=5.0)
            other = {"Authorization": f"Bearer {await a.key('delivery')}"}
            statuses = [(await b.delivery.get("/api/v1/entries/page", headers=other)).status_code for _ in range(6)]
            assert statuses == [200] * 5 + [429]


async def test_management_keeps_working_when_redis_is_down(database_url: str, services, tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    def unavailable() -> float:
        return REGISTRY.get_sample_value("cms_rate_limit_unavailable_total", {"app": "management"}) or 0.0

    before = unavailable()
    async with open_apps(database_url, "redis://127.0.0.1:9", tmp_path / "down",
                         {"CMS_RATE_LIMIT_MANAGEMENT": "1/60"}) as apps:
        m = apps.management
        started = asyncio.get_running_loop().time()
        answers = [await m.get("/v1/locales") for _ in range(5)]
        assert [r.status_code for r in answers] == [200] * 5  # fail open: not limited
        assert "ratelimit" not in answers[0].headers
        assert (await m.put("/v1/content-types/x", json={"name": "X", "fields": []})).status_code == 201
        assert asyncio.get_running_loop().time() - started < 3.0  # and not slowed down by the outage
    assert unavailable() >= before + 6


async def test_off_means_no_limit_and_no_bookkeeping(apps_with) -> None:
    async with apps_with(CMS_RATE_LIMIT_MANAGEMENT="off", CMS_RATE_LIMIT_DELIVERY="off") as apps:
        assert apps.management_app.state.limiter is None and apps.delivery_app.state.limiter is None
        r = await apps.management.get("/v1/locales")
        assert r.status_code == 200 and "ratelimit" not in r.headers and "ratelimit-policy" not in r.headers


def _count_redis_calls(limiter) -> list[int]:
    """Counts the limiter's Lua calls (the real script still runs)."""
    calls = [0]
    script = limiter.script

    async def counted(*args, **kwargs):
        calls[0] += 1
        return await script(*args, **kwargs)

    limiter.script = counted
    return calls


async def test_a_busy_identity_spends_leases_and_the_shared_limit_stays_exact(
    database_url: str, services, tmp_path: Path,
) -> None:
    # 200 an hour: a cell comes back every 18 s, so nothing refills while the test runs.
    env = {"CMS_RATE_LIMIT_MANAGEMENT": "200/3600", "CMS_BROKER_NAMESPACE": f"cms-test-lease-{uuid.uuid4().hex[:8]}"}
    async with open_apps(database_url, services.redis_url, tmp_path / "a", env) as a, \
            open_apps(database_url, services.redis_url, tmp_path / "b", env) as b:
        calls = [_count_redis_calls(apps.management_app.state.limiter) for apps in (a, b)]
        first = [await a.management.get("/v1/locales") for _ in range(60)]
        assert [r.status_code for r in first] == [200] * 60
        # Served from leases, the headers still count down one by one.
        assert [_remaining(r) for r in first] == list(range(199, 139, -1))
        assert calls[0][0] <= 10  # leases of 1, 2, 4, 8, then 10 (1/20 of the limit)
        statuses = [(await (a if i % 2 else b).management.get("/v1/locales")).status_code for i in range(200)]
        # Exactly the limit in all, whichever process held which lease.
        assert statuses.count(200) == 140 and statuses.count(429) == 60
        assert sum(c[0] for c in calls) < 80


async def test_an_unspent_lease_is_given_back(database_url: str, services, tmp_path: Path) -> None:
    env = {"CMS_RATE_LIMIT_MANAGEMENT": "200/3600", "CMS_BROKER_NAMESPACE": f"cms-test-lease-{uuid.uuid4().hex[:8]}"}
    async with open_apps(database_url, services.redis_url, tmp_path / "a", env) as a:
        limiter = a.management_app.state.limiter
        limiter.LEASE_SECONDS = 0.2
        for _ in range(8):  # leases of 1, 2, 4: the last one has cells left
            assert (await a.management.get("/v1/locales")).status_code == 200
        unspent = next(iter(limiter._leases.values())).cells
        assert unspent > 0
        await asyncio.sleep(0.3)
        r = await a.management.get("/v1/locales")
        # The expired lease's cells went back to Redis: only the 9 requests are counted.
        assert r.status_code == 200 and _remaining(r) == 200 - 9


async def test_an_expired_lease_gives_back_only_time_still_ahead(services) -> None:
    """Cells of a lease whose place in the timeline has passed are not admitted a second time."""
    from cms.app.protection.rate_limits import RedisLimiter

    namespace = f"cms-test-refund-{uuid.uuid4().hex[:8]}"
    a, b = (RedisLimiter(services.redis_url, "management", namespace) for _ in range(2))
    for limiter in (a, b):
        limiter.LEASE_SECONDS = 0.2
    try:
        limit, window = 40, 20  # a cell every 0.5 s; leases of up to 2
        assert (await a.check("k", limit, window))[0] and (await a.check("k", limit, window))[0]
        unspent = a._leases["k"].cells
        assert unspent == 1  # its cell sits at the end of a's 1.5 s of the timeline
        await asyncio.sleep(1.6)  # the lease expired and that cell's time has passed
        admitted = 0
        while (await b.check("k", limit, window))[0]:
            admitted += 1
        assert admitted == limit  # the whole quota is there again, and b spent it
        found = await a.check("k", limit, window)
        assert found is not None and found[0] is False  # not one more through a's old cell
    finally:
        await a.stop()
        await b.stop()
