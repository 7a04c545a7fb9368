"""Keys: create, list, revoke, and resolve a presented secret to a Credential."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
from ulid import ULID

from ..audit.service import record as audit
from ..config import MAX_SECRET_CHARS
from ..events.outbox import invalidate
from ..oauth import repository as oauth_repo
from ..oauth import service as oauth
from ..problems import FieldErrorsProblem, conflict, not_found
from ..times import iso, parse_rfc3339
from . import keys, repository
from .schemas import Credential, parse_grant

KINDS = ("delivery", "preview", "management")  # what POST /v1/keys makes (preview tokens have their own route)
log = logging.getLogger("cms.credentials")


def key_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"], "name": row["name"], "kind": row["kind"], "prefix": row["prefix"],
        "scopes": list(row["scopes"]), "content_types": list(row["content_types"]) if row["content_types"] is not None else None,
        "rate_limit": row["rate_limit"], "created_at": iso(row["created_at"]), "created_by": row["created_by"],
        "expires_at": iso(row["expires_at"]), "last_used_at": iso(row["last_used_at"]), "revoked_at": iso(row["revoked_at"]),
    }


async def create_key(
    conn: asyncpg.Connection, body: Any, creator: Credential, *, request_id: str | None, ip: str | None
) -> tuple[asyncpg.Record, str]:
    problems = FieldErrorsProblem()
    known = {"name", "kind", "scopes", "content_types", "expires_at", "rate_limit"}
    name, scopes, content_types = parse_grant(body, known, problems, scopes_required=False)
    kind = body.get("kind")
    if kind not in KINDS:
        problems.add("/kind", f"must be one of {', '.join(KINDS)}")
    if kind != "management" and scopes:
        problems.add("/scopes", "only management keys carry scopes")
    expires_raw = body.get("expires_at")
    expires_at = parse_rfc3339(expires_raw) if expires_raw is not None else None
    if expires_raw is not None and expires_at is None:
        problems.add("/expires_at", "must be an RFC 3339 date-time with an offset")
    elif expires_at is not None and expires_at <= datetime.now(UTC):
        problems.add("/expires_at", "must be in the future")
    rate_limit = body.get("rate_limit")
    if rate_limit is not None:
        if not isinstance(rate_limit, str) or not re.fullmatch(r"[1-9]\d{0,8}/[1-9]\d{0,6}", rate_limit):
            problems.add("/rate_limit", "must look like 600/60 (requests/seconds)")
    problems.raise_if_any()
    creator.require_grants(scopes, content_types)
    secret = keys.generate_secret(kind)
    key_id = str(ULID())
    async with conn.transaction():
        row = await repository.insert_key(
            conn, key_id=key_id, name=name, kind=kind, prefix=keys.display_prefix(secret), scopes=sorted(set(scopes)),
            content_types=sorted(set(content_types)) if content_types is not None else None, rate_limit=rate_limit,
            created_by=creator.actor(), expires_at=expires_at, secret_hash=keys.hash_secret(secret),
        )
        await audit(conn, actor=creator.actor(), action="key.create", target=f"key:{key_id}", request_id=request_id, ip=ip)
    return row, secret


MAX_GRACE_SECONDS = 30 * 86400


def _seconds_body(body: Any, name: str, default: float, low: float, high: float, *, whole: bool) -> float:
    """A body that is absent or `{name: seconds}` (low..high; `whole`: an integer): the seconds, or a 422."""
    problems = FieldErrorsProblem()
    if body is None:
        body = {}
    if not isinstance(body, dict):
        problems.add("", "must be a JSON object")
        problems.raise_if_any()
    for key in body:
        if key != name:
            problems.add(f"/{key}", "unknown property")
    value = body.get(name, default)
    kinds = int if whole else int | float
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "whole number" if whole else "number"
        problems.add(f"/{name}", f"must be a {kind} of seconds from {low:g} to {high:g}")
    problems.raise_if_any()
    return float(value)


async def rotate(
    conn: asyncpg.Connection, key_id: str, body: Any, actor: Credential, *, request_id: str | None, ip: str | None
) -> tuple[asyncpg.Record, str]:
    """A new secret for the key; the old ones keep working for `grace_seconds` (default 86400)."""
    grace = _seconds_body(body, "grace_seconds", 86400, 0, MAX_GRACE_SECONDS, whole=False)
    async with conn.transaction():
        row = await repository.get_key(conn, key_id, for_update=True)
        if row is None:
            raise not_found("key")
        # Rotating hands out a working secret: only to a caller who could have created this key.
        actor.require_grants(list(row["scopes"]), list(row["content_types"]) if row["content_types"] is not None else None)
        if row["revoked_at"] is not None:
            raise conflict("the key is revoked; create a new one")
        if key_id == BOOTSTRAP_ID:
            raise conflict("the bootstrap key's secret is CMS_BOOTSTRAP_KEY: change that and restart instead")
        secret = keys.generate_secret(row["kind"])
        row = await repository.rotate_secret(conn, key_id, keys.hash_secret(secret), keys.display_prefix(secret), float(grace))
        await audit(conn, actor=actor.actor(), action="key.rotate", target=f"key:{key_id}", request_id=request_id, ip=ip)
        await invalidate(conn, f"key:{key_id}")  # cached old secrets learn their new expiry
    return row, secret


PREVIEW_TOKEN_TTL = (60, 3600)
MAX_LIVE_PREVIEW_TOKENS = 1000  # per key: minting is cheap, rows are not free


async def create_preview_token(
    conn: asyncpg.Connection, body: Any, actor: Credential, *, request_id: str | None, ip: str | None
) -> tuple[str, datetime]:
    """A token for /preview/* only, for `ttl_seconds` (60..3600, default 900), limited to the
    caller's content types and ended with the caller's key."""
    ttl = int(_seconds_body(body, "ttl_seconds", 900, *PREVIEW_TOKEN_TTL, whole=True))
    secret = keys.generate_secret("preview_token")
    token_id = str(ULID())
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
    parent = actor.id if actor.kind in ("management", "preview", "delivery") else None
    async with conn.transaction():
        stored = await repository.insert_preview_token(
            conn, token_id=token_id, parent_id=parent,
            content_types=sorted(actor.content_types) if actor.content_types is not None else None,
            created_by=actor.actor(), expires_at=expires_at, secret_hash=keys.hash_secret(secret),
            max_live=MAX_LIVE_PREVIEW_TOKENS,
        )
        if not stored:
            raise conflict(f"this key already has {MAX_LIVE_PREVIEW_TOKENS} unexpired preview tokens")
        await audit(conn, actor=actor.actor(), action="preview_token.create", target=f"preview_token:{token_id}",
                    request_id=request_id, ip=ip)
    return secret, expires_at


async def revoke(conn: asyncpg.Connection, key_id: str, actor: Credential, *, request_id: str | None, ip: str | None) -> None:
    async with conn.transaction():
        if not await repository.revoke_key(conn, key_id):
            raise not_found("key")
        await audit(conn, actor=actor.actor(), action="key.revoke", target=f"key:{key_id}", request_id=request_id, ip=ip)
        await invalidate(conn, f"key:{key_id}")


BOOTSTRAP_ID = "bootstrap"


async def ensure_bootstrap_key(conn: asyncpg.Connection, secret: str) -> bool:
    """Make CMS_BOOTSTRAP_KEY a management key with every scope; True when created.

    Its `prefix` is a fixed label (the secret is the user's own: none of it is stored or shown).
    A changed CMS_BOOTSTRAP_KEY replaces the old secret. A revoked bootstrap key stays revoked:
    someone revoked it on purpose, so a restart must not bring it back (logged loudly instead).
    """
    async with conn.transaction():
        state = await repository.bootstrap_state(conn, BOOTSTRAP_ID)
        if state is None:
            await repository.insert_key(
                conn, key_id=BOOTSTRAP_ID, name="bootstrap (CMS_BOOTSTRAP_KEY)", kind="management",
                prefix="bootstrap", scopes=list(keys.SCOPES), content_types=None, rate_limit=None,
                created_by={"kind": "system", "id": "system", "name": "system"}, expires_at=None,
                secret_hash=keys.hash_secret(secret),
            )
            return True
        if state["revoked_at"] is not None:
            log.error(
                "CMS_BOOTSTRAP_KEY is set but the bootstrap key was revoked at %s: it stays revoked and "
                "every request with it is refused. Unset CMS_BOOTSTRAP_KEY and use a management key "
                "(`cms keys create`).", iso(state["revoked_at"]),
            )
            return False
        await repository.set_only_secret(conn, BOOTSTRAP_ID, keys.hash_secret(secret), list(keys.SCOPES))
        return False


async def create_admin_key(conn: asyncpg.Connection, name: str = "admin") -> str:
    secret = keys.generate_secret("management")
    async with conn.transaction():
        await repository.insert_key(
            conn, key_id=str(ULID()), name=name, kind="management", prefix=keys.display_prefix(secret),
            scopes=list(keys.SCOPES), content_types=None, rate_limit=None,
            created_by={"kind": "system", "id": "system", "name": "system"}, expires_at=None,
            secret_hash=keys.hash_secret(secret),
        )
    return secret


class _Cached(msgspec.Struct):
    credential: Credential
    fetched: float
    expires: float  # epoch seconds; inf when the key never expires
    tags: frozenset[str]  # invalidation tags that end it: key:{id} (and its parent's), client:{id}, jti:{jti}


CREDENTIAL_TAGS = ("key:", "client:", "jti:")


class CredentialResolver:
    """Secret → Credential with a short, bounded in-process cache.

    Known secrets are cached under the secret itself (a repeat costs one dict lookup, no hashing);
    only secrets that pass the local format and checksum check (or equal CMS_BOOTSTRAP_KEY) are
    ever looked up, and a miss is remembered by the secret's hash, so junk tokens neither reach the
    database nor take room. Both caches are LRUs of bounded size (evicting the oldest, never
    everything). Revocations arrive by the invalidation listener (tag key:{id}) and drop the entry
    at once; a lookup that overlapped one is repeated (the generation counter), so a key revoked
    while its lookup was in flight is not cached as valid. The TTL bounds staleness if a
    notification is lost.
    """

    TTL = 5.0
    MAX_ENTRIES = 10_000
    MAX_MISSES = 10_000

    def __init__(
        self, pool: asyncpg.Pool, bootstrap_key: str | None = None, *, signing: oauth.SigningKeys | None = None,
        issuer: str = "",
    ) -> None:
        self.pool = pool
        self.signing = signing  # to verify OAuth access tokens (None: not accepted)
        self.issuer = issuer
        self._bootstrap_hash = keys.hash_secret(bootstrap_key) if bootstrap_key else None
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._misses: OrderedDict[bytes, float] = OrderedDict()  # secret hash -> when it was missed
        self._generation = 0  # bumped by every invalidation
        self._touched: OrderedDict[str, float] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()
        self.lookups = 0  # database lookups made (tests count them)

    def invalidate(self, tags: list[str] | None) -> None:
        """Drop what the tags name. Only credential tags count: every publish sends entry and type
        tags too, and those must not disturb a lookup in flight (see `_lookup`)."""
        if tags is None:
            self._generation += 1
            self._cache.clear()
            self._misses.clear()
            return
        wanted = {t for t in tags if t.startswith(CREDENTIAL_TAGS)}
        if wanted:
            self._generation += 1
            for secret, cached in list(self._cache.items()):
                if cached.tags & wanted:
                    del self._cache[secret]

    def cached(self, secret: str) -> Credential | None:
        """The credential for `secret` if known without any I/O and still valid, else None."""
        item = self._cache.get(secret)
        if item is None:
            return None
        now = time.monotonic()
        if now - item.fetched > self.TTL or time.time() >= item.expires:
            return None
        self._touch(item.credential, now)
        return item.credential

    def _digest(self, secret: str, allow_bootstrap: bool) -> bytes | None:
        """The hash to look up, or None for a secret no key can have (checked locally)."""
        if len(secret) > MAX_SECRET_CHARS:
            return None
        if keys.well_formed(secret):
            return keys.hash_secret(secret)
        if allow_bootstrap and self._bootstrap_hash is not None and len(secret) >= 32:
            digest = keys.hash_secret(secret)
            if hmac.compare_digest(digest, self._bootstrap_hash):
                return digest
        return None

    async def resolve(self, secret: str, allow_bootstrap: bool) -> Credential | None:
        known = self.cached(secret)
        if known is not None:
            self._cache.move_to_end(secret)
            return known
        if oauth.looks_like_jwt(secret):
            return await self._resolve_token(secret)
        digest = self._digest(secret, allow_bootstrap)
        if digest is None or self._missed(digest):
            return None
        row, stable = await self._lookup(repository.find_by_hash, digest)
        if row is None or row["revoked_at"] is not None or row["parent_revoked_at"] is not None:
            if stable:
                self._miss(digest)
            return None
        limits = [
            t for t in (row["expires_at"], row["secret_expires_at"], row["parent_expires_at"]) if t is not None
        ]
        credential = Credential(
            id=row["id"], kind=row["kind"], name=row["name"], scopes=frozenset(row["scopes"]),
            content_types=frozenset(row["content_types"]) if row["content_types"] is not None else None,
            expires_at=min(limits) if limits else None, rate_limit=row["rate_limit"],
        )
        tags = {f"key:{row['id']}"} | ({f"key:{row['parent_id']}"} if row["parent_id"] else set())
        return self._remember(secret, credential, min(limits).timestamp() if limits else float("inf"), tags, stable)

    async def _resolve_token(self, token: str) -> Credential | None:
        """An OAuth access token: verified locally (signature, claims), then its client and
        revocation checked in one statement, cached like a key until it expires."""
        if self.signing is None or len(token) > oauth.MAX_TOKEN_CHARS:
            return None
        digest = keys.hash_secret(token)
        if self._missed(digest):
            return None
        claims = await oauth.verified_claims(self.signing, token, self.issuer)
        if claims is None:
            return None  # nothing to look up: only we can mint a token that passes
        row, stable = await self._lookup(oauth_repo.token_state, claims["client_id"], claims["jti"])
        if row is None or row["revoked"]:
            if stable:
                self._miss(digest)
            return None
        expires = float(claims["exp"])
        credential = Credential(
            id=row["id"], kind="oauth_client", name=row["name"],
            scopes=frozenset(claims["scope"].split()) & frozenset(row["scopes"]),
            content_types=frozenset(row["content_types"]) if row["content_types"] is not None else None,
            expires_at=datetime.fromtimestamp(expires, UTC),
        )
        return self._remember(token, credential, expires, {f"client:{row['id']}", f"jti:{claims['jti']}"}, stable)

    async def _lookup(self, find: Any, *args: Any) -> tuple[Any, bool]:
        """`find(pool, *args)` and whether it may be remembered: repeated while credential
        invalidations arrive during it, so a revocation that overlaps the lookup is never cached as
        valid. After 3 overlapped tries the last answer is used for this request only (each try
        began after the revocations before it were committed), neither cached nor remembered as a miss."""
        for _ in range(3):
            generation = self._generation
            self.lookups += 1
            row = await find(self.pool, *args)
            if generation == self._generation:
                return row, True
        return row, False

    def _missed(self, digest: bytes) -> bool:
        missed = self._misses.get(digest)
        return missed is not None and time.monotonic() - missed <= self.TTL

    def _miss(self, digest: bytes) -> None:
        self._misses[digest] = time.monotonic()
        self._misses.move_to_end(digest)
        while len(self._misses) > self.MAX_MISSES:
            self._misses.popitem(last=False)

    def _remember(
        self, secret: str, credential: Credential, expires: float, tags: set[str], stable: bool = True,
    ) -> Credential | None:
        if time.time() >= expires:
            return None
        if not stable:
            return credential
        now = time.monotonic()
        self._cache[secret] = _Cached(credential=credential, fetched=now, expires=expires, tags=frozenset(tags))
        self._cache.move_to_end(secret)
        while len(self._cache) > self.MAX_ENTRIES:
            self._cache.popitem(last=False)
        self._touch(credential, now)
        return credential

    def _touch(self, credential: Credential, now: float) -> None:
        """Record a key's last use, off the request path and at most once a minute per key."""
        key_id = credential.id
        if credential.kind == "oauth_client" or now - self._touched.get(key_id, -1e9) < 60:
            return
        self._touched[key_id] = now
        self._touched.move_to_end(key_id)
        while len(self._touched) > self.MAX_ENTRIES:
            self._touched.popitem(last=False)
        task = asyncio.get_running_loop().create_task(repository.touch_last_used(self.pool, key_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
