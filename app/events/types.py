"""Every event the outbox carries, in one registry: its name, the scope a credential needs to see
it (events feed, webhooks), and where its payload names the content type it belongs to (so a
credential limited to some types sees only theirs)."""

from __future__ import annotations

from typing import NamedTuple

ENTRY_CREATED = "entry.created"
ENTRY_UPDATED = "entry.updated"
ENTRY_PUBLISHED = "entry.published"
ENTRY_UNPUBLISHED = "entry.unpublished"
ENTRY_DELETED = "entry.deleted"
ENTRY_DELIVERED = "entry.delivered"  # after the prerendered files are written and the CDN purged
RELEASE_PUBLISHED = "release.published"
CONTENT_TYPE_SAVED = "content_type.saved"
CONTENT_TYPE_DELETED = "content_type.deleted"
LOCALE_SAVED = "locale.saved"
LOCALE_DELETED = "locale.deleted"
ASSET_CREATED = "asset.created"
ASSET_DELETED = "asset.deleted"


class EventType(NamedTuple):
    name: str
    scope: str  # a management credential needs this scope to see the event
    type_key: str | None  # the payload key holding its content type id; None: it belongs to no type


EVENT_TYPES: dict[str, EventType] = {
    event.name: event
    for event in (
        *(EventType(name, "content:read", "type") for name in (
            ENTRY_CREATED, ENTRY_UPDATED, ENTRY_PUBLISHED, ENTRY_UNPUBLISHED, ENTRY_DELETED, ENTRY_DELIVERED,
        )),
        EventType(RELEASE_PUBLISHED, "content:read", None),
        EventType(CONTENT_TYPE_SAVED, "content:read", "id"),
        EventType(CONTENT_TYPE_DELETED, "content:read", "id"),
        EventType(LOCALE_SAVED, "content:read", None),
        EventType(LOCALE_DELETED, "content:read", None),
        EventType(ASSET_CREATED, "content:read", None),
        EventType(ASSET_DELETED, "content:read", None),
    )
}

# Changes to what delivery serves for one entry: its files are rewritten (or removed).
ENTRY_CHANGES = (ENTRY_PUBLISHED, ENTRY_UNPUBLISHED, ENTRY_DELETED)
# Changes that re-render every document of a type (content types) or of all types (locales).
SCHEMA_CHANGES = (CONTENT_TYPE_SAVED, CONTENT_TYPE_DELETED, LOCALE_SAVED, LOCALE_DELETED)
TYPE_SCHEMA_CHANGES = (CONTENT_TYPE_SAVED, CONTENT_TYPE_DELETED)  # scoped to one type (payload "id")
LOCALE_CHANGES = (LOCALE_SAVED, LOCALE_DELETED)
