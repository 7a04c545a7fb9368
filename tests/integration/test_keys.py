"""Credentials: keys shown once, stored hashed, scoped, revocable everywhere."""

from __future__ import annotations

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
