"""SQL for OAuth clients, token signing keys and revoked tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from ..db import locks
from ..db.rows import Conn, returned

CLIENT_COLUMNS = "id, name, scopes, content_types, created_at, created_by"


async def insert_client(
    conn: Conn, *, client_id: str, name: str, scopes: list[str], content_types: list[str] | None,
    secret_hash: bytes, created_by: dict[str, Any],
) -> asyncpg.Record:
    return returned(await conn.fetchrow(
        f"""INSERT INTO oauth_clients (id, name, scopes, content_types, secret_hash, created_by)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {CLIENT_COLUMNS}""",
        client_id, name, scopes, content_types, secret_hash, created_by,
    ))


async def client_with_secret(conn: Conn, client_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {CLIENT_COLUMNS}, secret_hash FROM oauth_clients WHERE id = $1", client_id)


async def get_client(conn: Conn, client_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE id = $1", client_id)


async def list_clients(conn: Conn, after: str | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2",
        after, limit,
    )


async def count_clients(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM oauth_clients"))


async def delete_client(conn: Conn, client_id: str) -> bool:
    return (await conn.execute("DELETE FROM oauth_clients WHERE id = $1", client_id)).endswith(" 1")


async def token_state(conn: Conn, client_id: str, jti: str) -> asyncpg.Record | None:
    """What a token's verification needs from the database, in one statement: its client (None:
    deleted) and whether the token was revoked."""
    return await conn.fetchrow(
        """SELECT c.id, c.name, c.scopes, c.content_types,
                  EXISTS (SELECT 1 FROM oauth_revoked_tokens WHERE jti = $2) AS revoked
             FROM oauth_clients c WHERE c.id = $1""",
        client_id, jti,
    )


async def revoke_token(conn: Conn, jti: str, client_id: str, expires_at: datetime) -> None:
    await conn.execute(
        "INSERT INTO oauth_revoked_tokens (jti, client_id, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        jti, client_id, expires_at,
    )
    # Entries of tokens that expired anyway are only clutter: a bounded batch per revocation.
    await conn.execute(
        """DELETE FROM oauth_revoked_tokens WHERE jti IN
           (SELECT jti FROM oauth_revoked_tokens WHERE expires_at < now() - interval '1 hour' LIMIT 100)"""
    )


async def published_keys(conn: Conn, keep_retired_seconds: float) -> list[asyncpg.Record]:
    """Public keys that sign, or signed tokens that may still be live."""
    return await conn.fetch(
        """SELECT kid, public_jwk FROM oauth_signing_keys
            WHERE retired_at IS NULL OR retired_at > now() - make_interval(secs => $1)
            ORDER BY created_at""",
        keep_retired_seconds,
    )


async def current_signing_key(conn: Conn) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT kid, private_key FROM oauth_signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC LIMIT 1"
    )


async def lock_signing_keys(conn: asyncpg.Connection) -> None:
    """Inside a transaction: one process at a time creates or rotates the signing key."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.OAUTH_SIGNING_KEYS)


async def insert_signing_key(conn: Conn, kid: str, private_key: bytes, public_jwk: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO oauth_signing_keys (kid, private_key, public_jwk) VALUES ($1, $2, $3)", kid, private_key, public_jwk
    )


async def retire_signing_keys(conn: Conn) -> None:
    await conn.execute("UPDATE oauth_signing_keys SET retired_at = now() WHERE retired_at IS NULL")
