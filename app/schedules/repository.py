"""SQL for scheduled actions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from ..db.rows import Conn, returned
from ..releases import repository as releases_repo
from ..schema.model import RESOURCE_ID

# NOTIFY channel the scheduler LISTENs on: a new action may be due before its next poll.
SCHEDULE_CHANNEL = "cms_schedule"


async def get_action(conn: Conn, action_id: str, *, for_update: bool = False) -> asyncpg.Record | None:
    if not RESOURCE_ID.fullmatch(action_id):
        return None
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM scheduled_actions WHERE id = $1{lock}", action_id)


def _visible_to(param: int) -> str:
    """SQL: the action is about an entry of the types in `$param`, or a release of only those types."""
    return (
        f"(${param}::text[] IS NULL OR entry_type = ANY(${param}::text[]) "
        f"OR (release_id IS NOT NULL AND {releases_repo.visible_to('s.release_id', param)}))"
    )


async def list_actions(
    conn: Conn, status: str | None, after: tuple[int, str] | None, limit: int, allowed: list[str] | None
) -> list[asyncpg.Record]:
    """Ordered by (at, id); the cursor is the last row's (at in epoch microseconds, id). `allowed`:
    only the actions a credential limited to these content types may see (None: all)."""
    return await conn.fetch(
        f"""SELECT *, (extract(epoch FROM at) * 1000000)::bigint AS at_us FROM scheduled_actions AS s
           WHERE ($1::text IS NULL OR status = $1)
             AND ($2::bigint IS NULL OR ((extract(epoch FROM at) * 1000000)::bigint, id) > ($2, $3::text))
             AND {_visible_to(5)}
           ORDER BY at, id LIMIT $4""",
        status, after[0] if after else None, after[1] if after else None, limit, allowed,
    )


async def count_actions(conn: Conn, status: str | None, allowed: list[str] | None) -> int:
    return int(await conn.fetchval(
        f"SELECT count(*) FROM scheduled_actions AS s WHERE ($1::text IS NULL OR status = $1) AND {_visible_to(2)}",
        status, allowed,
    ))


async def claim_due(conn: Conn) -> asyncpg.Record | None:
    """One due pending action, locked for this transaction; rows other schedulers hold are skipped."""
    return await conn.fetchrow(
        """SELECT * FROM scheduled_actions WHERE status = 'pending' AND at <= now()
           ORDER BY at, id LIMIT 1 FOR UPDATE SKIP LOCKED"""
    )


async def finish(conn: Conn, action_id: str, status: str, error: str | None) -> None:
    await conn.execute(
        """UPDATE scheduled_actions SET status = $2, error = $3, executed_at = now(), updated_at = now()
           WHERE id = $1""",
        action_id, status, error,
    )


async def next_due(conn: Conn) -> datetime | None:
    value: datetime | None = await conn.fetchval("SELECT min(at) FROM scheduled_actions WHERE status = 'pending'")
    return value


async def insert_action(
    conn: Conn, action_id: str, action: str, entry: dict[str, str] | None, release_id: str | None, at: datetime,
    created_by: dict[str, Any],
) -> asyncpg.Record:
    return returned(await conn.fetchrow(
        """INSERT INTO scheduled_actions (id, action, entry_type, entry_id, release_id, at, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
        action_id, action, entry["type"] if entry else None, entry["id"] if entry else None, release_id, at, created_by,
    ))


async def cancel(conn: Conn, action_id: str) -> None:
    await conn.execute("UPDATE scheduled_actions SET status = 'canceled', updated_at = now() WHERE id = $1", action_id)


async def wake_scheduler(conn: Conn, action_id: str) -> None:
    """At commit: a new action may be due before the scheduler's next poll."""
    await conn.execute("SELECT pg_notify($1, $2)", SCHEDULE_CHANNEL, action_id)
