"""The `deliver` step: prerendered files on the object store, purges, then `entry.delivered`.

Every file is rendered by `app.content.delivery` (the functions the delivery API answers with), so
the files are byte-identical to the API:

    entries/{type}/{locale}/{id}.json            GET /api/v1/entries/{type}/{id}?locale=..&include=*
    entries/{type}/{locale}/by-slug/{slug}.json  GET /api/v1/entries/{type}/by-slug/{slug}?locale=..&include=*
    entries/{type}/{locale}/index.json           GET /api/v1/entries/{type}?locale=..&limit=100

Idempotent and version-safe: the step never renders the event's snapshot, it reads the entry's
*current* state under a per-entry advisory lock and makes the files match it (write, or delete
when the entry is no longer published). Redelivered, reordered or concurrent steps therefore
converge on the latest state, and a late step cannot resurrect files of a deleted entry. The
slug files are locked per (type, locale, slug) and always made to match what
`GET by-slug/{slug}` answers now, which also removes the file of a slug an entry gave up.
Index files are locked per type; their rewrite is skipped while another deliver step of the same
type is still pending (that one will write it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import dramatiq

from cms.app import render
from cms.app.config import Settings
from cms.app.content import delivery
from cms.app.content import repository as repo
from cms.app.content.query import parse_list_query
from cms.app.content.schemas import ContentType
from cms.app.content.service import load_locales, load_types
from cms.app.events.outbox import emit
from cms.storage.objects import AsyncObjectStore, ObjectStore, StoredObject
from cms.workers import pipeline

log = logging.getLogger("cms.workers.publish")

JSON = "application/json"
SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
SURROGATE_BUDGET = 1500  # bytes of surrogate keys kept in object metadata (S3 allows 2 KB in all)
LOCK_WAIT_SECONDS = 120.0


def entry_key(type_id: str, locale: str, entry_id: str) -> str:
    return f"entries/{type_id}/{locale}/{entry_id}.json"


def slug_key(type_id: str, locale: str, slug: str) -> str:
    return f"entries/{type_id}/{locale}/by-slug/{slug}.json"


def index_key(type_id: str, locale: str) -> str:
    return f"entries/{type_id}/{locale}/index.json"


def surrogate_keys(tags: tuple[str, ...] | list[str]) -> list[str]:
    """The body's tags, cut to fit object metadata: the first (the object's own) is always kept.

    Cut tags lose nothing: a change of an included entry re-renders this file (dependents) and
    purges it by its own tag and path.
    """
    kept: list[str] = []
    size = 0
    for tag in dict.fromkeys(tags):
        if kept and size + len(tag) + 1 > SURROGATE_BUDGET:
            break
        kept.append(tag)
        size += len(tag) + 1
    return kept


def _document(body: bytes) -> dict[str, Any] | None:
    try:
        decoded = render.decode(body)
    except Exception:
        return None
    data = decoded.get("data") if isinstance(decoded, dict) else None
    return data if isinstance(data, dict) else None


def slug_of(document: dict[str, Any] | None, ct: ContentType | None) -> str | None:
    """The slug delivery indexes a rendered entry under: its first slug field's value."""
    if document is None or ct is None:
        return None
    fields = document.get("fields") or {}
    for f in ct.fields:
        if f.type == "slug":
            value = fields.get(f.id)
            return value if isinstance(value, str) and SLUG.fullmatch(value) and len(value) <= 200 else None
    return None


@dataclass
class Changes:
    """What one run wrote and deleted (object keys) and which tags to purge."""

    written: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # only_changed: already right, not rewritten

    def changed_tags(self) -> list[str]:
        """Tags of the entry and index files written or deleted (republish purges only these)."""
        tags = []
        for key in self.keys:
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == "index.json":
                tags.append(f"type:{parts[1]}")
            elif len(parts) == 4 and parts[3].endswith(".json"):
                tags.append(f"entry:{parts[3][:-5]}")
        return list(dict.fromkeys(tags))

    @property
    def keys(self) -> list[str]:
        return list(dict.fromkeys([*self.written, *self.deleted]))


