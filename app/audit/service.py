"""Append-only audit log of every management write and every denied request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from ..credentials.schemas import Credential


async def record(
    conn: asyncpg.Connection | asyncpg.Pool, *, actor: dict[str, Any], action: str, target: str | None,
    request_id: str | None, ip: str | None, outcome: str = "success",
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor, action, target, request_id, ip, outcome) VALUES ($1, $2, $3, $4, $5, $6)",
        actor, action, target, request_id, ip, outcome,
    )


async def record_many(
    conn: asyncpg.Connection, *, actor: dict[str, Any], writes: list[tuple[str, str]], request_id: str | None,
    ip: str | None,
) -> None:
    """`record` for many successful writes (action, target) by one actor, in one statement."""
    if writes:
        await conn.execute(
            "INSERT INTO audit_log (actor, action, target, request_id, ip, outcome) "
            "SELECT $1::jsonb, u.action, u.target, $4, $5, 'success' FROM unnest($2::text[], $3::text[]) AS u(action, target)",
            actor, [w[0] for w in writes], [w[1] for w in writes], request_id, ip,
        )


@dataclass
class WriteContext:
    """Who makes a write, for its audit row: the credential, the request id and the client address."""

    actor: Credential
    request_id: str | None
    ip: str | None

    async def audit(self, conn: asyncpg.Connection, action: str, target: str) -> None:
        await record(conn, actor=self.actor.actor(), action=action, target=target, request_id=self.request_id, ip=self.ip)
