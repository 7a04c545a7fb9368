"""Every event the outbox carries, in one registry: its name, the scope a credential needs to see
it (events feed, webhooks), and where its payload names the content type it belongs to (so a
credential limited to some types sees only theirs)."""

from __future__ import annotations

from typing import Any, NamedTuple

ENTRY_CREATED = "entry.created"
ENTRY_UPDATED = "entry.updated"
ENTRY_PUBLISHED = "entry.published"
ENTRY_UNPUBLISHED = "entry.unpublished"
ENTRY_DELETED = "entry.deleted"
ENTRY_DELIVERED = "entry.delivered"  # after the prerendered files are written and the CDN purged
RELEASE_PUBLISHED = "release.published"
CONTENT_TYPE_SAVED = "content_type.saved"
CONTENT_TYPE_DELETED = "content_type.deleted"
# a change's background work done: every entry, document and file of the type in the new shape
CONTENT_TYPE_RERENDERED = "content_type.rerendered"
LOCALE_SAVED = "locale.saved"
LOCALE_DELETED = "locale.deleted"
ASSET_CREATED = "asset.created"
ASSET_DELETED = "asset.deleted"


class EventType(NamedTuple):
    name: str
    scope: str  # a management credential needs this scope to see the event
    type_key: str | None  # the payload key holding its content type id; None: it belongs to no type
    members_key: str | None = None  # or: the payload key of a list of {"type", "id"} it is about


EVENT_TYPES: dict[str, EventType] = {
    event.name: event
    for event in (
        *(EventType(name, "content:read", "type") for name in (
            ENTRY_CREATED, ENTRY_UPDATED, ENTRY_PUBLISHED, ENTRY_UNPUBLISHED, ENTRY_DELETED, ENTRY_DELIVERED,
        )),
        EventType(RELEASE_PUBLISHED, "content:read", None, members_key="entries"),
        EventType(CONTENT_TYPE_SAVED, "content:read", "id"),
        EventType(CONTENT_TYPE_DELETED, "content:read", "id"),
        EventType(CONTENT_TYPE_RERENDERED, "content:read", "id"),
        EventType(LOCALE_SAVED, "content:read", None),
        EventType(LOCALE_DELETED, "content:read", None),
        EventType(ASSET_CREATED, "content:read", None),
        EventType(ASSET_DELETED, "content:read", None),
    )
}

def content_types_of(event_type: str, payload: dict[str, Any]) -> set[str] | None:
    """The content types an event is about (None: none, e.g. a locale change). A credential or a
    webhook limited to some types sees the event only if it holds all of them (a release is about
    the types of all its entries). The events feed's SQL says the same (events/feed.py)."""
    known = EVENT_TYPES.get(event_type)
    if known is None:
        return None
    if known.type_key is not None:
        value = payload.get(known.type_key)
        return {value} if isinstance(value, str) else None
    if known.members_key is not None:
        members = payload.get(known.members_key)
        if isinstance(members, list):
            return {str(m["type"]) for m in members if isinstance(m, dict) and isinstance(m.get("type"), str)}
    return None


# Changes to what delivery serves for one entry: its files are rewritten (or removed).
ENTRY_CHANGES = (ENTRY_PUBLISHED, ENTRY_UNPUBLISHED, ENTRY_DELETED)
# Changes that re-render every document of a type (content types) or of all types (locales).
SCHEMA_CHANGES = (CONTENT_TYPE_SAVED, CONTENT_TYPE_DELETED, LOCALE_SAVED, LOCALE_DELETED)
TYPE_SCHEMA_CHANGES = (CONTENT_TYPE_SAVED, CONTENT_TYPE_DELETED)  # scoped to one type (payload "id")
LOCALE_CHANGES = (LOCALE_SAVED, LOCALE_DELETED)
