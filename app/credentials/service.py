"""Keys: create, list, revoke, and resolve a presented secret to a Credential."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from ulid import ULID

from ..audit.service import record as audit
from ..config import MAX_SECRET_CHARS
from ..events.outbox import invalidate
from ..problems import FieldErrorsProblem, forbidden, not_found
from ..times import iso, parse_rfc3339
from . import keys, repository
from .schemas import Credential

KINDS = tuple(keys.KIND_PREFIX)


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
    if not isinstance(body, dict):
        problems.add("", "must be a JSON object")
        problems.raise_if_any()
    for key in body:
        if key not in {"name", "kind", "scopes", "content_types", "expires_at", "rate_limit"}:
            problems.add(f"/{key}", "unknown property")
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 200 or "\x00" in name:
        problems.add("/name", "is required: a string of 1 to 200 characters")
    kind = body.get("kind")
    if kind not in KINDS:
        problems.add("/kind", f"must be one of {', '.join(KINDS)}")
    scopes = body.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        problems.add("/scopes", "must be a list of scopes")
        scopes = []
    for index, scope in enumerate(scopes):
        if scope not in keys.SCOPES:
            problems.add(f"/scopes/{index}", f"unknown scope; one of {', '.join(keys.SCOPES)}")
    if kind != "management" and scopes:
        problems.add("/scopes", "only management keys carry scopes")
    content_types = body.get("content_types")
    if content_types is not None and (
        not isinstance(content_types, list) or not all(isinstance(t, str) for t in content_types)
    ):
        problems.add("/content_types", "must be a list of content type ids")
        content_types = None
    expires_raw = body.get("expires_at")
    expires_at = parse_rfc3339(expires_raw) if expires_raw is not None else None
    if expires_raw is not None and expires_at is None:
        problems.add("/expires_at", "must be an RFC 3339 date-time with an offset")
    elif expires_at is not None and expires_at <= datetime.now(UTC):
        problems.add("/expires_at", "must be in the future")
    rate_limit = body.get("rate_limit")
    if rate_limit is not None:
        import re

        if not isinstance(rate_limit, str) or not re.fullmatch(r"[1-9]\d{0,8}/[1-9]\d{0,6}", rate_limit):
            problems.add("/rate_limit", "must look like 600/60 (requests/seconds)")
    problems.raise_if_any()
    # Least privilege: a key can grant only what its creator holds.
    missing = set(scopes) - set(creator.scopes)
    if missing:
        raise forbidden(f"you cannot grant scopes you do not hold: {', '.join(sorted(missing))}")
    if creator.content_types is not None:
        if content_types is None or not set(content_types) <= creator.content_types:
            raise forbidden("you cannot grant content types you do not hold")
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


async def revoke(conn: asyncpg.Connection, key_id: str, actor: Credential, *, request_id: str | None, ip: str | None) -> None:
    async with conn.transaction():
        if not await repository.revoke_key(conn, key_id):
            raise not_found("key")
        await audit(conn, actor=actor.actor(), action="key.revoke", target=f"key:{key_id}", request_id=request_id, ip=ip)
        await invalidate(conn, f"key:{key_id}")


async def ensure_bootstrap_key(conn: asyncpg.Connection, secret: str) -> bool:
    return await repository.ensure_secret(
        conn, key_id="bootstrap", name="bootstrap (CMS_BOOTSTRAP_KEY)", secret_hash=keys.hash_secret(secret),
        scopes=list(keys.SCOPES), prefix=secret[:15],
    )


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
    credential: Credential | None
    key_id: str | None
    fetched: float
    expires: float  # epoch seconds; inf when the key never expires


class CredentialResolver:
    """Secret → Credential with a short in-process cache.

    Keyed by the presented secret itself, so a repeat costs one dict lookup (no hashing).
    Revocations arrive by the invalidation listener (tag key:{id}) and clear the entry at once;
    the TTL bounds staleness even if a notification is lost.
    """

    TTL = 5.0
    MAX_ENTRIES = 10000

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._cache: dict[str, _Cached] = {}
        self._touched: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()

    def invalidate(self, tags: list[str] | None) -> None:
        if tags is None:
            self._cache.clear()
            return
        ids = {t[4:] for t in tags if t.startswith("key:")}
        if ids:
            for secret, cached in list(self._cache.items()):
                if cached.key_id in ids:
                    del self._cache[secret]

    def cached(self, secret: str) -> Credential | None:
        """The credential for `secret` if known without any I/O and still valid, else None."""
        item = self._cache.get(secret)
        if item is None or item.credential is None:
            return None
        now = time.monotonic()
        if now - item.fetched > self.TTL or time.time() >= item.expires:
            return None
        self._touch(item.credential.id, now)
        return item.credential

    async def resolve(self, secret: str, allow_bootstrap: bool) -> Credential | None:
        if len(secret) > MAX_SECRET_CHARS:
            return None  # no key is that long: neither looked up nor cached (the cache is keyed by secret)
        now = time.monotonic()
        cached = self._cache.get(secret)
        if cached is None or now - cached.fetched > self.TTL:
            if not keys.well_formed(secret) and not (allow_bootstrap and len(secret) >= 32):
                return None
            row = await repository.find_by_hash(self.pool, keys.hash_secret(secret))
            credential = None
            key_id = None
            expires = float("inf")
            if row is not None and row["revoked_at"] is None:
                key_id = row["id"]
                limits = [t for t in (row["expires_at"], row["secret_expires_at"]) if t is not None]
                credential = Credential(
                    id=row["id"], kind=row["kind"], name=row["name"], scopes=frozenset(row["scopes"]),
                    content_types=frozenset(row["content_types"]) if row["content_types"] is not None else None,
                    expires_at=min(limits) if limits else None, rate_limit=row["rate_limit"],
                )
                expires = min(limits).timestamp() if limits else float("inf")
            if len(self._cache) >= self.MAX_ENTRIES:
                self._cache.clear()
            cached = _Cached(credential=credential, key_id=key_id, fetched=now, expires=expires)
            self._cache[secret] = cached
        credential = cached.credential
        if credential is None or time.time() >= cached.expires:
            return None
        self._touch(credential.id, now)
        return credential

    def _touch(self, key_id: str, now: float) -> None:
        if now - self._touched.get(key_id, -1e9) < 60:
            return
        self._touched[key_id] = now
        task = asyncio.get_running_loop().create_task(repository.touch_last_used(self.pool, key_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
