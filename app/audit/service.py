"""Append-only audit log of every management write and every denied request."""

from __future__ import annotations

from typing import Any

import asyncpg


async def record(
    conn: asyncpg.Connection | asyncpg.Pool, *, actor: dict[str, Any], action: str, target: str | None,
    request_id: str | None, ip: str | None, outcome: str = "success",
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor, action, target, request_id, ip, outcome) VALUES ($1, $2, $3, $4, $5, $6)",
        actor, action, target, request_id, ip, outcome,
    )
