"""Prerendered files: make the object store match the published state in PostgreSQL.

The worker's `deliver` step (workers/actors/deliver.py) and `cms republish` call this. Every file is
rendered by `delivery/documents.py` (the functions the delivery API answers with), so the files are
byte-identical to the API:

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import asyncpg

from cms.storage.objects import AsyncObjectStore, ObjectStore, StoredObject, version_of

from .. import render
from ..config import Settings
from ..db import locks
from ..delivery import documents as delivery
from ..query.parse import parse_list_query
from ..schema.model import (
    ContentType,
    is_reserved_id,
)
from ..schema.registry import load_locales, load_types
from . import repository as repo
from .documents import record_link_places

log = logging.getLogger("cms.publishing")

JSON = "application/json"
SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
SURROGATE_BUDGET = 1500  # bytes of surrogate keys kept in object metadata (S3 allows 2 KB in all)
LOCK_WAIT_SECONDS = 120.0
REPUBLISH_BATCH = 100  # entries rendered and written per transaction by republish
# An entry file's metadata names the slug it is indexed under ("-": none), so the next write of the
# entry learns its old slug from the metadata alone (a getxattr, an S3 HEAD) instead of reading
# and decoding the old body; files written before this have no such metadata and are read.
SLUG_META = "cms-slug"
NO_SLUG = "-"


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


@dataclass(frozen=True)
class _EntryFile:
    """One entry file to bring in line: its key, the body to store (None: remove), what is stored."""

    entry_id: str
    type_id: str
    locale: str
    key: str
    body: delivery.Body | None
    version: int | None
    stored: StoredObject | None  # read only by republish (only_changed)
    exists: bool
    old_slug: str | None
    new_slug: str | None


class Publisher:
    """Makes the object store match the published state in PostgreSQL."""

    def __init__(self, store: ObjectStore, settings: Settings, *, only_changed: bool = False) -> None:
        self.store = store
        self.files = AsyncObjectStore(store)
        self.cache_control = settings.cache_control
        self.assets_url = settings.assets_url
        self.include_limit = delivery.IncludeLimit.of(settings)
        # republish: compare with the stored object first and skip identical writes (and purges)
        self.only_changed = only_changed

    # -- object operations (synchronous: they run in the object store's threads) ----------------

    def _already(self, stored: StoredObject | None, body: delivery.Body, version: int | None, keys: list[str]) -> bool:
        return (
            stored is not None and stored.body == body.body and stored.version == version
            and stored.content_type == JSON and stored.cache_control == self.cache_control
            and stored.surrogate_keys == keys
        )

    def _put_now(self, key: str, body: delivery.Body, version: int | None, stored: StoredObject | None = None,
                 known: bool = False) -> str:
        """"written", "kept" (only_changed: already right) or "refused" (a newer version is stored)."""
        return self._put_copies_now([key], body, version, stored, known)[0]

    def _put_copies_now(self, keys: list[str], body: delivery.Body, version: int | None,
                        last_stored: StoredObject | None = None, known: bool = False,
                        slug_meta: str | None = None) -> list[str]:
        """`_put_now` of one body at every key (an entry's by-slug files, then its own file, whose
        stored object the caller may have read: `last_stored`, `known`; `slug_meta`: an entry's
        SLUG_META), stored once where the store can (hard links)."""
        tags = surrogate_keys(body.tags)
        outcomes: list[str | None] = [None] * len(keys)
        if self.only_changed:
            for i, key in enumerate(keys):
                stored = last_stored if known and i == len(keys) - 1 else self.store.get(key)
                # (an entry file written before it named its slug gets the metadata now)
                if self._already(stored, body, version, tags) and (
                    slug_meta is None or stored is not None and stored.metadata.get(SLUG_META) == slug_meta
                ):
                    outcomes[i] = "kept"
        todo = [key for key, outcome in zip(keys, outcomes, strict=True) if outcome is None]
        written = iter(self.store.put_copies(
            todo, body.body, content_type=JSON, cache_control=self.cache_control, surrogate_keys=tags, version=version,
            metadata={SLUG_META: slug_meta} if slug_meta is not None else None,
        ) if todo else [])
        return [outcome or ("written" if next(written) else "refused") for outcome in outcomes]

    def _stored_now(self, key: str, ct: ContentType | None) -> tuple[bool, str | None, int | None]:
        """(is there a file at key, the slug it is indexed under, its version): from its metadata,
        or for a file written before the metadata named the slug, from its body."""
        meta = self.store.head(key)
        if meta is None:
            return False, None, None
        version = version_of(meta)
        if (slug := meta.get(SLUG_META)) is not None:
            return True, None if slug == NO_SLUG else slug, version
        stored = self.store.get(key)
        return stored is not None, slug_of(_document(stored.body), ct) if stored is not None else None, version

    def _delete_now(self, key: str, exists: bool | None = None) -> bool:
        if exists is False:
            return False
        if self.only_changed and exists is None and self.store.get(key) is None:
            return False
        self.store.delete(key)
        return True

    @staticmethod
    def _record(changes: Changes, key: str, outcome: str | bool) -> None:
        if outcome == "written":
            changes.written.append(key)
        elif outcome == "kept":
            changes.kept.append(key)
        elif outcome is True:
            changes.deleted.append(key)

    async def _delete(self, key: str, changes: Changes, *, exists: bool | None = None) -> None:
        self._record(changes, key, await self.files.call(self._delete_now, key, exists))

    # -- entries ----------------------------------------------------------------------------

    async def _rendered(
        self, conn: asyncpg.Connection, types: dict[str, ContentType], locale: str, ids: list[str]
    ) -> dict[str, delivery.Body]:
        """What `GET …/{id}?locale=…&include=*` answers for each published entry of ids; an entry whose
        includes go past the include limit (a 400 there) is stored without them."""
        return await delivery.published_entries(
            conn, types, locale, ids, include=["*"], depth=1, limit=self.include_limit, too_large="links",
        )

    async def sync_entry(
        self, conn: asyncpg.Connection, types: dict[str, ContentType], locales: list[str], entry_id: str,
        type_id: str, changes: Changes,
    ) -> None:
        """Make `entry_id`'s files (every locale) and the slug files they touch match the database."""
        await self.sync_entries(conn, types, locales, [(entry_id, type_id)], changes)

    async def sync_entries(
        self, conn: asyncpg.Connection, types: dict[str, ContentType], locales: list[str],
        entries: list[tuple[str, str]], changes: Changes, *, current_until: int | None = None,
    ) -> None:
        """`sync_entry` for many (entry id, type id) at once, with a constant number of queries.
        current_until: an entry file that already carries its document's render number (and slug),
        a number at most this one, is left as it is: a schema change's re-render of documents it
        did not change (the includes of such a file are kept right by their own changes; a file the
        change wrote itself, numbered above it, is written and purged again)."""
        entries = list(dict.fromkeys(entries))
        if not entries:
            return
        ids = [entry_id for entry_id, _ in entries]
        async with conn.transaction():
            await locks.lock_timeouts(conn, LOCK_WAIT_SECONDS)
            await locks.xact_locks(conn, "entry", ids)
            rendered: dict[tuple[str, str], delivery.Body] = {}
            for locale in locales:
                bodies = await self._rendered(conn, types, locale, ids)
                rendered.update(((locale, entry_id), body) for entry_id, body in bodies.items())
            # An entry id that names a file of the type (`index`, from before such ids were refused)
            # has no entry file: it must never replace or remove the type's index.
            keys = [
                (entry_id, type_id, locale) for entry_id, type_id in entries for locale in locales
                if not is_reserved_id(entry_id)
            ]
            # What is stored now: republish (only_changed) compares whole objects; otherwise only the
            # old slug is needed, from the metadata.
            stored_objects: list[StoredObject | None] = [None] * len(keys)
            if self.only_changed:
                stored_objects = await self.files.run_all(
                    [partial(self.store.get, entry_key(type_id, locale, entry_id)) for entry_id, type_id, locale in keys]
                )
                olds = [(s is not None, slug_of(_document(s.body), types.get(type_id)) if s is not None else None,
                         s.version if s is not None else None)
                        for s, (_, type_id, _) in zip(stored_objects, keys, strict=True)]
            else:
                olds = await self.files.run_all([
                    partial(self._stored_now, entry_key(type_id, locale, entry_id), types.get(type_id))
                    for entry_id, type_id, locale in keys
                ])
            plan: list[_EntryFile] = []
            for (entry_id, type_id, locale), stored, (exists, old_slug, old_version) in zip(
                keys, stored_objects, olds, strict=True,
            ):
                ct = types.get(type_id)
                body = rendered.get((locale, entry_id)) if ct is not None else None
                document = _document(body.body) if body is not None else None
                if document is None or document.get("type") != type_id:
                    body = document = None
                f = _EntryFile(
                    entry_id, type_id, locale, entry_key(type_id, locale, entry_id), body,
                    body.version if body is not None else None, stored, exists, old_slug, slug_of(document, ct),
                )
                if (current_until is not None and f.body is not None and f.version is not None
                        and old_version == f.version <= current_until and f.old_slug == f.new_slug):
                    changes.kept.append(f.key)
                    continue
                plan.append(f)
            slugs = list(dict.fromkeys(
                (f.type_id, f.locale, slug) for f in plan for slug in (f.old_slug, f.new_slug) if slug
            ))
            await locks.xact_locks(conn, "slug", [f"{t}/{loc}/{slug}" for t, loc, slug in slugs])
            # Slug files first, entry files last: if we crash in between, the retry still finds
            # the old slug in the old entry file. Slugs that no entry written here answers are
            # written (or deleted) first; the slug files of an entry written here go with its file
            # (the same bytes, stored once), just before it: the order holds per entry, and the
            # retry of the same step renders the same entries again.
            writing = {(f.locale, f.entry_id) for f in plan if f.body is not None}
            along = await self._sync_slugs(conn, types, slugs, rendered, changes, writing)
            outcomes = await self.files.run_all([
                partial(self._put_copies_now, [*(key for key, _ in along.get((f.locale, f.entry_id), [])), f.key],
                        f.body, f.version, f.stored, True, f.new_slug or NO_SLUG) if f.body is not None
                else partial(self._delete_now, f.key, f.exists)
                for f in plan
            ])
            for f, outcome in zip(plan, outcomes, strict=True):
                if f.body is None:
                    self._record(changes, f.key, outcome)
                    continue
                slug_files = along.get((f.locale, f.entry_id), [])
                for (key, document), slug_outcome in zip(slug_files, outcome[:-1], strict=True):
                    await self._slug_written(key, f.body, document, slug_outcome, changes)
                if outcome[-1] == "refused":
                    log.warning("%s: a newer version is already stored; left as is", f.key)
                self._record(changes, f.key, outcome[-1])

    async def sync_slug(
        self, conn: asyncpg.Connection, types: dict[str, ContentType], ct: ContentType, locale: str, slug: str,
        changes: Changes,
    ) -> None:
        """Make by-slug/{slug}.json what `GET by-slug/{slug}` answers now (caller holds the slug lock)."""
        await self._sync_slugs(conn, types, [(ct.id, locale, slug)], {}, changes)

    async def _sync_slugs(
        self, conn: asyncpg.Connection, types: dict[str, ContentType], slugs: list[tuple[str, str, str]],
        rendered: dict[tuple[str, str], delivery.Body], changes: Changes,
        writing: set[tuple[str, str]] | None = None,
    ) -> dict[tuple[str, str], list[tuple[str, dict[str, Any]]]]:
        """Make each by-slug file what `GET by-slug/{slug}` answers now (the caller holds the slug locks).

        The by-slug answer is the by-id answer of the slug's owner, so bodies rendered for the
        entries themselves are reused; the owners not among them are rendered in one batch. The
        slug files of owners in `writing` ((locale, entry id) whose entry file the caller writes
        next) are not written here but returned, by owner: (key, document), to go with that file.
        """
        slugs = [s for s in slugs if s[0] in types]
        along: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
        if not slugs:
            return along
        owners = await repo.slug_owners(conn, slugs)
        missing: dict[str, list[str]] = {}
        for (_, locale, _), owner in owners.items():
            if (locale, owner) not in rendered:
                missing.setdefault(locale, []).append(owner)
        for locale, owner_ids in missing.items():
            bodies = await self._rendered(conn, types, locale, owner_ids)
            rendered = {**rendered, **{(locale, i): b for i, b in bodies.items()}}
        work: list[tuple[str, delivery.Body | None, dict[str, Any] | None]] = []
        for type_id, locale, slug in slugs:
            slug_owner = owners.get((type_id, locale, slug))
            body = rendered.get((locale, slug_owner)) if slug_owner is not None else None
            document = _document(body.body) if body is not None else None
            if document is not None and writing is not None and (locale, slug_owner) in writing:
                along.setdefault((locale, str(slug_owner)), []).append((slug_key(type_id, locale, slug), document))
                continue
            work.append((slug_key(type_id, locale, slug), body if document is not None else None, document))
        outcomes = await self.files.run_all([
            partial(self._put_now, key, body, body.version) if body is not None
            else partial(self._delete_now, key)
            for key, body, document in work
        ])
        for (key, body, document), outcome in zip(work, outcomes, strict=True):
            if body is not None and document is not None:
                await self._slug_written(key, body, document, outcome, changes)
            else:
                self._record(changes, key, outcome)
        return along

    async def _slug_written(
        self, key: str, body: delivery.Body, document: dict[str, Any], outcome: str, changes: Changes,
    ) -> None:
        if outcome == "refused":
            # Refused as older: fine if it is a newer copy of the same entry; if the slug now
            # belongs to another entry (whose versions are unrelated), replace it.
            stored = await self.files.get(key)
            if stored is not None and (_document(stored.body) or {}).get("id") != document.get("id"):
                await self.files.delete(key)
                outcome = await self.files.call(self._put_now, key, body, body.version)
        self._record(changes, key, outcome)

    # -- indexes ----------------------------------------------------------------------------

    async def write_indexes(
        self, conn: asyncpg.Connection, types: dict[str, ContentType], locales: list[str], type_id: str,
        changes: Changes,
    ) -> None:
        ct = types.get(type_id)
        async with conn.transaction():
            await locks.lock_timeouts(conn, LOCK_WAIT_SECONDS)
            await locks.xact_locks(conn, "index", [type_id])
            calls: list[Callable[[], str | bool]] = []
            for locale in locales:
                key = index_key(type_id, locale)
                if ct is None:
                    calls.append(partial(self._delete_now, key))
                    continue
                query = parse_list_query({"limit": "100"}, ct, types, locale=locale, default_sort="-published_at")
                body = await delivery.published_list(conn, types, ct, query, self.include_limit)
                calls.append(partial(self._put_now, key, body, None))
            for locale, outcome in zip(locales, await self.files.run_all(calls), strict=True):
                self._record(changes, index_key(type_id, locale), outcome)
        changes.tags.append(f"type:{type_id}")

    # -- what changed -----------------------------------------------------------------------

    async def deliver(
        self, conn: asyncpg.Connection, payloads: list[dict[str, Any]], changes: Changes,
        index_left_to_later: Callable[[str], Awaitable[bool]],
    ) -> None:
        """Files of the changed entries (entry event payloads: id, type, locales), of the entries that
        include them, and their types' indexes, unless `index_left_to_later(type)` says a later step
        will write that index anyway."""
        targets = list(dict.fromkeys((p["id"], p["type"]) for p in payloads))
        types = await load_types(conn)
        locales = await load_locales(conn)
        # Locales named by the events too: a deleted locale's files are removed with the entry's.
        codes = list(dict.fromkeys([*locales.codes, *(c for p in payloads for c in p.get("locales") or [])]))
        target_ids = {entry_id for entry_id, _ in targets}
        dependents = [
            (d["id"], d["type"]) for d in await repo.dependents_of(conn, sorted(target_ids)) if d["id"] not in target_ids
        ]
        # The indexes are written even when an entry's files fail: another step may have left its
        # index to this one, and must not stay out of the index because this step's own entry
        # cannot be written (a step that keeps failing would otherwise leave the index stale).
        failure: Exception | None = None
        try:
            await self.sync_entries(conn, types, codes, [*targets, *dependents], changes)
        except Exception as exc:
            failure = exc
        changes.tags += [f"entry:{entry_id}" for entry_id, _ in [*targets, *dependents]]
        changes.tags += [f"type:{type_id}" for type_id in dict.fromkeys(t for _, t in targets)]
        for type_id in dict.fromkeys(t for _, t in targets):
            if await index_left_to_later(type_id):
                log.debug("index of %s left to a later step", type_id)
            else:
                await self.write_indexes(conn, types, locales.codes, type_id, changes)
        if failure is not None:
            raise failure


@dataclass
class Republished:
    entries: int = 0
    links: int = 0  # documents stored before migration 0020 that got their links' places
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
        result.links = await record_link_places(conn, types, only_type)
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
        for start in range(0, len(rows), REPUBLISH_BATCH):
            batch = rows[start : start + REPUBLISH_BATCH]
            await publisher.sync_entries(conn, types, locales.codes, [(r["id"], r["type"]) for r in batch], changes)
            done += len(batch)
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
                    await locks.xact_locks(conn, "slug", [f"{parts[1]}/{parts[2]}/{parts[4][:-5]}"])
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
