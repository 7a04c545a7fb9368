"""SQL for stored idempotent answers."""

from __future__ import annotations

from typing import Any

import asyncpg

from ..db import locks

KEEP_HOURS = 24


async def try_lock(conn: asyncpg.Connection, credential_id: str, key: str) -> bool:
    """Inside a transaction: this (credential, key) for this transaction, unless another holds it."""
    lock = locks.named_key("idempotency", f"{credential_id}\x00{key}")
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", lock))


async def stored(conn: asyncpg.Connection, credential_id: str, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"""SELECT fingerprint, status, headers, body FROM idempotency_keys
            WHERE credential_id = $1 AND key = $2 AND created_at > now() - interval '{KEEP_HOURS} hours'""",
        credential_id, key,
    )


async def store(
    conn: asyncpg.Connection, credential_id: str, key: str, fingerprint: bytes, status: int,
    headers: dict[str, Any], body: bytes,
) -> None:
    """Keep the answer (replacing one older than the keeping time); clear a bounded batch of old ones."""
    await conn.execute(
        """INSERT INTO idempotency_keys (credential_id, key, fingerprint, status, headers, body)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (credential_id, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
               status = EXCLUDED.status, headers = EXCLUDED.headers, body = EXCLUDED.body, created_at = now()""",
        credential_id, key, fingerprint, status, headers, body,
    )
    await conn.execute(
        f"""DELETE FROM idempotency_keys WHERE (credential_id, key) IN (SELECT credential_id, key FROM idempotency_keys
            WHERE created_at < now() - interval '{KEEP_HOURS} hours' LIMIT 100)"""
    )