class Publisher:
    """Makes the object store match the published state in PostgreSQL."""

    def __init__(self, store: ObjectStore, settings: Settings, *, only_changed: bool = False) -> None:
        self.files = AsyncObjectStore(store)
        self.cache_control = settings.cache_control
        # republish: compare with the stored object first and skip identical writes (and purges)
        self.only_changed = only_changed

    # -- object operations ------------------------------------------------------------------

    async def _put(self, key: str, body: delivery.Body, version: int | None, changes: Changes,
                   stored: StoredObject | None = None, known: bool = False) -> bool:
        keys = surrogate_keys(body.tags)
        if self.only_changed:
            if not known:
                stored = await self.files.get(key)
            if (
                stored is not None and stored.body == body.body and stored.version == version
                and stored.content_type == JSON and stored.cache_control == self.cache_control
                and stored.surrogate_keys == keys
            ):
                changes.kept.append(key)
                return True
        written = await self.files.put(
            key, body.body, content_type=JSON, cache_control=self.cache_control, surrogate_keys=keys,
            version=version,
        )
        if written:
            changes.written.append(key)
        return written

    async def _delete(self, key: str, changes: Changes, *, exists: bool | None = None) -> None:
        if exists is False:
            return
        if self.only_changed and exists is None and await self.files.get(key) is None:
            return
        await self.files.delete(key)
        changes.deleted.append(key)

    # -- entries ----------------------------------------------------------------------------

    async def sync_entry(
        self, conn: asyncpg.Connection, types: dict[str, ContentType], locales: list[str], entry_id: str,
        type_id: str, changes: Changes,
    ) -> None:
        """Make `entry_id`'s files (every locale) and the slug files they touch match the database."""
        ct = types.get(type_id)
        async with conn.transaction():
            await pipeline.lock_timeouts(conn, LOCK_WAIT_SECONDS)
            await pipeline.xact_locks(conn, "entry", [entry_id])
            plan = []
            for locale in locales:
                body = None
                if ct is not None:
                    body = await delivery.published_entry(
                        conn, types, ct, locale, entry_id=entry_id, include=["*"], depth=1
                    )
                document = _document(body.body) if body is not None else None
                key = entry_key(type_id, locale, entry_id)
                stored = await self.files.get(key)
                old_slug = slug_of(_document(stored.body), ct) if stored is not None else None
                plan.append((locale, key, body, document, stored, old_slug, slug_of(document, ct)))
            slugs = {(locale, s) for locale, *_, old, new in plan for s in (old, new) if s}
            await pipeline.xact_locks(conn, "slug", [f"{type_id}/{loc}/{s}" for loc, s in slugs])
            synced: set[tuple[str, str]] = set()
            for locale, key, body, document, stored, old_slug, new_slug in plan:
                # Slug files first, the entry file last: if we crash in between, the retry still
                # finds the old slug in the old entry file.
                for slug in (old_slug, new_slug):
                    if slug and (locale, slug) not in synced:
                        synced.add((locale, slug))
                        assert ct is not None
                        await self.sync_slug(conn, types, ct, locale, slug, changes)
                if body is not None and document is not None:
                    if not await self._put(key, body, document.get("version"), changes, stored, known=True):
                        log.warning("%s: a newer version is already stored; left as is", key)
                else:
                    await self._delete(key, changes, exists=stored is not None)

    async def sync_slug(
        self, conn: asyncpg.Connection, types: dict[str, ContentType], ct: ContentType, locale: str, slug: str,
        changes: Changes,
    ) -> None:
        """Make by-slug/{slug}.json what `GET by-slug/{slug}` answers now (caller holds the slug lock)."""
        key = slug_key(ct.id, locale, slug)
        body = await delivery.published_entry(conn, types, ct, locale, slug=slug, include=["*"], depth=1)
        document = _document(body.body) if body is not None else None
        if body is None or document is None:
            await self._delete(key, changes)
            return
        version = document.get("version")
        if await self._put(key, body, version, changes):
            return
        # Refused as older: fine if it is a newer copy of the same entry; if the slug now belongs
        # to another entry (whose versions are unrelated), replace it.
        stored = await self.files.get(key)
        owner = (_document(stored.body) or {}).get("id") if stored is not None else None
        if owner != document.get("id"):
            await self.files.delete(key)
            await self._put(key, body, version, changes)

    # -- indexes ----------------------------------------------------------------------------

    async def write_indexes(
        self, conn: asyncpg.Connection, types: dict[str, ContentType], locales: list[str], type_id: str,
        changes: Changes,
    ) -> None:
        ct = types.get(type_id)
        async with conn.transaction():
            await pipeline.lock_timeouts(conn, LOCK_WAIT_SECONDS)
            await pipeline.xact_locks(conn, "index", [type_id])
            for locale in locales:
                key = index_key(type_id, locale)
                if ct is None:
                    await self._delete(key, changes)
                    continue
                query = parse_list_query({"limit": "100"}, ct, types, locale=locale, default_sort="-published_at")
                body = await delivery.published_list(conn, types, ct, query)
                await self._put(key, body, None, changes)
        changes.tags.append(f"type:{type_id}")

    # -- the step ---------------------------------------------------------------------------

    async def deliver(self, conn: asyncpg.Connection, event: pipeline.Event, changes: Changes) -> None:
        """Files of the event's entry, of the entries that include it, and its type's index."""
        entry_id, type_id = event.payload["id"], event.payload["type"]
        types = await load_types(conn)
        locales = await load_locales(conn)
        codes = list(dict.fromkeys([*locales.codes, *(event.payload.get("locales") or [])]))
        await self.sync_entry(conn, types, codes, entry_id, type_id, changes)
        changes.tags += [f"entry:{entry_id}", f"type:{type_id}"]
        for dependent in await repo.dependents_of(conn, entry_id):
            if dependent["id"] == entry_id:
                continue
            await self.sync_entry(conn, types, locales.codes, dependent["id"], dependent["type"], changes)
            changes.tags.append(f"entry:{dependent['id']}")
        if await pipeline.other_step_pending(conn, pipeline.DELIVER, event.id, type_id):
            log.debug("index of %s left to a later step (%s)", type_id, event.id)
        else:
            await self.write_indexes(conn, types, locales.codes, type_id, changes)


