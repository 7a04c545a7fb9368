"""OAuth 2.0 client credentials (RFC 6749 §4.4): clients, JWT access tokens (RFC 9068, ES256,
signed with a rotatable key published as JWKS), revocation by `jti` (RFC 7009).

The crypto is joserfc's; nothing here signs or verifies by hand.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import asyncpg
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from ulid import ULID

from ..audit.service import record as audit
from ..credentials import keys
from ..credentials.schemas import Credential, parse_grant
from ..events.outbox import invalidate
from ..problems import FieldErrorsProblem, not_found
from ..times import iso
from ..webhooks.signing import SecretBox
from . import repository as repo

ALGORITHM = "ES256"
AUDIENCE = "cms-management"
TOKEN_SECONDS = 900
TOKEN_TYPES = ("at+jwt", "application/at+jwt")
MAX_TOKEN_CHARS = 4096  # ours are ~600; a longer "token" is refused unread
CLIENT_PREFIX = "cms_oc_"
SECRET_PREFIX = "cms_cs_"
KEYS_TAG = "oauth:keys"  # invalidation tag: the signing keys changed


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer: `{"error", "error_description"}`."""

    def __init__(self, error: str, description: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}


def looks_like_jwt(secret: str) -> bool:
    return secret.startswith("eyJ") and secret.count(".") == 2


# --- clients ---------------------------------------------------------------------------------------


def client_json(row: Any) -> dict[str, Any]:
    return {
        "client_id": row["id"], "name": row["name"], "scopes": list(row["scopes"]),
        "content_types": list(row["content_types"]) if row["content_types"] is not None else None,
        "created_at": iso(row["created_at"]), "created_by": row["created_by"],
    }


async def create_client(
    conn: asyncpg.Connection, body: Any, actor: Credential, *, request_id: str | None, ip: str | None
) -> tuple[asyncpg.Record, str]:
    """A client and its secret (shown once): it can get tokens with at most these scopes."""
    problems = FieldErrorsProblem()
    name, scopes, content_types = parse_grant(body, {"name", "scopes", "content_types"}, problems, scopes_required=True)
    problems.raise_if_any()
    actor.require_grants(scopes, content_types)
    client_id = CLIENT_PREFIX + str(ULID())
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    async with conn.transaction():
        row = await repo.insert_client(
            conn, client_id=client_id, name=name, scopes=sorted(set(scopes)),
            content_types=sorted(set(content_types)) if content_types is not None else None,
            secret_hash=keys.hash_secret(secret), created_by=actor.actor(),
        )
        await audit(conn, actor=actor.actor(), action="oauth_client.create", target=f"oauth_client:{client_id}",
                    request_id=request_id, ip=ip)
    return row, secret


async def delete_client(
    conn: asyncpg.Connection, client_id: str, actor: Credential, *, request_id: str | None, ip: str | None
) -> None:
    """Delete the client; every process refuses its tokens within a second (NOTIFY client:{id})."""
    async with conn.transaction():
        if len(client_id) > 64 or not await repo.delete_client(conn, client_id):
            raise not_found("oauth client")
        await audit(conn, actor=actor.actor(), action="oauth_client.delete", target=f"oauth_client:{client_id}",
                    request_id=request_id, ip=ip)
        await invalidate(conn, f"client:{client_id}")


# --- signing keys ----------------------------------------------------------------------------------


