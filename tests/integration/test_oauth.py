"""OAuth 2.0 client credentials: clients, JWT access tokens (checked with PyJWT, an independent
library, against the published JWKS), scope narrowing, tampering, revocation, key rotation."""

from __future__ import annotations

import base64
import json
import time

import jwt as pyjwt

from tests.support import eventually

FORM = "application/x-www-form-urlencoded"


async def _client(apps, scopes: list[str], **extra) -> dict:
    r = await apps.management.post("/v1/oauth-clients", json={"name": "ci", "scopes": scopes, **extra})
    assert r.status_code == 201, r.text
    return r.json()["data"]


async def _token(apps, client: dict, *, scope: str | None = None, basic: bool = True):
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope is not None else {})}
    anonymous = apps.client("management")
    async with anonymous:
        if basic:
            return await anonymous.post("/oauth/token", data=form, auth=(client["client_id"], client["client_secret"]))
        return await anonymous.post(
            "/oauth/token", data={**form, "client_id": client["client_id"], "client_secret": client["client_secret"]}
        )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_clients_are_made_listed_and_never_show_their_secret_again(apps) -> None:
    m = apps.management
    made = await _client(apps, ["content:read", "content:write"], content_types=["page"])
    assert made["client_id"].startswith("cms_oc_") and made["client_secret"].startswith("cms_cs_")
    listed = (await m.get("/v1/oauth-clients")).json()
    assert [c["client_id"] for c in listed["data"]] == [made["client_id"]] and listed["meta"]["total"] == 1
    one = (await m.get(f"/v1/oauth-clients/{made['client_id']}")).json()["data"]
    assert "client_secret" not in one and one["scopes"] == ["content:read", "content:write"]
    assert one["content_types"] == ["page"] and one["created_by"]["id"] == "bootstrap"
    for body in ({"name": "x"}, {"name": "x", "scopes": []}, {"name": "x", "scopes": ["nope"]}, {"scopes": ["content:read"]}):
        assert (await m.post("/v1/oauth-clients", json=body)).status_code == 422, body
    narrow = apps.client("management", await apps.key("management", scopes=["credentials:manage"]))
    async with narrow:
        r = await narrow.post("/v1/oauth-clients", json={"name": "wide", "scopes": ["content:write"]})
        assert r.status_code == 403  # a client can hold only what its maker holds
    assert (await m.get("/v1/oauth-clients/nope")).status_code == 404
    assert (await m.delete("/v1/oauth-clients/nope")).status_code == 404


async def test_a_token_is_an_rfc_9068_jwt_checked_by_an_independent_library(apps) -> None:
    client = await _client(apps, ["content:read", "schema:write"])
    r = await _token(apps, client)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    answer = r.json()
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 900
    assert answer["scope"] == "content:read schema:write" and "refresh_token" not in answer
    token = answer["access_token"]
    jwks = (await apps.management.get("/.well-known/jwks.json")).json()
    assert jwks["keys"] and all("d" not in key for key in jwks["keys"])  # public halves only
    header = pyjwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"
    key = pyjwt.PyJWKSet(jwks["keys"])[header["kid"]]
    claims = pyjwt.decode(token, key=key, algorithms=["ES256"], audience="cms-management",
                          issuer=apps.settings.management_url, options={"require": ["exp", "iat", "jti", "sub"]})
    assert claims["sub"] == claims["client_id"] == client["client_id"]
    assert claims["scope"] == "content:read schema:write" and claims["exp"] - claims["iat"] == 900
    # It works on the management app with exactly its scopes.
    m = apps.client("management", token)
    async with m:
        assert (await m.get("/v1/content-types")).status_code == 200
        assert (await m.post("/v1/entries/page", json={"fields": {}})).status_code == 403  # content:write not held
    # form client authentication works too; a second token has another jti
    other = (await _token(apps, client, basic=False)).json()["access_token"]
    assert pyjwt.decode(other, options={"verify_signature": False})["jti"] != claims["jti"]


