"""Commit-safe reading of the outbox: the events feed and sync's change scan.

`seq` order is not commit order: a transaction holding seq 10 may commit after the one holding
seq 11, so a reader paging by seq would skip 10 for ever. Instead, readers only see events whose
writing transaction id is below the current snapshot's xmin -- every transaction below xmin has
finished, so no new event can ever appear below that line -- and page by (txid, seq), the order
of the outbox_events_feed index. A position in the feed is therefore a (txid, seq) pair.

The catch: one transaction that stays open (anywhere in the cluster: xmin is cluster-wide) holds
the feed back until it ends. Nothing is skipped; events just show up later.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import asyncpg

from ..content.schemas import iso

# An InitPlan: evaluated once per statement, and the (txid, seq) index stays usable.
_XMIN = "(SELECT pg_snapshot_xmin(pg_current_snapshot()))"

EVENT_ID = re.compile(r"[0-9A-Za-z]{1,64}")
ENTRY_CHANGE_EVENTS = ("entry.published", "entry.unpublished", "entry.deleted")


class Position(NamedTuple):
    """A place in the feed: everything at or before it has been read."""

    txid: int
    seq: int


START = Position(0, 0)


def _position(row: Any) -> Position:
    return Position(int(row["txid_text"]), int(row["seq"]))


async def position_of(conn: asyncpg.Connection, event_id: str) -> Position | None:
    """Where an event sits in the feed (None for an unknown id)."""
    if not EVENT_ID.fullmatch(event_id):
        return None
    row = await conn.fetchrow("SELECT txid::text AS txid_text, seq FROM outbox_events WHERE id = $1", event_id)
    return _position(row) if row is not None else None


async def head(conn: asyncpg.Connection) -> Position:
    """The last visible position: every event a reader can see now is at or before it."""
    row = await conn.fetchrow(
        f"SELECT txid::text AS txid_text, seq FROM outbox_events WHERE txid < {_XMIN} "
        "ORDER BY txid DESC, seq DESC LIMIT 1"
    )
    return _position(row) if row is not None else START


async def read(
    conn: asyncpg.Connection, after: Position, limit: int, *, content_types: frozenset[str] | None = None
) -> list[asyncpg.Record]:
    """Up to `limit` visible events after a position, in feed order.

    content_types (a credential limited to some types) hides entry.* and content_type.* events of
    other types; events that belong to no content type stay visible.
    """
    allowed = sorted(content_types) if content_types is not None else None
    return await conn.fetch(
        f"""SELECT id, type, payload, created_at, txid::text AS txid_text, seq
              FROM outbox_events
             WHERE (txid, seq) > ($1::text::xid8, $2::bigint)
               AND txid < {_XMIN}
               AND ($4::text[] IS NULL OR coalesce(
                    CASE WHEN type LIKE 'entry.%' THEN payload->>'type'
                         WHEN type LIKE 'content\\_type.%' THEN payload->>'id' END = ANY($4::text[]), true))
             ORDER BY txid, seq
             LIMIT $3""",
        str(after.txid), after.seq, limit, allowed,
    )


def event_json(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "type": row["type"], "created_at": iso(row["created_at"]), "data": row["payload"]}


class EntryChange(NamedTuple):
    position: Position
    entry_id: str | None


async def entry_changes(
    conn: asyncpg.Connection, after: Position, limit: int, type_id: str
) -> list[EntryChange]:
    """Visible publish/unpublish/delete events of one content type after a position, in feed order."""
    rows = await conn.fetch(
        f"""SELECT txid::text AS txid_text, seq, payload->>'id' AS entry_id
              FROM outbox_events
             WHERE (txid, seq) > ($1::text::xid8, $2::bigint)
               AND txid < {_XMIN}
               AND type = ANY($4::text[])
               AND payload->>'type' = $5
             ORDER BY txid, seq
             LIMIT $3""",
        str(after.txid), after.seq, limit, list(ENTRY_CHANGE_EVENTS), type_id,
    )
    return [EntryChange(_position(r), r["entry_id"]) for r in rows]
