"""Credentials: keys shown once, stored hashed, scoped, revocable everywhere."""

from __future__ import annotations

import asyncio
import hashlib

import asyncpg

from cms.app.credentials.keys import well_formed
from tests.support import eventually


async def test_create_key_secret_shown_once_and_stored_hashed(apps) -> None:
    m = apps.management
    r = await m.post("/v1/keys", json={"name": "ci", "kind": "management", "scopes": ["content:read"]})
    assert r.status_code == 201
    key = r.json()["data"]
    secret = key["secret"]
    assert secret.startswith("cms_mk_") and well_formed(secret)
    assert key["prefix"] == secret[:15] and key["created_by"]["kind"] == "key"
    listing = (await m.get("/v1/keys")).json()
    assert all("secret" not in k for k in listing["data"])
    assert secret not in (await m.get("/v1/keys")).text
    conn = await asyncpg.connect(apps.database_url)
    try:
        stored = await conn.fetchval("SELECT secret_hash FROM api_key_secrets WHERE key_id = $1", key["id"])
        dump = await conn.fetchval("SELECT string_agg(t::text, '') FROM api_keys t")
    finally:
        await conn.close()
    assert stored == hashlib.sha256(secret.encode()).digest()
    assert secret not in dump
    for kind, prefix in (("delivery", "cms_dk_"), ("preview", "cms_pk_")):
        r = await m.post("/v1/keys", json={"name": kind, "kind": kind})
        assert r.json()["data"]["secret"].startswith(prefix)


async def test_scopes_are_enforced_per_route(apps) -> None:
    reader = await apps.key("management", scopes=["content:read"])
    m = apps.management
    headers = {"Authorization": f"Bearer {reader}"}
    assert (await m.get("/v1/content-types", headers=headers)).status_code == 200
    r = await m.put("/v1/content-types/x", json={"name": "X", "fields": []}, headers=headers)
    assert r.status_code == 403 and r.json()["type"] == "urn:cms:problem:forbidden"
    assert (await m.get("/v1/keys", headers=headers)).status_code == 403
    # A key can grant only the scopes its creator holds.
    granter = await apps.key("management", scopes=["credentials:manage", "content:read"])
    r = await m.post(
        "/v1/keys", json={"name": "x", "kind": "management", "scopes": ["schema:write"]},
        headers={"Authorization": f"Bearer {granter}"},
    )
    assert r.status_code == 403
    r = await m.post(
        "/v1/keys", json={"name": "x", "kind": "management", "scopes": ["content:read"]},
        headers={"Authorization": f"Bearer {granter}"},
    )
    assert r.status_code == 201