class SigningKeys:
    """This process's view of the signing keys: the current private key (to sign, management app
    only) and the published public keys (to verify, both apps). Reloaded on the `oauth:keys`
    invalidation, and on an unknown `kid` at most once a second (a new key another process made)."""

    RELOAD_INTERVAL = 1.0
    KEEP_RETIRED_SECONDS = TOKEN_SECONDS + 300

    def __init__(self, pool: Any, box: SecretBox | None = None) -> None:
        self.pool = pool
        self.box = box
        self._signer: tuple[str, ECKey] | None = None
        self._public: KeySet | None = None
        self._kids: frozenset[str] = frozenset()
        self._loaded_at = -1e9

    def invalidate(self, tags: list[str] | None) -> None:
        if tags is None or KEYS_TAG in tags:
            self._signer = None
            self._public = None

    async def signer(self) -> tuple[str, ECKey]:
        if self._signer is None:
            assert self.box is not None, "only the management app signs tokens"
            async with self.pool.acquire() as conn:
                row = await repo.current_signing_key(conn)
                if row is None:
                    await ensure_signing_key(conn, self.box)
                    row = await repo.current_signing_key(conn)
            assert row is not None
            self._signer = (row["kid"], ECKey.import_key(self.box.decrypt(row["private_key"])))
        return self._signer

    async def public(self, kid: str | None = None) -> KeySet:
        """The published keys; with `kid`, reloaded first if it is unknown (rate limited)."""
        stale = self._public is None or (
            kid is not None and kid not in self._kids and time.monotonic() - self._loaded_at >= self.RELOAD_INTERVAL
        )
        if stale:
            async with self.pool.acquire() as conn:
                rows = await repo.published_keys(conn, self.KEEP_RETIRED_SECONDS)
            self._public = KeySet([ECKey.import_key(dict(r["public_jwk"])) for r in rows])
            self._kids = frozenset(r["kid"] for r in rows)
            self._loaded_at = time.monotonic()
        assert self._public is not None
        return self._public

    async def jwks(self) -> dict[str, Any]:
        await self.public()
        return {"keys": [key.as_dict(private=False) for key in (self._public.keys if self._public else [])]}

    def knows(self, kid: str) -> bool:
        return kid in self._kids


def _new_key() -> tuple[str, ECKey]:
    kid = str(ULID())
    return kid, ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig", "alg": ALGORITHM})


async def _insert_key(conn: asyncpg.Connection, box: SecretBox) -> str:
    kid, key = _new_key()
    private = box.encrypt(key.as_pem(private=True).decode())
    await repo.insert_signing_key(conn, kid, private, key.as_dict(private=False))
    return kid


async def ensure_signing_key(conn: asyncpg.Connection, box: SecretBox) -> None:
    """Create the first signing key unless one exists (one process at a time)."""
    async with conn.transaction():
        await repo.lock_signing_keys(conn)
        if await repo.current_signing_key(conn) is None:
            await _insert_key(conn, box)
            await invalidate(conn, KEYS_TAG)


async def rotate_signing_key(conn: asyncpg.Connection, box: SecretBox) -> str:
    """A new signing key; the old one signs nothing more but stays published (and valid) until the
    tokens it signed have expired, so rotating breaks no live token."""
    async with conn.transaction():
        await repo.lock_signing_keys(conn)
        await repo.retire_signing_keys(conn)
        kid = await _insert_key(conn, box)
        await audit(conn, actor={"kind": "system", "id": "system", "name": "cli"}, action="oauth_signing_key.rotate",
                    target=f"oauth_signing_key:{kid}", request_id=None, ip=None)
        await invalidate(conn, KEYS_TAG)
    return kid


# --- tokens ----------------------------------------------------------------------------------------


