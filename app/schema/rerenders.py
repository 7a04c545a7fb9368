"""Online schema changes: what a content type or locale change does to existing entries, documents
and files, in resumable batches after the change has committed.

A change commits the new schema in its request (O(1) of the entry count: app/schema/content_types.py)
and (re)starts the type's row in `schema_rerenders`. Workers then run it a batch at a time
(`run_batch`: batch after batch on one worker's step loop, `LocalSteps.try_rerender`, else
the `cms.rerender` actor's messages): each batch takes a lease, brings the next `batch` entries
of the type (in id order after the cursor) to the current schema's shape (`rules.conform`),
re-renders their published documents, rewrites their files, purges, and moves the cursor. Then the
entries of other types whose files include the type's entries get their files rewritten, then the
indexes of `indexed` fields are built (CREATE INDEX CONCURRENTLY), the index files written, what
removed fields and deleted locales left dropped, and `content_type.rerendered` recorded. Every step
is idempotent: a batch that dies (kill -9) is run again when its lease runs out; a batch that started
before a further change of the type cannot move that change's cursor (generation fence).

Until its batch has run, an entry keeps its previous shape in delivery (documents and files);
every write to it conforms it first, so an editor never meets the previous shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg

from .. import render
from ..db import locks
from ..entries import rules
from ..events import types as events
from ..events.outbox import emit, invalidate
from ..publishing import repository as documents_repo
from ..publishing.documents import assets_by_id, published_rows
from ..publishing.files import Changes, Publisher
from ..query.indexes import ensure_indexes
from ..times import iso
from . import repository as repo
from .model import ContentType, Locales
from .registry import load_locales, load_types

log = logging.getLogger("cms.rerenders")

INLINE_ENTRIES = 500  # Settings.schema_inline_entries
BATCH = 500  # entries per batch: well inside a step's time limit (about 0.5 s of work)
# A batch's entries go in this many parts at once, each with its own pool connection: while one
# part waits for PostgreSQL (its documents stored, its bodies read back) another renders or writes
# files (local files are written on the event loop; a network store's on threads). 4: at 1M, 790
# entries/s with 2 parts, 888 with 4 (bench/README.md); a batch holds up to 4 of the worker pool's
# connections at a time.
PARTS = 4
STALE, GONE = "stale", "gone"  # (a part's outcome besides DONE)
Purge = Callable[[Iterable[str], Iterable[str], str], Awaitable[None]]

ENTRIES, DEPENDENTS, FINISH, DONE = "entries", "dependents", "finish", "done"


async def render_entries(
    conn: asyncpg.Connection, ct: ContentType, locales: Locales, rows: list[Any], assets_url: str,
) -> list[str]:
    """Inside a transaction holding the rows: conform every row to the schema, re-render the
    published ones' documents (a constant number of queries); returns the ids of the published
    entries whose documents changed (only their files need writing)."""
    updates = []
    published = []
    for row in rows:
        data, pub = rules.conform(ct, locales, row["data"]), rules.conform(ct, locales, row["published_data"])
        if data != row["data"] or pub != row["published_data"]:
            updates.append((row["id"], data, pub))
        if row["published_version"] is not None:
            published.append({**dict(row), "data": data, "published_data": pub})
    if updates:
        await repo.set_entry_values_many(conn, updates)
    if published:
        asset_ids: set[str] = set()
        for entry in published:
            asset_ids |= render.asset_ids(ct, entry["published_data"])
        assets = await assets_by_id(conn, asset_ids, assets_url)
        docs, refs = [], []
        for entry in published:
            rows_of, targets = published_rows(entry, ct, locales, assets)
            docs += [(entry["id"], *doc) for doc in rows_of]
            refs += [(entry["id"], target) for target in targets]
        ids = [e["id"] for e in published]
        written = await documents_repo.replace_documents_many(conn, ids, docs)
        await documents_repo.replace_references_many(conn, ids, refs)
        # Documents left as they were fired no trigger: a field this change made `indexed` needs
        # their published_values rows (per locale: one locale's document may change, another not).
        if unchanged := [(doc[0], doc[1]) for doc in docs if (doc[0], doc[1]) not in written]:
            await documents_repo.add_published_values(conn, unchanged)
        changed = list(dict.fromkeys(entry_id for entry_id, _ in written))
        if changed:
            # Delivery caches drop these at commit (a purge at commit, not the workers' confirmation:
            # answers cached after an unrelated publish of the type must go too).
            await invalidate(conn, f"type:{ct.id}", *(f"entry:{i}" for i in changed))
        return changed
    return []


async def schedule(
    conn: asyncpg.Connection, type_id: str, version: int, reason: str, *, removed: list[str] | None = None,
    dropped_locales: list[str] | None = None, created: bool = False, mark: int = 0, changed: int = 0,
) -> None:
    """(Re)start the type's background work. A type just created has no entries, files or dependents
    yet (those written from now on are delivered by their own events): it starts at the finish
    (indexes, index files, the event), so it never rewrites entries written meanwhile. mark: the
    render number position before the change rendered anything (`repo.render_mark`); changed: the
    documents it already rewrote in its request."""
    await repo.schedule_rerender(
        conn, type_id, version, reason, removed or [], dropped_locales or [], FINISH if created else ENTRIES,
        mark, changed,
    )


async def pending_removals(conn: asyncpg.Connection, type_id: str) -> set[str]:
    """Fields of the type whose values an unfinished re-render is still dropping."""
    row = await repo.get_rerender(conn, type_id)
    return set(row["removed_fields"]) if row is not None and row["finished_at"] is None else set()


def status_json(row: Any) -> dict[str, Any] | None:
    """`rendering` of GET /v1/content-types/{id}: how far the last change has been applied."""
    if row is None:
        return None
    status = "done" if row["finished_at"] is not None else "failed" if row["failed_at"] is not None else "running"
    return {
        "status": status, "attempts": int(row["attempts"]), "error": row["last_error"],
        "phase": row["phase"], "reason": row["reason"], "version": row["type_version"],
        "entries_done": min(int(row["done"]), int(row["total"])) if row["finished_at"] is None else int(row["done"]),
        "entries_total": int(row["total"]) if row["finished_at"] is None else int(row["done"]),
        "dependents_done": int(row["dependents"]),
        "started_at": iso(row["started_at"]), "updated_at": iso(row["updated_at"]),
        "finished_at": iso(row["finished_at"]) if row["finished_at"] is not None else None,
    }


async def run_batch(
    pool: Any, publisher: Publisher, purge: Purge, type_id: str, *, batch: int = BATCH, lease_seconds: float = 60.0,
    backoff: tuple[float, ...] = (1, 2, 5, 15, 30, 60), max_attempts: int = 8,
) -> bool:
    """Run the next batch of the type's re-render, if it is unfinished and nobody runs it; True
    when there is more to do (the caller runs or sends the next batch). A failing batch is retried
    after `backoff` (the sweeper sends it), and after `max_attempts` left failed and visible."""
    token = uuid.uuid4().hex
    try:
        job = await repo.claim_rerender(pool, type_id, token, lease_seconds)
    except asyncio.CancelledError:  # (the claim may have committed all the same: our lease, if any, goes)
        await asyncio.shield(repo.release_rerender(pool, type_id, token))
        raise
    if job is None:
        return False

    async def keep_lease() -> None:  # a long step (an index build at 1M) keeps its lease while it runs
        while True:
            await asyncio.sleep(lease_seconds / 3)
            try:
                await repo.renew_rerender(pool, type_id, token, lease_seconds)
            except Exception as exc:  # try again at the next tick: the lease has two more in it
                log.warning("could not renew the lease of %s's re-render: %s", type_id, exc)

    renewing = asyncio.create_task(keep_lease())
    try:
        if job["phase"] == ENTRIES:
            return await _entries_batch(pool, publisher, purge, job, token, batch)
        if job["phase"] == DEPENDENTS:
            return await _dependents_batch(pool, publisher, purge, job, token, batch)
        return await _finish(pool, publisher, purge, job, token, batch)
    except Exception as exc:
        renewing.cancel()
        attempt = int(job["attempts"]) + 1
        retry_in = backoff[min(attempt, len(backoff)) - 1]
        gave_up = await repo.rerender_failed(pool, job, token, f"{type(exc).__name__}: {exc}", retry_in, max_attempts)
        log.log(logging.ERROR if gave_up else logging.WARNING, "re-render of %s, %s batch at %r failed (attempt %d%s): %s",
                type_id, job["phase"], job["cursor"], attempt, ", given up" if gave_up else "", exc)
        return False  # the sweeper sends it again once the retry is due
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await renewing
        # Shielded: a batch interrupted at shutdown still gives its lease back (else it stays taken
        # until it runs out, and the message that carries the rest claims nothing).
        await asyncio.shield(repo.release_rerender(pool, type_id, token))


async def _entries_batch(pool: Any, publisher: Publisher, purge: Purge, job: Any, token: str, batch: int) -> bool:
    type_id = job["type"]
    async with pool.acquire() as conn:
        ids = await repo.entry_ids_after(conn, type_id, job["cursor"], batch)
    size = max(1, -(-len(ids) // PARTS))
    changes = Changes()  # what every part wrote (one purge for the batch)
    try:
        async with asyncio.TaskGroup() as group:
            parts = [group.create_task(_entries_part(pool, publisher, job, ids[i:i + size], changes))
                     for i in range(0, len(ids), size)]
    except ExceptionGroup as failed:
        for other in failed.exceptions[1:]:
            log.warning("re-render of %s: another part of the batch failed too: %r", type_id, other)
        raise failed.exceptions[0] from None  # as it was raised (run_batch records it)
    outcomes = [part.result() for part in parts]
    if any(outcome == GONE for outcome, _ in outcomes):
        return False
    changed = [entry_id for _, part in outcomes for entry_id in part]
    if changed or changes.keys:
        await purge([*changes.changed_tags(), *(f"entry:{i}" for i in changed), f"type:{type_id}"], changes.keys,
                    f"rerender-{type_id}-{job['generation']}")
    if any(outcome == STALE for outcome, _ in outcomes):
        return True  # changed again meanwhile: the next batch starts the new generation
    phase, cursor = (ENTRIES, ids[-1]) if len(ids) == batch else (DEPENDENTS, "")
    async with pool.acquire() as conn:
        return await repo.advance_rerender(conn, job, token, phase, cursor, len(ids), 0, len(changed)) or True


async def _entries_part(
    pool: Any, publisher: Publisher, job: Any, ids: list[str], changes: Changes,
) -> tuple[str, list[str]]:
    """One part of a batch: its entries conformed, documents re-rendered (one transaction), files
    (recorded in `changes`); (outcome, the ids of the entries whose documents changed). The files
    of every published entry are checked: a document this batch left as it was may have been
    re-rendered already (a small type's change does it in the request), its file not yet."""
    type_id = job["type"]
    async with pool.acquire() as conn:
        async with conn.transaction():
            # Schema changes wait for the batch (and the batch sees the schema its generation has).
            await locks.lock_schema_shared(conn)
            if await repo.current_generation(conn, type_id) != job["generation"]:
                return STALE, []
            types, locales = await load_types(conn), await load_locales(conn)
            ct = types.get(type_id)
            if ct is None:
                return GONE, []
            rows = await repo.entries_between(conn, type_id, ids[0], ids[-1])
            changed = await render_entries(conn, ct, locales, rows, publisher.assets_url)
        published = [(r["id"], type_id) for r in rows if r["published_version"] is not None]
        await publisher.sync_entries(conn, types, locales.codes, published, changes,
                                     current_until=int(job["render_mark"]))
    return DONE, changed


async def _dependents_batch(pool: Any, publisher: Publisher, purge: Purge, job: Any, token: str, batch: int) -> bool:
    """Files of the entries that include the type's entries, of any type (their documents are not
    affected: delivery splices includes when it reads)."""
    type_id = job["type"]
    if not job["changed"]:  # no document of the type changed: the files that include them are right
        async with pool.acquire() as conn:
            return await repo.advance_rerender(conn, job, token, FINISH, "", 0, 0) or True
    async with pool.acquire() as conn:
        types, locales = await load_types(conn), await load_locales(conn)
        rows = await repo.dependents_after(conn, type_id, job["cursor"], batch)
        changes = Changes()
        await publisher.sync_entries(conn, types, locales.codes, [(r["id"], r["type"]) for r in rows], changes)
    await purge(changes.changed_tags(), changes.keys, f"rerender-{type_id}-{job['generation']}-dependents")
    phase, cursor = (DEPENDENTS, rows[-1]["id"]) if len(rows) == batch else (FINISH, "")
    async with pool.acquire() as conn:
        return await repo.advance_rerender(conn, job, token, phase, cursor, 0, len(rows)) or True


async def _finish(pool: Any, publisher: Publisher, purge: Purge, job: Any, token: str, batch: int) -> bool:
    type_id = job["type"]
    async with pool.acquire() as conn:
        types, locales = await load_types(conn), await load_locales(conn)
        ct = types.get(type_id)
        if ct is None:
            return False
        # Built without blocking writes; the delivery lists use them once they are valid.
        built = await ensure_indexes(conn, ct, concurrently=True)
        if built:
            log.info("built %d index(es) of %s: %s", len(built), type_id, ", ".join(built))
        changes = Changes()
        # The files of deleted locales go, a bounded number per step.
        for code in job["dropped_locales"]:
            if code in locales.rows:  # created again since: its files are the new ones
                continue
            keys = await publisher.files.list(f"entries/{type_id}/{code}/", limit=batch * 2)
            for key in keys:
                await publisher._delete(key, changes, exists=True)
            if len(keys) == batch * 2:
                await purge(changes.changed_tags(), changes.keys, f"rerender-{type_id}-{job['generation']}-locales")
                return True
        await publisher.write_indexes(conn, types, locales.codes, type_id, changes)
        async with conn.transaction():
            await locks.lock_schema_shared(conn)
            row = await repo.get_rerender(conn, type_id)
            finished = await repo.finish_rerender(conn, job, token)  # fenced: a later change finishes itself
            if finished:
                # The locales now (not when this step began: one may have been created since).
                current = await load_locales(conn)
                await repo.drop_stale_unique_values(conn, type_id, list(job["removed_fields"]), current.codes)
                await repo.counted_fields_ready(conn, type_id)
                await emit(conn, events.CONTENT_TYPE_RERENDERED, {
                    "id": type_id, "version": job["type_version"], "reason": job["reason"],
                    "entries": int(row["done"]) if row else 0, "dependents": int(row["dependents"]) if row else 0,
                })
    await purge([*changes.changed_tags(), f"type:{type_id}"], changes.keys, f"rerender-{type_id}-{job['generation']}-end")
    return not finished


async def rerender_every_type(
    conn: asyncpg.Connection, assets_url: str, inline_entries: int, *, dropped_locale: str | None = None,
) -> None:
    """After a locale change, inside its transaction: every type's entries and documents in the new
    shape, here for small types and in the background for the others; their files in the background."""
    mark = await repo.render_mark(conn)
    types, locales = await load_types(conn), await load_locales(conn)
    dropped = [dropped_locale] if dropped_locale else []
    budget = inline_entries  # for the whole request, not per type: 200 small types are a big site
    for ct in types.values():
        count = await repo.count_entries_fast(conn, ct.id)
        changed: list[str] = []
        if count <= budget:
            budget -= count
            changed = await render_entries(conn, ct, locales, await repo.entry_rows_of_type(conn, ct.id), assets_url)
            await repo.drop_stale_unique_values(conn, ct.id, [], locales.codes)
        await schedule(conn, ct.id, ct.version, "locale", dropped_locales=dropped, mark=mark, changed=len(changed))


async def locale_still_dropping(conn: asyncpg.Connection, code: str, inline_entries: int) -> bool:
    """A deleted locale whose values a background re-render is still dropping from a big type: it
    cannot be created again yet (the old values would reappear)."""
    return bool(await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM schema_rerenders WHERE finished_at IS NULL
                             AND $1 = ANY(dropped_locales) AND total > $2)""",
        code, inline_entries,
    ))


async def background_pending(conn: asyncpg.Connection, inline_entries: int) -> bool:
    """Some type's change is still being applied to entries in the background (a big type)."""
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM schema_rerenders WHERE finished_at IS NULL AND phase = 'entries' AND total > $1)",
        inline_entries,
    ))
