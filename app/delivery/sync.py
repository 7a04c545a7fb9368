"""GET /api/v1/sync: every published entry of a type, then only what changed since.

A sync starts by capturing the feed position (app/events/feed.py: the last event every reader can
see) and pages through published_documents by entry id. When those pages are done the cursor
switches to delta mode from the captured position: visible entry.published / entry.unpublished /
entry.deleted events of the type after it, collapsed to distinct entries, each answered with its
state now (the stored ENTRY bytes, or a delete). An entry that changed during the initial pages
simply comes again in the first delta: at least once, always the latest state. A schema change that
re-rendered the type's documents (content_type.saved of the type, locale.saved/deleted, and
content_type.rerendered when a big type's documents were re-rendered in the background) sends the
cursor through the initial pages again, from that event's position.

The cursor is opaque base64url JSON holding the mode, type, locale and position; nothing but a
cursor this module wrote (byte for byte) is accepted.
"""

from __future__ import annotations

from typing import NamedTuple

import asyncpg
import msgspec

from .. import cursors, render
from ..credentials.schemas import Credential
from ..events import feed
from ..problems import gone, malformed, not_found
from ..publishing import repository as documents
from ..schema.model import (
    LOCALE_CODE,
    RESOURCE_ID,
    TYPE_ID,
)
from ..schema.registry import ContentTypeRegistry, resolve_locale

PAGE = 100
CURSOR_VERSION = 1
MAX_CURSOR = 1024
BAD_CURSOR = "is not a cursor from meta.next_cursor"
# Delta pages read events in batches; a page stops after this many even when few distinct
# entries turned up (has_more stays true, the cursor moves on).
EVENT_BATCH = 1000
MAX_EVENT_BATCHES = 20
_MAX_XID = 2**63 - 1

INITIAL = "initial"
DELTA = "delta"