async def test_wrong_kind_and_bad_keys_are_401_alike(apps) -> None:
    m = apps.management
    delivery = await apps.key("delivery")
    for header in (f"Bearer {delivery}", "Bearer cms_mk_" + "a" * 38, "Bearer nonsense", "Basic abc"):
        r = await m.get("/v1/content-types", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert r.json()["detail"] == "a valid credential is required"
    r = await m.get("/v1/content-types", headers={"Authorization": ""})
    assert r.status_code == 401


async def test_revoked_key_is_rejected_at_once(apps) -> None:
    m = apps.management
    r = await m.post("/v1/keys", json={"name": "tmp", "kind": "delivery"})
    key = r.json()["data"]
    d = apps.delivery
    headers = {"Authorization": f"Bearer {key['secret']}"}
    assert (await d.get("/api/v1/locales", headers=headers)).status_code == 200
    assert (await m.delete(f"/v1/keys/{key['id']}")).status_code == 204

    async def rejected() -> None:
        assert (await d.get("/api/v1/locales", headers=headers)).status_code == 401

    await eventually(rejected, timeout=1.0)
    listing = {k["id"]: k for k in (await m.get("/v1/keys")).json()["data"]}
    assert listing[key["id"]]["revoked_at"] is not None
    assert (await m.delete("/v1/keys/unknown")).status_code == 404


async def test_expired_key_is_rejected(apps) -> None:
    m = apps.management
    r = await m.post("/v1/keys", json={"name": "old", "kind": "delivery", "expires_at": "2020-01-01T00:00:00Z"})
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/expires_at"
    r = await m.post("/v1/keys", json={"name": "soon", "kind": "delivery", "expires_at": "2999-01-01T00:00:00Z"})
    key = r.json()["data"]
    conn = await asyncpg.connect(apps.database_url)
    try:
        await conn.execute("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", key["id"])
    finally:
        await conn.close()
    apps_cache = apps  # the resolver caches for a few seconds; a fresh secret lookup sees the expiry
    r = await apps_cache.delivery.get("/api/v1/locales", headers={"Authorization": f"Bearer {key['secret']}"})
    assert r.status_code == 401


async def test_key_validation_errors(apps) -> None:
    m = apps.management
    r = await m.post("/v1/keys", json={"name": "", "kind": "root", "scopes": ["everything"], "extra": 1})
    assert r.status_code == 422
    assert {"/name", "/kind", "/scopes/0", "/extra"} <= {e["pointer"] for e in r.json()["errors"]}
    r = await m.post("/v1/keys", json={"name": "d", "kind": "delivery", "scopes": ["content:read"]})
    assert r.status_code == 422


async def test_last_used_is_recorded(apps) -> None:
    secret = await apps.key("delivery")
    await apps.delivery.get("/api/v1/locales", headers={"Authorization": f"Bearer {secret}"})

    async def recorded() -> None:
        keys = (await apps.management.get("/v1/keys")).json()["data"]
        assert any(k["kind"] == "delivery" and k["last_used_at"] for k in keys)

    await eventually(recorded)


async def test_writes_and_denials_are_audited(apps) -> None:
    m = apps.management
    await m.put("/v1/content-types/x", json={"name": "X", "fields": []})
    await m.get("/v1/content-types", headers={"Authorization": "Bearer wrong"})

    async def audited() -> None:
        conn = await asyncpg.connect(apps.database_url)
        try:
            rows = await conn.fetch("SELECT action, outcome, target FROM audit_log ORDER BY id")
        finally:
            await conn.close()
        actions = [(r["action"], r["outcome"]) for r in rows]
        assert ("content_type.save", "success") in actions
        assert ("auth.denied", "denied") in actions

    await eventually(audited)


async def test_an_overlong_secret_is_refused_unread_and_not_cached(apps) -> None:
    """A 10 KB 'secret' costs no lookup and takes no room in the credential cache."""
    resolver = apps.delivery_app.state.credentials
    before = len(resolver._cache)
    for i in range(20):
        r = await apps.delivery.get("/api/v1/locales", headers={"Authorization": f"Bearer {'x' * 10_000}{i}"})
        assert r.status_code == 401
    assert len(resolver._cache) == before


async def test_junk_tokens_cost_no_lookup_take_no_room_and_keep_memory_flat(apps) -> None:
    """10,000 distinct invalid tokens of up to 8 KB: all 401, not one database lookup, nothing
    cached, RSS flat, and a valid key still answers from the cache afterwards."""
    import os

    import psutil

    resolver = apps.delivery_app.state.credentials
    d = apps.delivery
    valid = {"Authorization": f"Bearer {await apps.key('delivery')}"}
    assert (await d.get("/api/v1/locales", headers=valid)).status_code == 200
    lookups, cached, misses = resolver.lookups, len(resolver._cache), len(resolver._misses)
    rss = psutil.Process(os.getpid()).memory_info().rss

    async def junk(i: int) -> int:
        size = (i * 811) % 8000 + 32
        token = (f"junk{i}-" * (size // 6 + 1))[:size]
        return (await d.get("/api/v1/locales", headers={"Authorization": f"Bearer {token}"})).status_code

    for start in range(0, 10_000, 200):
        assert set(await asyncio.gather(*(junk(i) for i in range(start, start + 200)))) == {401}
    assert resolver.lookups == lookups
    assert (len(resolver._cache), len(resolver._misses)) == (cached, misses)
    assert psutil.Process(os.getpid()).memory_info().rss - rss < 64 * 1024 * 1024
    assert valid["Authorization"].removeprefix("Bearer ") in resolver._cache  # not pushed out by the junk
    assert (await d.get("/api/v1/locales", headers=valid)).status_code == 200
    assert resolver.lookups <= lookups + 1  # at most its TTL's renewal


async def test_unknown_well_formed_keys_are_remembered_by_hash_in_a_bounded_lru(apps) -> None:
    from cms.app.credentials.keys import generate_secret

    resolver = apps.delivery_app.state.credentials
    resolver.MAX_MISSES = 50
    valid = await apps.key("delivery")
    assert await resolver.resolve(valid, allow_bootstrap=False) is not None
    unknown = [generate_secret("delivery") for _ in range(120)]  # pass the checksum, exist nowhere
    for secret in unknown:
        assert await resolver.resolve(secret, allow_bootstrap=False) is None
    assert len(resolver._misses) == 50 and all(isinstance(k, bytes) for k in resolver._misses)
    assert not any(secret in resolver._cache for secret in unknown)
    lookups = resolver.lookups
    assert await resolver.resolve(unknown[-1], allow_bootstrap=False) is None  # remembered
    assert resolver.lookups == lookups
    assert resolver.cached(valid) is not None  # the valid key was not thrown out with the misses


async def test_a_revocation_arriving_during_a_lookup_is_not_cached(apps) -> None:
    """The lookup reads the key before the revocation commits, and the revocation's notification
    arrives before the lookup returns: the resolver must not cache what it read."""
    from cms.app.credentials.service import CredentialResolver

    key = (await apps.management.post("/v1/keys", json={"name": "racy", "kind": "delivery"})).json()["data"]
    pool = apps.delivery_app.state.pool

    class RevokedWhileReading:
        """The real pool; after the first read of the key, the key is revoked and the resolver told."""

        def __init__(self) -> None:
            self.resolver: CredentialResolver | None = None
            self.revoked = False

        async def fetchrow(self, *args: object) -> object:
            row = await pool.fetchrow(*args)
            if not self.revoked:
                self.revoked = True
                await pool.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", key["id"])
                assert self.resolver is not None
                self.resolver.invalidate([f"key:{key['id']}"])
            return row

    racing = RevokedWhileReading()
    resolver = CredentialResolver(racing)  # type: ignore[arg-type]
    racing.resolver = resolver
    assert await resolver.resolve(key["secret"], allow_bootstrap=False) is None
    assert resolver.cached(key["secret"]) is None and resolver.lookups == 2


async def test_several_credentials_in_one_request_are_refused_by_every_path(apps) -> None:
    """The delivery fast path and the full app read headers alike: two Authorization (or X-API-Key)
    headers are ambiguous, so 401, whichever one is valid."""
    d = apps.delivery
    good = await apps.key("delivery")
    url = "/api/v1/entries/nosuchtype"
    assert (await d.get(url, headers={"Authorization": f"Bearer {good}"})).status_code == 404  # cached key now
    for headers in (
        [("Authorization", f"Bearer {good}"), ("Authorization", "Bearer junk")],
        [("Authorization", "Bearer junk"), ("Authorization", f"Bearer {good}")],
        [("X-API-Key", good), ("X-API-Key", "junk")],
    ):
        assert (await d.get(url, headers=headers)).status_code == 401, headers
        assert (await d.get("/api/v1/locales", headers=headers)).status_code == 401, headers
        assert (await apps.management.get("/v1/keys", headers=headers)).status_code == 401, headers


async def test_the_bootstrap_key_shows_none_of_its_secret_and_stays_revoked(apps, caplog) -> None:
    from cms.app.credentials.service import ensure_bootstrap_key
    from tests.support import ADMIN_SECRET

    m = apps.management
    listed = {k["id"]: k for k in (await m.get("/v1/keys")).json()["data"]}
    assert listed["bootstrap"]["prefix"] == "bootstrap"
    conn = await asyncpg.connect(apps.database_url)
    try:
        stored = await conn.fetchval("SELECT prefix FROM api_keys WHERE id = 'bootstrap'")
        assert ADMIN_SECRET[:8] not in stored
        # A changed CMS_BOOTSTRAP_KEY replaces the old secret.
        new_secret = "another-bootstrap-secret-0123456789abcdef"
        assert await ensure_bootstrap_key(conn, new_secret) is False
        hashes = await conn.fetch("SELECT secret_hash FROM api_key_secrets WHERE key_id = 'bootstrap'")
        assert [r["secret_hash"] for r in hashes] == [hashlib.sha256(new_secret.encode()).digest()]
        await ensure_bootstrap_key(conn, ADMIN_SECRET)
        # Revoked on purpose: a restart (ensure again) keeps it revoked, and says so loudly.
        assert (await m.delete("/v1/keys/bootstrap")).status_code == 204
        assert await ensure_bootstrap_key(conn, ADMIN_SECRET) is False
        assert await conn.fetchval("SELECT revoked_at FROM api_keys WHERE id = 'bootstrap'") is not None
    finally:
        await conn.close()
    assert any(r.levelname == "ERROR" and "stays revoked" in r.getMessage() for r in caplog.records)

    async def refused() -> None:
        assert (await m.get("/v1/keys")).status_code == 401

    await eventually(refused, timeout=1.0)


async def test_denied_requests_are_audited_in_bounded_batches(db) -> None:
    from cms.app.audit.service import DeniedRequests

    denied = DeniedRequests(db, interval=3600, max_rows=100)
    for i in range(1000):
        denied.note({"kind": "anonymous", "id": None, "name": None}, f"GET /v1/keys/{i}", f"req{i}", "127.0.0.1")
    assert len(denied._rows) == 100  # memory bounded as well
    await denied.stop()  # the final flush: one statement
    rows = await db.fetch("SELECT action, target, outcome, at FROM audit_log WHERE outcome = 'denied' ORDER BY id")
    assert len(rows) == 101
    assert {r["action"] for r in rows[:100]} == {"auth.denied"}
    assert rows[100]["action"] == "auth.denied.unrecorded" and rows[100]["target"] == "900 requests"
    assert rows[0]["at"] <= rows[99]["at"]


async def test_rotation_keeps_the_old_secret_for_the_grace_only(apps) -> None:
    m = apps.management
    made = (await m.post("/v1/keys", json={"name": "site", "kind": "delivery"})).json()["data"]
    old = {"Authorization": f"Bearer {made['secret']}"}
    d = apps.delivery
    assert (await d.get("/api/v1/locales", headers=old)).status_code == 200  # cached in delivery now
    r = await m.post(f"/v1/keys/{made['id']}/rotate", json={"grace_seconds": 1.5})
    assert r.status_code == 200, r.text
    rotated = r.json()["data"]
    new = {"Authorization": f"Bearer {rotated['secret']}"}
    assert rotated["id"] == made["id"] and rotated["secret"] != made["secret"]
    assert rotated["prefix"] == rotated["secret"][:15] != made["prefix"]
    assert "secret" not in (await m.get(f"/v1/keys/{made['id']}")).json()["data"]
    # Both work during the grace, then only the new one (the cached old one too).
    assert (await d.get("/api/v1/locales", headers=old)).status_code == 200
    assert (await d.get("/api/v1/locales", headers=new)).status_code == 200

    async def old_refused() -> None:
        assert (await d.get("/api/v1/locales", headers=old)).status_code == 401

    await eventually(old_refused, timeout=3.0)
    assert (await d.get("/api/v1/locales", headers=new)).status_code == 200
    # No body: the default grace (a day).
    r = await m.post(f"/v1/keys/{made['id']}/rotate")
    assert r.status_code == 200, r.text
    assert (await d.get("/api/v1/locales", headers=new)).status_code == 200
    for body in ({"grace_seconds": -1}, {"grace_seconds": 10**9}, {"grace_seconds": "1"}, {"grace": 1}, [1]):
        r = await m.post(f"/v1/keys/{made['id']}/rotate", json=body)
        assert r.status_code == 422, body
    assert (await m.post("/v1/keys/nope/rotate")).status_code == 404
    assert (await m.post("/v1/keys/bootstrap/rotate")).status_code == 409
    assert (await m.delete(f"/v1/keys/{made['id']}")).status_code == 204
    assert (await m.post(f"/v1/keys/{made['id']}/rotate")).status_code == 409


async def test_rotation_cannot_hand_out_a_wider_key(apps) -> None:
    """A key manager without content:write cannot obtain a working secret of a key that has it."""
    m = apps.management
    wide = (await m.post("/v1/keys", json={"name": "wide", "kind": "management", "scopes": ["content:write"]})).json()["data"]
    narrow = apps.client("management", await apps.key("management", scopes=["credentials:manage"]))
    async with narrow:
        r = await narrow.post(f"/v1/keys/{wide['id']}/rotate")
        assert r.status_code == 403, r.text
        assert (await narrow.post("/v1/keys", json={"name": "x", "kind": "management", "scopes": ["content:write"]})).status_code == 403
    assert (await m.get(f"/v1/keys/{wide['id']}")).json()["data"]["prefix"] == wide["prefix"]


async def test_purges_arriving_during_a_lookup_never_refuse_a_valid_key(apps) -> None:
    """Every publish NOTIFYs entry and type tags; they must not make a lookup give up (a valid key
    answered 401 under 50 publishes/s before this was fixed), and credential tags that keep
    arriving must not turn a valid key into a remembered miss."""
    from cms.app.credentials.service import CredentialResolver

    secret = await apps.key("delivery")
    pool = apps.delivery_app.state.pool

    class Busy:
        """The real pool; every read is overlapped by invalidations."""

        def __init__(self, tags: list[str]) -> None:
            self.tags = tags
            self.resolver: CredentialResolver | None = None

        async def fetchrow(self, *args: object) -> object:
            row = await pool.fetchrow(*args)
            assert self.resolver is not None
            self.resolver.invalidate(self.tags)
            return row

    purges = Busy(["entry:e1", "type:article"])
    resolver = CredentialResolver(purges)  # type: ignore[arg-type]
    purges.resolver = resolver
    assert await resolver.resolve(secret, allow_bootstrap=False) is not None
    assert resolver.lookups == 1 and resolver.cached(secret) is not None

    revocations = Busy(["key:someone-else"])
    resolver = CredentialResolver(revocations)  # type: ignore[arg-type]
    revocations.resolver = resolver
    assert await resolver.resolve(secret, allow_bootstrap=False) is not None  # answered, for this request
    assert resolver.lookups == 3 and resolver.cached(secret) is None and not resolver._misses
