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
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
from ulid import ULID

from ..db import locks
from ..times import iso
from . import types as events

# Whether the types `$4` may see an event: events.content_types_of in SQL, from the registry
# (names and keys are constants, safe inline). Events of no content type are visible.
_VISIBLE_TO_TYPES = "CASE type " + " ".join(
    f"WHEN '{event.name}' THEN payload->>'{event.type_key}' = ANY($4::text[])"
    if event.type_key else
    f"WHEN '{event.name}' THEN NOT EXISTS (SELECT 1 FROM jsonb_array_elements(payload->'{event.members_key}') AS m "
    "WHERE NOT (m->>'type' = ANY($4::text[])))"
    for event in events.EVENT_TYPES.values() if event.type_key or event.members_key
) + " END"

# An InitPlan: evaluated once per statement, and the (txid, seq) index stays usable.
_XMIN = "(SELECT pg_snapshot_xmin(pg_current_snapshot()))"

EVENT_ID = re.compile(r"[0-9A-Za-z]{1,64}")


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
    # An outbox pruned empty still has a place: where the pruning stopped.
    return _position(row) if row is not None else (await pruned(conn)).position


class Pruned(NamedTuple):
    position: Position  # every event at or before it is gone (START: nothing was pruned)
    created_at: datetime | None  # the newest pruned event's created_at
    max_id: str | None  # the greatest pruned event id


async def pruned(conn: asyncpg.Connection) -> Pruned:
    row = await conn.fetchrow("SELECT txid::text AS txid_text, seq, created_at, max_id FROM outbox_pruned")
    return Pruned(_position(row), row["created_at"], row["max_id"]) if row is not None else Pruned(START, None, None)


def was_pruned(event_id: str, cut: Pruned) -> bool:
    """Could this (unknown) id be an event that pruning removed? Event ids are ULIDs, which sort by
    creation time: one at or below the greatest pruned id is taken to be gone."""
    try:
        ULID.from_str(event_id)
    except ValueError:
        return False
    return cut.max_id is not None and event_id.upper() <= cut.max_id


# One batch of pruning: the first `$2` events in feed order, cut before the first one that must
# stay (younger than the retention, not relayed yet, not visible to every reader yet, or with a
# step still to run), so what goes is always a prefix of the feed and the watermark says exactly
# what is missing. Steps go with their events (ON DELETE CASCADE).
_PRUNE = f"""
WITH turn AS (  -- one pruner at a time; another one skips this round instead of waiting
    SELECT pg_try_advisory_xact_lock({locks.OUTBOX_PRUNE}) AS ours
), head AS (
    SELECT e.id, e.txid, e.seq, e.created_at,
           (e.created_at < now() - make_interval(secs => $1) AND e.relayed_at IS NOT NULL
            AND e.txid < {_XMIN}
            AND NOT EXISTS (SELECT 1 FROM outbox_steps s
                             WHERE s.event_id = e.id AND s.status IN ('pending', 'running'))) AS prunable
      FROM outbox_events e
     WHERE (SELECT ours FROM turn)
     ORDER BY e.txid, e.seq
     LIMIT $2
), stop AS (
    SELECT txid, seq FROM head WHERE NOT prunable ORDER BY txid, seq LIMIT 1
), cut AS (
    SELECT h.id, h.txid, h.seq, h.created_at FROM head h
     WHERE h.prunable
       AND (NOT EXISTS (SELECT 1 FROM stop) OR (h.txid, h.seq) < (SELECT s.txid, s.seq FROM stop s))
), gone AS (
    DELETE FROM outbox_events e USING cut WHERE e.id = cut.id RETURNING cut.id, cut.txid, cut.seq, cut.created_at
), last AS (
    SELECT txid, seq, (SELECT max(created_at) FROM gone) AS created_at, (SELECT max(id) FROM gone) AS max_id,
           (SELECT count(*) FROM gone) AS n
      FROM gone ORDER BY txid DESC, seq DESC LIMIT 1
)
UPDATE outbox_pruned p
   SET txid = CASE WHEN (last.txid, last.seq) > (p.txid, p.seq) THEN last.txid ELSE p.txid END,
       seq = CASE WHEN (last.txid, last.seq) > (p.txid, p.seq) THEN last.seq ELSE p.seq END,
       created_at = greatest(p.created_at, last.created_at), max_id = greatest(p.max_id, last.max_id),
       events = p.events + last.n, pruned_at = now()
  FROM last
RETURNING last.n
"""


async def prune(conn: asyncpg.Connection, retention_seconds: float, batch: int = 5000) -> int:
    """Delete one batch of events older than the retention (a prefix of the feed); returns how many."""
    return int(await conn.fetchval(_PRUNE, retention_seconds, batch) or 0)


async def read(
    conn: asyncpg.Connection, after: Position, limit: int, *, content_types: frozenset[str] | None = None
) -> list[asyncpg.Record]:
    """Up to `limit` visible events after a position, in feed order.

    content_types (a credential limited to some types) hides the events about other types
    (events.content_types_of); events that belong to no content type stay visible.
    """
    allowed = sorted(content_types) if content_types is not None else None
    return await conn.fetch(
        f"""SELECT id, type, payload, created_at, txid::text AS txid_text, seq
              FROM outbox_events
             WHERE (txid, seq) > ($1::text::xid8, $2::bigint)
               AND txid < {_XMIN}
               AND ($4::text[] IS NULL OR coalesce({_VISIBLE_TO_TYPES}, true))
             ORDER BY txid, seq
             LIMIT $3""",
        str(after.txid), after.seq, limit, allowed,
    )


def event_json(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "type": row["type"], "created_at": iso(row["created_at"]), "data": row["payload"]}


class EntryChange(NamedTuple):
    position: Position
    entry_id: str | None
    schema: bool = False  # a content-type or locale change: every document of the type was re-rendered


async def entry_changes(
    conn: asyncpg.Connection, after: Position, limit: int, type_id: str
) -> list[EntryChange]:
    """Visible publish/unpublish/delete events of one content type after a position, in feed order,
    and the schema changes that re-rendered all of its documents: the change itself (a small type
    is re-rendered in its request) and `content_type.rerendered` once the background work of a big
    type's change (or of a locale change) has reached every document."""
    rows = await conn.fetch(
        f"""SELECT txid::text AS txid_text, seq, payload->>'id' AS entry_id, type NOT LIKE 'entry.%' AS schema
              FROM outbox_events
             WHERE (txid, seq) > ($1::text::xid8, $2::bigint)
               AND txid < {_XMIN}
               AND ((type = ANY($4::text[]) AND payload->>'type' = $5)
                    OR (type IN ('content_type.saved', 'content_type.rerendered') AND payload->>'id' = $5)
                    OR type = ANY($6::text[]))
             ORDER BY txid, seq
             LIMIT $3""",
        str(after.txid), after.seq, limit, list(events.ENTRY_CHANGES), type_id, list(events.LOCALE_CHANGES),
    )
    return [EntryChange(_position(r), None if r["schema"] else r["entry_id"], r["schema"]) for r in rows]