class SyncCursor(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    mode: str  # initial | delta
    type: str
    locale: str
    txid: int  # the feed position: captured at the start (initial) or reached so far (delta)
    seq: int
    after: str | None = None  # initial mode: the last entry id sent

    @property
    def position(self) -> feed.Position:
        return feed.Position(self.txid, self.seq)


def encode_cursor(cursor: SyncCursor) -> str:
    return cursors.encode(cursor)


def decode_cursor(text: str) -> SyncCursor:
    cursor = cursors.decode(text, SyncCursor, max_length=MAX_CURSOR, detail=BAD_CURSOR)
    valid = (
        cursor.v == CURSOR_VERSION
        and TYPE_ID.fullmatch(cursor.type) is not None
        and LOCALE_CODE.fullmatch(cursor.locale) is not None and len(cursor.locale) <= 35
        and 0 <= cursor.txid <= _MAX_XID and 0 <= cursor.seq <= _MAX_XID
        and (
            (cursor.mode == INITIAL and (cursor.after is None or RESOURCE_ID.fullmatch(cursor.after) is not None))
            or (cursor.mode == DELTA and cursor.after is None)
        )
    )
    if not valid:
        raise malformed("cursor", BAD_CURSOR)
    return cursor


class SyncPage(NamedTuple):
    items: list[bytes]  # each {"op": "upsert", "entry": ENTRY} or {"op": "delete", "id", "type"}
    cursor: SyncCursor
    has_more: bool

    def body(self, limit: int) -> bytes:
        meta = {"limit": limit, "next_cursor": encode_cursor(self.cursor), "has_more": self.has_more}
        return render.list_envelope(self.items, meta)


def _upsert(body: bytes) -> bytes:
    # The stored ENTRY bytes, spliced in undecoded.
    return b'{"op":"upsert","entry":' + bytes(body) + b"}"


def _delete(entry_id: str, type_id: str) -> bytes:
    return render.encode({"op": "delete", "id": entry_id, "type": type_id})


async def sync_page(
    conn: asyncpg.Connection, type_id: str, locale: str, cursor: SyncCursor | None, limit: int = PAGE
) -> SyncPage:
    """One page. Run it inside one repeatable-read transaction so position and rows agree."""
    if cursor is None:
        start = await feed.head(conn)
        cursor = SyncCursor(v=CURSOR_VERSION, mode=INITIAL, type=type_id, locale=locale, txid=start.txid, seq=start.seq)
    elif cursor.position < (await feed.pruned(conn)).position:
        # Changes after the cursor were pruned with the outbox: deltas would silently miss them.
        raise gone("the cursor is older than the change history (CMS_OUTBOX_RETENTION_DAYS); start a new sync "
                   "without a cursor")
    if cursor.mode == INITIAL:
        return await _initial_page(conn, cursor, limit)
    return await _delta_page(conn, cursor, limit)


async def _initial_page(conn: asyncpg.Connection, cursor: SyncCursor, limit: int) -> SyncPage:
    rows = await documents.documents_after(conn, cursor.type, cursor.locale, cursor.after or "", limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [_upsert(r["body"]) for r in rows]
    if more:
        return SyncPage(items, msgspec.structs.replace(cursor, after=rows[-1]["entry_id"]), True)
    # Done: from here on, only what changed since the position captured at the start.
    return SyncPage(items, msgspec.structs.replace(cursor, mode=DELTA, after=None), False)


async def _delta_page(conn: asyncpg.Connection, cursor: SyncCursor, limit: int) -> SyncPage:
    position = cursor.position
    changed: dict[str, None] = {}  # distinct entry ids, in feed order
    full = False
    for _ in range(MAX_EVENT_BATCHES):
        changes = await feed.entry_changes(conn, position, EVENT_BATCH, cursor.type)
        for change in changes:
            if change.schema:
                # Every document of the type was re-rendered (a field or locale change). First send
                # what changed before it; then page through all of them again from its position,
                # and go on with deltas from there (so nothing deleted since is missed).
                if changed:
                    full = True
                    break
                repass = msgspec.structs.replace(
                    cursor, mode=INITIAL, after=None, txid=change.position.txid, seq=change.position.seq
                )
                return await _initial_page(conn, repass, limit)
            if change.entry_id is not None and change.entry_id not in changed:
                if len(changed) == limit:
                    full = True
                    break
                changed[change.entry_id] = None
            position = change.position
        if full or len(changes) < EVENT_BATCH:
            break
    else:
        full = True  # many events for few entries: stop here, the next page goes on
    if not full:
        # Read to the end: nothing of this type up to the head, so the cursor may move there (same
        # snapshot). A quiet type's cursor thus keeps up with the feed, and pruning other types'
        # old events never makes it look older than the kept history.
        position = max(position, await feed.head(conn))
    ids = list(changed)
    bodies: dict[str, bytes] = {}
    if ids:
        rows = await documents.documents_for(conn, ids, cursor.locale)
        bodies = {r["entry_id"]: r["body"] for r in rows if r["type"] == cursor.type}
    items = [_upsert(bodies[i]) if i in bodies else _delete(i, cursor.type) for i in ids]
    next_cursor = msgspec.structs.replace(cursor, txid=position.txid, seq=position.seq)
    return SyncPage(items, next_cursor, full)


async def resolve(
    registry: ContentTypeRegistry, credential: Credential, type_param: str | None, locale_param: str | None,
    raw_cursor: str | None,
) -> tuple[str, str, SyncCursor | None]:
    """(type, locale, cursor) of a sync request: from the cursor when there is one (`type` and
    `locale`, if given, must agree with it), else from the parameters; 400/403/404 otherwise."""
    cursor = decode_cursor(raw_cursor) if raw_cursor is not None else None
    if cursor is not None:
        if type_param is not None and type_param != cursor.type:
            raise malformed("cursor", f"was made for the type {cursor.type!r}, not {type_param!r}")
        if locale_param is not None and locale_param != cursor.locale:
            raise malformed("cursor", f"was made for the locale {cursor.locale!r}, not {locale_param!r}")
        type_id = cursor.type
    elif type_param is None:
        raise malformed("type", "is required (or a cursor)")
    elif not TYPE_ID.fullmatch(type_param):
        raise malformed("type", "is not a content type id")
    else:
        type_id = type_param
    credential.require_type(type_id)
    if await registry.get(type_id) is None:
        raise not_found("content type")
    locales = await registry.locales()
    if cursor is None:
        return type_id, resolve_locale(locales, locale_param), None
    if cursor.locale not in locales.rows:
        raise malformed("cursor", f"its locale {cursor.locale!r} no longer exists; start a new sync")
    return type_id, cursor.locale, cursor
