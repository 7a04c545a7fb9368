"""The transactional outbox: every write adds its event in the same transaction."""

from __future__ import annotations

from typing import Any

import asyncpg
from ulid import ULID

from ..audit.service import WriteContext

OUTBOX_CHANNEL = "cms_outbox"
INVALIDATE_CHANNEL = "cms_invalidate"


async def emit(conn: asyncpg.Connection, event_type: str, payload: dict[str, Any]) -> str:
    """Insert an outbox event; NOTIFY is transactional, so the relay wakes only after commit."""
    return (await emit_many(conn, [(event_type, payload)]))[0]


async def emit_many(
    conn: asyncpg.Connection, events: list[tuple[str, dict[str, Any]]], *, relayed: bool = False
) -> list[str]:
    """`emit` for many events in one round trip (one notification wakes the relay for all).

    relayed=True: events no pipeline step consumes (the caller knows) are stored as already relayed,
    without waking the relay; the events feed and sync read them all the same.
    """
    if not events:
        return []
    ids = [str(ULID()) for _ in events]
    args = [ids, [t for t, _ in events], [p for _, p in events]]
    if relayed:
        await conn.execute(
            "INSERT INTO outbox_events (id, type, payload, relayed_at) "
            "SELECT u.*, now() FROM unnest($1::text[], $2::text[], $3::jsonb[]) AS u",
            *args,
        )
        return ids
    await conn.execute(
        "WITH e AS (INSERT INTO outbox_events (id, type, payload) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[]) RETURNING id) "
        "SELECT pg_notify($4, max(id)) FROM e",
        *args, OUTBOX_CHANNEL,
    )
    return ids


async def invalidate(conn: asyncpg.Connection, *tags: str) -> None:
    """Tell every process (after commit) to drop cached things carrying these tags."""
    if not tags:
        return
    payload = " ".join(tags)
    # NOTIFY payloads are limited to 8000 bytes; split long tag lists.
    while payload:
        if len(payload) <= 7900:
            chunk, payload = payload, ""
        else:
            cut = payload.rfind(" ", 0, 7900)
            chunk, payload = payload[:cut], payload[cut + 1 :]
        await conn.execute("SELECT pg_notify($1, $2)", INVALIDATE_CHANNEL, chunk)


async def record_write(
    conn: asyncpg.Connection, ctx: WriteContext, action: str, target: str, event_type: str,
    payload: dict[str, Any], *tags: str,
) -> None:
    """The bookkeeping of an entry write, in one round trip: its audit row, its outbox event (and
    the relay's wake-up) and the invalidation of delivery caches by `tags`, all at commit."""
    invalidation = " ".join(tags)
    if len(invalidation) > 7900:  # NOTIFY payload limit: let `invalidate` split it
        await ctx.audit(conn, action, target)
        await emit(conn, event_type, payload)
        await invalidate(conn, *tags)
        return
    await conn.execute(
        "WITH a AS (INSERT INTO audit_log (actor, action, target, request_id, ip, outcome) "
        "           VALUES ($1, $2, $3, $4, $5, 'success')), "
        "     e AS (INSERT INTO outbox_events (id, type, payload) VALUES ($6, $7, $8) RETURNING id) "
        "SELECT pg_notify($9, e.id), CASE WHEN $10 <> '' THEN pg_notify($11, $10) END FROM e",
        ctx.actor.actor(), action, target, ctx.request_id, ctx.ip, str(ULID()), event_type, payload,
        OUTBOX_CHANNEL, invalidation, INVALIDATE_CHANNEL,
    )