@dataclass
class Republished:
    entries: int = 0
    changes: Changes = field(default_factory=Changes)


async def republish_all(
    pool: Any, publisher: Publisher, progress: Callable[[int, int], None] | None = None,
    only_type: str | None = None,
) -> Republished:
    """Re-render every published entry's files and every index (of one type, or all), and remove
    files nothing owns."""
    result = Republished()
    changes = result.changes
    async with pool.acquire() as conn:
        types = await load_types(conn)
        locales = await load_locales(conn)
        rows = await conn.fetch(
            # The type's entries, and entries of any type whose files include one of them.
            "SELECT id, type FROM entries WHERE published_version IS NOT NULL AND ($1::text IS NULL OR type = $1 "
            "OR id IN (SELECT r.source_id FROM entry_references r JOIN entries t ON t.id = r.target_id "
            "WHERE t.type = $1)) ORDER BY type, id",
            only_type,
        )
        # Render with every type (includes cross types); write indexes only for the ones asked for.
        index_types = [t for t in types if only_type is None or t == only_type]
        total = len(rows) + len(index_types) + 1
        done = 0
        for row in rows:
            await publisher.sync_entry(conn, types, locales.codes, row["id"], row["type"], changes)
            done += 1
            if progress:
                progress(done, total)
        for type_id in index_types:
            await publisher.write_indexes(conn, types, locales.codes, type_id, changes)
            done += 1
            if progress:
                progress(done, total)
        # Whatever is left under entries/ belongs to nothing published (or to a locale or type
        # that is gone): let the same rules decide.
        touched = {*changes.written, *changes.kept}
        touched |= {entry_key(r["type"], c, r["id"]) for r in rows for c in locales.codes}
        touched |= {index_key(t, c) for t in index_types for c in locales.codes}
        for key in await publisher.files.list(f"entries/{only_type}/" if only_type else "entries/"):
            if key in touched:
                continue
            parts = key.split("/")
            if len(parts) == 5 and parts[3] == "by-slug" and parts[4].endswith(".json") and parts[1] in types:
                async with conn.transaction():
                    await pipeline.xact_locks(conn, "slug", [f"{parts[1]}/{parts[2]}/{parts[4][:-5]}"])
                    await publisher.sync_slug(conn, types, types[parts[1]], parts[2], parts[4][:-5], changes)
            elif len(parts) == 4 and parts[3].endswith(".json") and parts[3] != "index.json":
                await publisher.sync_entry(conn, types, [parts[2]], parts[3][:-5], parts[1], changes)
            else:
                await publisher._delete(key, changes, exists=True)
        done += 1
        if progress:
            progress(done, total)
    result.entries = len(rows)
    changes.tags = changes.changed_tags()
    return result


# ---------------------------------------------------------------------------------------------
# the actor (thin: claim, run the service, record the outcome)


async def deliver_step(runtime: Any, event_id: str) -> str:
    """Run the deliver step of `event_id` with `runtime` (see workers.broker.WorkerRuntime)."""
    config: pipeline.PipelineConfig = runtime.config
    if runtime.pool is None:
        raise RuntimeError("the worker runtime is not open (no database pool)")

    async def work(claim: pipeline.Claim) -> Any:
        event = claim.event
        if not isinstance(event.payload, dict):
            return None
        if event.type in pipeline.SCHEMA_EVENTS:
            # A field or locale change altered every document of the type (or of all types).
            only = event.payload.get("id") if event.type == "content_type.saved" else None
            republished = await republish_all(runtime.pool, runtime.publisher, only_type=only)
            await runtime.purge.send(republished.changes.tags, republished.changes.keys, reference=event.id)
            return None
        if event.type not in pipeline.ENTRY_EVENTS:
            return None
        changes = Changes()
        async with runtime.pool.acquire() as conn:
            await runtime.publisher.deliver(conn, event, changes)
        await runtime.purge.send(changes.tags, changes.keys, reference=event.id)

        async def delivered(conn: asyncpg.Connection) -> None:
            # In the transaction that completes the step: exactly once, after files and purges.
            await emit(conn, "entry.delivered", {**event.payload, "source_event": event.id})

        return delivered

    outcome = await pipeline.execute(runtime.pool, event_id, pipeline.DELIVER, config, work)
    log.debug("deliver %s: %s", event_id, outcome)
    return outcome


def register(broker: dramatiq.Broker, runtime: Any) -> dramatiq.Actor[Any, Any]:
    """Declare the `deliver` actor on `broker`, bound to `runtime`."""

    async def deliver(event_id: str) -> None:
        await deliver_step(runtime, event_id)

    declare = dramatiq.actor(
        broker=broker,
        actor_name="cms.deliver",
        queue_name="cms_deliver",
        max_retries=0,  # PostgreSQL does the retrying (outbox_steps), not the broker
        min_backoff=1000,
        time_limit=int(runtime.config.time_limit_seconds * 1000),
    )
    return declare(deliver)
