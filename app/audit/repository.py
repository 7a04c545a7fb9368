"""SQL for reading the audit log (writes are in service.py, inside each write's transaction)."""

from __future__ import annotations

import asyncpg

from ..db.rows import Conn


async def page(
    conn: Conn, *, after: int | None, limit: int, actor: str | None, action: str | None,
    request_id: str | None, outcome: str | None,
) -> list[asyncpg.Record]:
    """Entries after `after` (an id) in id order, every given filter holding."""
    return await conn.fetch(
        """SELECT id, at, actor, action, target, request_id, ip, outcome FROM audit_log
            WHERE ($1::bigint IS NULL OR id > $1)
              AND ($3::text IS NULL OR actor->>'id' = $3)
              AND ($4::text IS NULL OR action = $4)
              AND ($5::text IS NULL OR request_id = $5)
              AND ($6::text IS NULL OR outcome = $6)
            ORDER BY id LIMIT $2""",
        after, limit, actor, action, request_id, outcome,
    )