def client_from_request(authorization: str | None, form: dict[str, str]) -> tuple[str, str, bool]:
    """(client_id, client_secret, by HTTP Basic) from RFC 6749 §2.3.1 client authentication."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise OAuthError("invalid_client", "use HTTP Basic or client_id and client_secret in the form", 401)
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthError("invalid_client", "malformed HTTP Basic credentials", 401,
                             {"WWW-Authenticate": 'Basic realm="cms"'}) from None
        client_id, sep, secret = decoded.partition(":")
        if not sep:
            raise OAuthError("invalid_client", "malformed HTTP Basic credentials", 401,
                             {"WWW-Authenticate": 'Basic realm="cms"'})
        if "client_secret" in form:
            raise OAuthError("invalid_request", "authenticate the client one way only")
        return unquote_plus(client_id), unquote_plus(secret), True
    form_id, form_secret = form.get("client_id"), form.get("client_secret")
    if not form_id or not form_secret:
        raise OAuthError("invalid_client", "client authentication is required", 401,
                         {"WWW-Authenticate": 'Basic realm="cms"'})
    return form_id, form_secret, False


class Clients:
    """Client rows by id, kept briefly so a token request costs no database round trip. Deleting a
    client NOTIFYs `client:{id}`, which drops it here at once (and its tokens are refused at
    verification whatever this holds); the TTL bounds a lost notification. Unknown ids are not
    kept, so made-up ids cannot push real clients out."""

    TTL = 5.0
    MAX_ENTRIES = 10_000

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self._rows: OrderedDict[str, tuple[float, asyncpg.Record]] = OrderedDict()

    def invalidate(self, tags: list[str] | None) -> None:
        if tags is None:
            self._rows.clear()
            return
        for tag in tags:
            if tag.startswith("client:"):
                self._rows.pop(tag[7:], None)

    async def get(self, client_id: str) -> asyncpg.Record | None:
        now = time.monotonic()
        kept = self._rows.get(client_id)
        if kept is not None and now - kept[0] <= self.TTL:
            return kept[1]
        async with self.pool.acquire() as conn:
            row = await repo.client_with_secret(conn, client_id)
        if row is not None:
            self._rows[client_id] = (now, row)
            self._rows.move_to_end(client_id)
            while len(self._rows) > self.MAX_ENTRIES:
                self._rows.popitem(last=False)
        return row


async def authenticate(clients: Clients, client_id: str, secret: str, by_basic: bool) -> asyncpg.Record:
    """The client, if the secret is its own (constant-time); else `invalid_client`."""
    row = None
    if len(client_id) <= 64 and len(secret) <= 128:
        row = await clients.get(client_id)
    if row is None or not hmac.compare_digest(bytes(row["secret_hash"]), keys.hash_secret(secret)):
        headers = {"WWW-Authenticate": 'Basic realm="cms"'} if by_basic else {}
        raise OAuthError("invalid_client", "unknown client or wrong secret", 401, headers)
    return row


async def issue_token(signing: SigningKeys, client: asyncpg.Record, scope: str | None, issuer: str) -> dict[str, Any]:
    """An access token for the client: its scopes, or fewer (`scope` narrows, never widens)."""
    held = set(client["scopes"])
    wanted = set(scope.split()) if scope is not None and scope.strip() else held
    if len(scope or "") > 1000 or not wanted <= held:
        raise OAuthError("invalid_scope", f"this client may ask for: {' '.join(sorted(held))}")
    kid, key = await signing.signer()
    now = int(time.time())
    granted = " ".join(sorted(wanted))
    claims = {
        "iss": issuer, "aud": AUDIENCE, "sub": client["id"], "client_id": client["id"], "scope": granted,
        "iat": now, "nbf": now, "exp": now + TOKEN_SECONDS, "jti": secrets.token_urlsafe(16),
    }
    token = jwt.encode({"alg": ALGORITHM, "typ": "at+jwt", "kid": kid}, claims, key)
    return {"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_SECONDS, "scope": granted}


def _header(token: str) -> dict[str, Any] | None:
    segment = token.split(".", 1)[0]
    if len(segment) > 512:
        return None
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        return None
    return header if isinstance(header, dict) else None


async def verified_claims(signing: SigningKeys, token: str, issuer: str) -> dict[str, Any] | None:
    """The claims of one of our access tokens, or None: wrong signature, `alg` (none included),
    unknown `kid`, `typ`, `iss` or `aud`, expired, not yet valid, or a claim missing."""
    if len(token) > MAX_TOKEN_CHARS:
        return None
    header = _header(token)
    if header is None or header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str):
        return None
    if str(header.get("typ", "")).lower() not in TOKEN_TYPES:
        return None
    keyset = await signing.public(header["kid"])
    if not signing.knows(header["kid"]):
        return None
    try:
        decoded = jwt.decode(token, keyset, algorithms=[ALGORITHM])
        jwt.JWTClaimsRegistry(
            leeway=5,
            iss={"essential": True, "value": issuer}, aud={"essential": True, "value": AUDIENCE},
            sub={"essential": True}, client_id={"essential": True}, jti={"essential": True},
            scope={"essential": True}, exp={"essential": True}, iat={"essential": True},
        ).validate(decoded.claims)
    except (JoseError, ValueError, TypeError):
        return None
    claims = decoded.claims
    if not all(isinstance(claims.get(k), str) for k in ("client_id", "jti", "scope")) or claims["sub"] != claims["client_id"]:
        return None
    return claims


async def revoke_token(conn: asyncpg.Connection, signing: SigningKeys, client_id: str, token: str, issuer: str) -> None:
    """RFC 7009: the client's own valid token is refused everywhere within a second; anything else
    is ignored (the answer is 200 either way)."""
    claims = await verified_claims(signing, token, issuer)
    if claims is None or claims["client_id"] != client_id:
        return
    async with conn.transaction():
        await repo.revoke_token(conn, claims["jti"], client_id, datetime.fromtimestamp(claims["exp"], UTC))
        await invalidate(conn, f"jti:{claims['jti']}")