async def test_scope_narrows_never_widens_and_errors_follow_rfc_6749(apps) -> None:
    client = await _client(apps, ["content:read", "content:write"])
    narrowed = (await _token(apps, client, scope="content:read")).json()
    assert narrowed["scope"] == "content:read"
    m = apps.client("management", narrowed["access_token"])
    async with m:
        assert (await m.get("/v1/entries/page")).status_code != 403
        assert (await m.post("/v1/entries/page", json={"fields": {}})).status_code == 403
    r = await _token(apps, client, scope="content:read credentials:manage")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    wrong = dict(client, client_secret="cms_cs_wrong")
    r = await _token(apps, wrong)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client" and r.headers["www-authenticate"].startswith("Basic")
    anonymous = apps.client("management")
    async with anonymous:
        auth = (client["client_id"], client["client_secret"])
        r = await anonymous.post("/oauth/token", data={"grant_type": "password"}, auth=auth)
        assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
        r = await anonymous.post("/oauth/token", json={"grant_type": "client_credentials"}, auth=auth)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
        r = await anonymous.post("/oauth/token", content="grant_type=client_credentials&grant_type=client_credentials",
                                 headers={"Content-Type": FORM}, auth=auth)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
        r = await anonymous.post("/oauth/token", data={"grant_type": "client_credentials"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        r = await anonymous.post("/oauth/token", data={"grant_type": "client_credentials"},
                                 headers={"Authorization": "Basic !!!"})
        assert r.status_code == 401


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_tampered_tokens_are_refused(apps) -> None:
    from joserfc import jwt
    from joserfc.jwk import ECKey

    client = await _client(apps, ["content:read"])
    good = (await _token(apps, client)).json()["access_token"]
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    kid, key = await apps.management_app.state.signing.signer()
    now = int(time.time())

    def signed(changes: dict, head: dict | None = None, with_key: ECKey | None = None) -> str:
        return jwt.encode(head or {"alg": "ES256", "typ": "at+jwt", "kid": kid}, {**claims, **changes}, with_key or key)

    stranger = ECKey.generate_key("P-256", parameters={"kid": kid})
    forged = [
        f"{_b64({'alg': 'none', 'typ': 'at+jwt', 'kid': kid})}.{payload}.",  # alg none
        f"{header}.{_b64({**claims, 'scope': 'content:read credentials:manage'})}.{signature}",  # payload changed
        signed({}, with_key=stranger),  # right kid, another key
        signed({}, head={"alg": "ES256", "typ": "at+jwt", "kid": "unknown"}),
        signed({}, head={"alg": "ES256", "kid": kid}),  # no typ: not an access token
        signed({"aud": "someone-else"}),
        signed({"iss": "https://evil.example"}),
        signed({"exp": now - 60, "iat": now - 960, "nbf": now - 960}),  # expired
        signed({"nbf": now + 600, "iat": now + 600, "exp": now + 1500}),  # not yet valid
        signed({"client_id": "cms_oc_other", "sub": "cms_oc_other"}),  # no such client
        good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "eyJ" + "A" * 5000 + ".x.y",
    ]
    for token in forged:
        r = await apps.management.get("/v1/content-types", headers=_bearer(token))
        assert r.status_code == 401, token[:80]
    assert (await apps.management.get("/v1/content-types", headers=_bearer(good))).status_code == 200
    assert (await apps.management.get("/v1/content-types", headers=_bearer(signed({})))).status_code == 200


async def test_revoking_a_token_or_deleting_its_client_ends_it_within_a_second(apps) -> None:
    m, d = apps.management, apps.delivery
    client = await _client(apps, ["content:read"])
    other = await _client(apps, ["content:read"])
    first = (await _token(apps, client)).json()["access_token"]
    second = (await _token(apps, client)).json()["access_token"]
    for token in (first, second):
        assert (await m.get("/v1/content-types", headers=_bearer(token))).status_code == 200
        assert (await d.get("/preview/v1/entries/nosuchtype", headers=_bearer(token))).status_code == 404  # cached there too
    anonymous = apps.client("management")
    async with anonymous:
        # another client cannot revoke it (200 all the same, RFC 7009), its own can
        r = await anonymous.post("/oauth/revoke", data={"token": first}, auth=(other["client_id"], other["client_secret"]))
        assert r.status_code == 200
        assert (await m.get("/v1/content-types", headers=_bearer(first))).status_code == 200
        r = await anonymous.post("/oauth/revoke", data={"token": first}, auth=(client["client_id"], client["client_secret"]))
        assert r.status_code == 200
        r = await anonymous.post("/oauth/revoke", data={"token": "junk"}, auth=(client["client_id"], client["client_secret"]))
        assert r.status_code == 200
        assert (await anonymous.post("/oauth/revoke", data={"token": second})).status_code == 401

    async def first_refused() -> None:
        assert (await m.get("/v1/content-types", headers=_bearer(first))).status_code == 401
        assert (await d.get("/preview/v1/entries/nosuchtype", headers=_bearer(first))).status_code == 401

    await eventually(first_refused, timeout=1.0)
    assert (await m.get("/v1/content-types", headers=_bearer(second))).status_code == 200
    assert (await m.delete(f"/v1/oauth-clients/{client['client_id']}")).status_code == 204

    async def second_refused() -> None:
        assert (await m.get("/v1/content-types", headers=_bearer(second))).status_code == 401
        assert (await d.get("/preview/v1/entries/nosuchtype", headers=_bearer(second))).status_code == 401

    await eventually(second_refused, timeout=1.0)
    assert (await _token(apps, client)).status_code == 401


async def test_rotating_the_signing_key_breaks_no_live_token(apps) -> None:
    from cms.app.db.pool import connect
    from cms.app.oauth.service import rotate_signing_key

    client = await _client(apps, ["content:read"])
    before = (await _token(apps, client)).json()["access_token"]
    conn = await connect(apps.database_url)
    try:
        new_kid = await rotate_signing_key(conn, apps.management_app.state.webhook_box)
    finally:
        await conn.close()

    async def signs_with_the_new_key() -> str:
        token = (await _token(apps, client)).json()["access_token"]
        assert pyjwt.get_unverified_header(token)["kid"] == new_kid
        return token

    after = await eventually(signs_with_the_new_key, timeout=2.0)
    jwks = (await apps.management.get("/.well-known/jwks.json")).json()
    assert {pyjwt.get_unverified_header(before)["kid"], new_kid} <= {k["kid"] for k in jwks["keys"]}
    for token in (before, after):
        assert (await apps.management.get("/v1/content-types", headers=_bearer(token))).status_code == 200
        assert (await apps.delivery.get("/preview/v1/entries/nosuchtype", headers=_bearer(token))).status_code == 404


async def test_token_requests_are_bounded(apps) -> None:
    client = await _client(apps, ["content:read"])
    auth = (client["client_id"], client["client_secret"])
    anonymous = apps.client("management")
    async with anonymous:
        at_limit = "grant_type=client_credentials&pad=" + "x" * (16 * 1024 - 34)
        assert len(at_limit) == 16 * 1024
        r = await anonymous.post("/oauth/token", content=at_limit, headers={"Content-Type": FORM}, auth=auth)
        assert r.status_code == 200, r.text
        r = await anonymous.post("/oauth/token", content=at_limit + "x", headers={"Content-Type": FORM}, auth=auth)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
        r = await anonymous.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "content:read " * 100},
                                 auth=auth)
        assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
        fields = "&".join(f"f{i}=1" for i in range(30))
        r = await anonymous.post("/oauth/token", content=f"grant_type=client_credentials&{fields}",
                                 headers={"Content-Type": FORM}, auth=auth)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
