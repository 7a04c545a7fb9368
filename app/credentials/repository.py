"""SQL for api_keys and their secrets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from ..db import locks


def _row(row: asyncpg.Record | None) -> asyncpg.Record:
    """INSERT/UPDATE … RETURNING on a row that exists always returns it."""
    assert row is not None
    return row

KEY_COLUMNS = (
    "k.id, k.name, k.kind, k.prefix, k.scopes, k.content_types, k.rate_limit, k.created_at, "
    "k.created_by, k.expires_at, k.last_used_at, k.revoked_at"
)


async def insert_key(
    conn: asyncpg.Connection, *, key_id: str, name: str, kind: str, prefix: str, scopes: list[str],
    content_types: list[str] | None, rate_limit: str | None, created_by: dict[str, Any],
    expires_at: datetime | None, secret_hash: bytes,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"""INSERT INTO api_keys AS k (id, name, kind, prefix, scopes, content_types, rate_limit, created_by, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {KEY_COLUMNS}""",
        key_id, name, kind, prefix, scopes, content_types, rate_limit, created_by, expires_at,
    )
    await conn.execute(
        "INSERT INTO api_key_secrets (secret_hash, key_id) VALUES ($1, $2)", secret_hash, key_id
    )
    return _row(row)


async def find_by_hash(conn: asyncpg.Connection | asyncpg.Pool, secret_hash: bytes) -> asyncpg.Record | None:
    """The key of a secret, with its secret's expiry and (for a preview token) its parent's state."""
    return await conn.fetchrow(
        f"""SELECT {KEY_COLUMNS}, s.expires_at AS secret_expires_at, k.parent_id,
                   p.revoked_at AS parent_revoked_at, p.expires_at AS parent_expires_at
            FROM api_key_secrets s JOIN api_keys k ON k.id = s.key_id LEFT JOIN api_keys p ON p.id = k.parent_id
            WHERE s.secret_hash = $1""",
        secret_hash,
    )


async def insert_preview_token(
    conn: asyncpg.Connection, *, token_id: str, parent_id: str | None, content_types: list[str] | None,
    created_by: dict[str, Any], expires_at: datetime, secret_hash: bytes, max_live: int,
) -> bool:
    """Store a preview token (False: its parent already has `max_live` unexpired ones); tokens
    that expired a day ago are cleared, a bounded batch per call."""
    await conn.execute(
        """DELETE FROM api_keys WHERE id IN (SELECT id FROM api_keys WHERE kind = 'preview_token'
           AND expires_at < now() - interval '1 day' LIMIT 100)"""
    )
    if parent_id is not None:
        live = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM api_keys WHERE parent_id = $1 AND expires_at > now() LIMIT $2) AS t",
            parent_id, max_live,
        )
        if live >= max_live:
            return False
    await conn.execute(
        """INSERT INTO api_keys (id, name, kind, prefix, content_types, created_by, expires_at, parent_id)
           VALUES ($1, 'preview token', 'preview_token', 'cms_pt_', $2, $3, $4, $5)""",
        token_id, content_types, created_by, expires_at, parent_id,
    )
    await conn.execute("INSERT INTO api_key_secrets (secret_hash, key_id) VALUES ($1, $2)", secret_hash, token_id)
    return True


async def rotate_secret(
    conn: asyncpg.Connection, key_id: str, secret_hash: bytes, prefix: str, grace_seconds: float
) -> asyncpg.Record:
    """Inside a transaction: the key's current secrets expire after the grace (sooner if they
    already would), the new one is added, and the key shows the new prefix."""
    await conn.execute(
        """UPDATE api_key_secrets SET expires_at = least(coalesce(expires_at, 'infinity'),
                                                      now() + make_interval(secs => $2))
           WHERE key_id = $1""",
        key_id, grace_seconds,
    )
    await conn.execute("INSERT INTO api_key_secrets (secret_hash, key_id) VALUES ($1, $2)", secret_hash, key_id)
    # Secrets whose grace ended long ago are only clutter.
    await conn.execute(
        "DELETE FROM api_key_secrets WHERE key_id = $1 AND expires_at < now() - interval '1 day'", key_id
    )
    return _row(await conn.fetchrow(
        f"UPDATE api_keys AS k SET prefix = $2 WHERE id = $1 RETURNING {KEY_COLUMNS}", key_id, prefix
    ))


async def get_key(conn: asyncpg.Connection, key_id: str, *, for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(
        f"SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.id = $1 AND k.kind <> 'preview_token'{lock}", key_id
    )


async def list_keys(conn: asyncpg.Connection, after: str | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {KEY_COLUMNS} FROM api_keys k WHERE ($1::text IS NULL OR k.id > $1) AND k.kind <> 'preview_token' "
        "ORDER BY k.id LIMIT $2",
        after, limit,
    )


async def count_keys(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM api_keys WHERE kind <> 'preview_token'"))


async def revoke_key(conn: asyncpg.Connection, key_id: str) -> bool:
    result = await conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 AND kind <> 'preview_token'", key_id
    )
    return result.endswith(" 1")


async def touch_last_used(pool: asyncpg.Pool, key_id: str) -> None:
    await pool.execute(
        "UPDATE api_keys SET last_used_at = now() WHERE id = $1 "
        "AND (last_used_at IS NULL OR last_used_at < now() - interval '60 seconds')",
        key_id,
    )


async def bootstrap_state(conn: asyncpg.Connection, key_id: str) -> asyncpg.Record | None:
    """The bootstrap key's row, locked (two processes starting at once ensure it one after the other)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.BOOTSTRAP_KEY)
    return await conn.fetchrow("SELECT id, revoked_at FROM api_keys WHERE id = $1 FOR UPDATE", key_id)


async def set_only_secret(conn: asyncpg.Connection, key_id: str, secret_hash: bytes, scopes: list[str]) -> None:
    """The key's one secret is this one (a changed CMS_BOOTSTRAP_KEY replaces the old), with these scopes."""
    await conn.execute("DELETE FROM api_key_secrets WHERE key_id = $1 AND secret_hash <> $2", key_id, secret_hash)
    await conn.execute(
        "INSERT INTO api_key_secrets (secret_hash, key_id) VALUES ($1, $2) ON CONFLICT (secret_hash) DO NOTHING",
        secret_hash, key_id,
    )
    await conn.execute("UPDATE api_keys SET scopes = $2, prefix = 'bootstrap' WHERE id = $1", key_id, scopes)
