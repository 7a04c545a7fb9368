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
        assert int(answers[-1].headers["retry-after"]) >= 1
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
