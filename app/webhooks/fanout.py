"""Fan-out: which endpoints an event goes to, and the exact body they get.

The worker's `webhook` step calls `deliveries_for` for a batch of events and writes the rows in
the transaction that completes the steps, so every (event, endpoint) gets exactly one delivery,
recorded before anything is sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from ulid import ULID

from .. import render
from ..events import types as events
from ..publishing import repository as documents
from ..schema.registry import load_locales
from ..times import iso
from .repository import active_webhooks

_encode = msgspec.json.Encoder().encode

# Events whose body carries the entry as published (the stored ENTRY of the default locale).
WITH_ENTRY = (events.ENTRY_PUBLISHED, events.ENTRY_DELIVERED)
PING = "ping"


def matches(patterns: Iterable[str], event_type: str) -> bool:
    """`*`, an exact event name, or a family `entry.*`."""
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def wants(webhook: Any, event_type: str, payload: dict[str, Any]) -> bool:
    """An endpoint wants an event its patterns match and, when it names content types, one about
    theirs only (events of no content type pass the type filter)."""
    if not matches(webhook["events"], event_type):
        return False
    types = webhook["types"]
    about = events.content_types_of(event_type, payload)
    return types is None or about is None or about <= set(types)


def body(event_type: str, created_at: datetime | None, data: dict[str, Any]) -> bytes:
    """`{"type", "timestamp", "data"}`: what every attempt of the delivery sends."""
    return _encode({"type": event_type, "timestamp": iso(created_at), "data": data})


def ping_body(webhook_id: str, now: datetime) -> tuple[str, bytes]:
    """A ping: (its id, its body)."""
    return str(ULID()), body(PING, now, {"webhook_id": webhook_id})


class Event(msgspec.Struct, frozen=True):
    id: str
    seq: int
    type: str
    payload: dict[str, Any]
    created_at: datetime | None


async def deliveries_for(
    conn: asyncpg.Connection, claimed: list[Event]
) -> list[tuple[str, str, str, str, int, str | None, bytes]]:
    """The delivery rows of these events: (id, webhook id, event id, event type, seq, order key, body)."""
    webhooks = await active_webhooks(conn)
    wanted = [(e, [w for w in webhooks if wants(w, e.type, e.payload)]) for e in claimed if isinstance(e.payload, dict)]
    wanted = [(e, ws) for e, ws in wanted if ws]
    if not wanted:
        return []
    entries = await _published_entries(conn, [e for e, _ in wanted if e.type in WITH_ENTRY])
    rows = []
    for event, endpoints in wanted:
        data = dict(event.payload)
        order_key = None
        if event.type.startswith("entry."):
            entry_id = data.get("id")
            known = isinstance(entry_id, str)
            data["entry"] = entries.get(entry_id) if known and event.type in WITH_ENTRY else None  # type: ignore[arg-type]
            order_key = f"{data.get('type')}/{entry_id}" if known else None
        encoded = body(event.type, event.created_at, data)
        rows += [(str(ULID()), w["id"], event.id, event.type, event.seq, order_key, encoded) for w in endpoints]
    return rows


async def _published_entries(conn: asyncpg.Connection, claimed: list[Event]) -> dict[str, Any]:
    """The published ENTRY (default locale) of each entry these events name, decoded."""
    ids = sorted({e.payload["id"] for e in claimed if isinstance(e.payload.get("id"), str)})
    if not ids:
        return {}
    locale = (await load_locales(conn)).default
    return {r["entry_id"]: render.decode(r["body"]) for r in await documents.documents_for(conn, ids, locale)}
