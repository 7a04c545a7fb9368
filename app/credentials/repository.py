"""SQL for api_keys and their secrets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg


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
    return await conn.fetchrow(
        f"""SELECT {KEY_COLUMNS}, s.expires_at AS secret_expires_at
            FROM api_key_secrets s JOIN api_keys k ON k.id = s.key_id
            WHERE s.secret_hash = $1""",
        secret_hash,
    )


async def get_key(conn: asyncpg.Connection, key_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.id = $1", key_id)


async def list_keys(conn: asyncpg.Connection, after: str | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {KEY_COLUMNS} FROM api_keys k WHERE ($1::text IS NULL OR k.id > $1) ORDER BY k.id LIMIT $2",
        after, limit,
    )


async def revoke_key(conn: asyncpg.Connection, key_id: str) -> bool:
    result = await conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1", key_id
    )
    return result.endswith(" 1")


async def touch_last_used(pool: asyncpg.Pool, key_id: str) -> None:
    await pool.execute(
        "UPDATE api_keys SET last_used_at = now() WHERE id = $1 "
        "AND (last_used_at IS NULL OR last_used_at < now() - interval '60 seconds')",
        key_id,
    )


async def ensure_secret(
    conn: asyncpg.Connection, *, key_id: str, name: str, secret_hash: bytes, scopes: list[str], prefix: str
) -> bool:
    """Make sure a management key with this exact secret exists; True when created."""
    existing = await conn.fetchval("SELECT key_id FROM api_key_secrets WHERE secret_hash = $1", secret_hash)
    if existing:
        await conn.execute(
            "UPDATE api_keys SET revoked_at = NULL, scopes = $2 WHERE id = $1 AND kind = 'management'",
            existing, scopes,
        )
        return False
    await insert_key(
        conn, key_id=key_id, name=name, kind="management", prefix=prefix, scopes=scopes, content_types=None,
        rate_limit=None, created_by={"kind": "system", "id": "system", "name": "system"}, expires_at=None,
        secret_hash=secret_hash,
    )
    return True
