"""POST /v1/preview-tokens: short-lived credentials for /preview/* only, within the maker's reach."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from tests.support import eventually


async def _draft(apps) -> str:
    m = apps.management
    assert (await m.put("/v1/content-types/page", json={"name": "Page", "fields": [{"id": "title", "type": "text"}]})).status_code == 201
    assert (await m.put("/v1/content-types/secret", json={"name": "Secret", "fields": [{"id": "x", "type": "text"}]})).status_code == 201
    return (await m.post("/v1/entries/page", json={"fields": {"title": "Draft"}})).json()["data"]["id"]


async def test_a_preview_token_reads_drafts_and_nothing_else(apps) -> None:
    page = await _draft(apps)
    m, d = apps.management, apps.delivery
    r = await m.post("/v1/preview-tokens", json={"ttl_seconds": 60})
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    made = r.json()["data"]
    assert made["token"].startswith("cms_pt_") and set(made) == {"token", "expires_at"}
    left = (datetime.fromisoformat(made["expires_at"].replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds()
    assert 50 < left <= 60
    token = {"Authorization": f"Bearer {made['token']}"}
    r = await d.get(f"/preview/v1/entries/page/{page}", headers=token)
    assert r.status_code == 200 and r.json()["data"]["fields"]["title"] == "Draft"
    got = (await d.post("/preview/graphql", headers=token, json={"query": "{ pageCollection { total } }"})).json()
    assert got == {"data": {"pageCollection": {"total": 1}}}
    # Not a delivery key, not a management credential, not in the key inventory.
    assert (await d.get("/api/v1/entries/page", headers=token)).status_code == 401
    assert (await d.post("/graphql", headers=token, json={"query": "{ pageCollection { total } }"})).status_code == 401
    assert (await m.get("/v1/content-types", headers=token)).status_code == 401
    assert all(k["kind"] != "preview_token" for k in (await m.get("/v1/keys", params={"limit": 100})).json()["data"])
    # The default lifetime is 15 minutes; bad lifetimes are 422.
    default = (await m.post("/v1/preview-tokens")).json()["data"]
    left = (datetime.fromisoformat(default["expires_at"].replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds()
    assert 890 < left <= 900
    for body in ({"ttl_seconds": 59}, {"ttl_seconds": 3601}, {"ttl_seconds": "900"}, {"ttl_seconds": 1.5},
                 {"ttl": 60}, [60]):
        r = await m.post("/v1/preview-tokens", json=body)
        assert r.status_code == 422, body


async def test_a_token_has_its_makers_types_and_ends_with_its_key_or_its_time(apps) -> None:
    page = await _draft(apps)
    m, d = apps.management, apps.delivery
    secret = await apps.key("management", scopes=["content:read"], content_types=["page"])
    maker = apps.client("management", secret)
    key_id = next(k["id"] for k in (await m.get("/v1/keys", params={"limit": 100})).json()["data"] if k["name"] == "test management")
    async with maker:
        token = {"Authorization": f"Bearer {(await maker.post('/v1/preview-tokens')).json()['data']['token']}"}
        short = (await maker.post("/v1/preview-tokens", json={"ttl_seconds": 60})).json()["data"]["token"]
    assert (await d.get(f"/preview/v1/entries/page/{page}", headers=token)).status_code == 200
    assert (await d.get("/preview/v1/entries/secret", headers=token)).status_code == 403
    # expired: refused
    conn = await asyncpg.connect(apps.database_url)
    try:
        await conn.execute("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE kind = 'preview_token' "
                           "AND id = (SELECT key_id FROM api_key_secrets WHERE secret_hash = sha256($1::text::bytea))", short)
    finally:
        await conn.close()
    assert (await d.get(f"/preview/v1/entries/page/{page}", headers={"Authorization": f"Bearer {short}"})).status_code == 401
    # revoking the key that made it ends the token within a second, cached or not
    assert (await m.delete(f"/v1/keys/{key_id}")).status_code == 204

    async def refused() -> None:
        assert (await d.get(f"/preview/v1/entries/page/{page}", headers=token)).status_code == 401

    await eventually(refused, timeout=1.0)


async def test_live_tokens_per_key_are_bounded(apps, monkeypatch: pytest.MonkeyPatch) -> None:
    from cms.app.credentials import service

    monkeypatch.setattr(service, "MAX_LIVE_PREVIEW_TOKENS", 3)
    maker = apps.client("management", await apps.key("management", scopes=["content:read"]))
    async with maker:
        for _ in range(3):
            assert (await maker.post("/v1/preview-tokens")).status_code == 201
        r = await maker.post("/v1/preview-tokens")
        assert r.status_code == 409 and "3 unexpired" in r.json()["detail"]
    no_scope = apps.client("management", await apps.key("management", scopes=["schema:write"]))
    async with no_scope:
        assert (await no_scope.post("/v1/preview-tokens")).status_code == 403
