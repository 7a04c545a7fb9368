"""Atomic bulk requests applied as sets: validate in Python, write with a constant number of statements.

`POST /v1/bulk` with `atomic: true` means "all of it or nothing", so there is no need to write
each action on its own (20-30 round trips per action through the single-entry service). Instead:

1. read everything the actions touch in a few queries (the entries, the ids and assets they
   reference, the unique values they would take), under the same shared schema lock and row locks
   as the single-entry service;
2. replay the actions in order on an in-memory copy of those entries, with the single-entry
   service's own validation, field merging, publish checks and rendering functions, collecting
   every failing action's errors;
3. if none failed, write the final state with one multi-row statement per table (entries, versions,
   unique values, published documents, references, audit log, outbox events, invalidations).

The result is what the per-action path produces, with these deliberate differences: uniqueness is
checked on the final state of the request (so an entry may give up a value that a later action in
the same request takes), and every timestamp is the transaction's. Requests this path does not cover
(an empty slug that must be generated from another field) take the per-action path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from ulid import ULID

from .. import render
from ..assets import repository as assets_repo
from ..audit.service import WriteContext, record_many
from ..db import locks
from ..entries import repository as repo
from ..entries import rules
from ..events import types as events
from ..events.outbox import emit_many, invalidate
from ..problems import FieldErrorsProblem, ProblemError, conflict, not_found
from ..publishing import repository as documents_repo
from ..publishing.documents import assets_by_id, published_rows
from ..schema.model import (
    NON_LOCALIZED,
    ContentType,
    Locales,
)
from ..schema.registry import load_locales, load_types, resolve_locale
from ..schema.structured import walk_links
from ..schema.values import (
    has_patterns,
    pattern_budget,
    run_checks,
)
from .errors import atomic_failure, prefixed_errors
from .parse import Action


@dataclass
class _Entry:
    """An entries row as the actions leave it (the columns of repository.ENTRY_COLUMNS)."""

    id: str
    type: str
    data: dict[str, Any]
    version: int
    published_version: int | None
    published_data: dict[str, Any] | None
    first_published_at: datetime | None
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime
    new: bool = False  # not in the database before this request
    deleted: bool = False
    changed: bool = False  # the row must be written
    republished: bool = False  # its published documents must be rewritten (or removed)

    def __getitem__(self, key: str) -> Any:  # the service's and render's functions read rows by key
        return getattr(self, key)


@dataclass
class _Plan:
    now: datetime
    types: dict[str, ContentType]
    locales: Locales
    entries: dict[str, _Entry] = field(default_factory=dict)
    versions: list[tuple[str, int, dict[str, Any], str]] = field(default_factory=list)
    audit: list[tuple[str, str]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    touched_unique: dict[str, int] = field(default_factory=dict)  # entry id -> the action that set its values last


def needs_per_action_path(actions: list[Action], types: dict[str, ContentType]) -> bool:
    """True when an upsert leaves a generated slug empty (filling it needs the per-action path), or
    an id is deleted and upserted in one request (its version history starts over)."""
    deleted = {a.id for a in actions if a.op == "delete"}
    if any(a.op == "upsert" and a.id in deleted for a in actions):
        return True
    for action in actions:
        if action.op != "upsert":
            continue
        ct = types.get(action.type)
        if ct is None:
            continue
        for f in ct.fields:
            if f.type == "slug" and f.from_ and not (action.fields or {}).get(f.id):
                return True
    return False


async def load(conn: asyncpg.Connection) -> tuple[dict[str, ContentType], Locales]:
    """Inside the request's transaction: hold off schema changes, read the types and locales."""
    await locks.lock_schema_shared(conn)
    return await load_types(conn), await load_locales(conn)


async def apply(
    conn: asyncpg.Connection, actions: list[Action], types: dict[str, ContentType], locales: Locales,
    ctx: WriteContext, assets_url: str,
) -> list[dict[str, Any]]:
    """Apply the (already authorized) actions atomically; 422 with every failing action's errors."""
    now = await conn.fetchval("SELECT now()")  # the transaction's time: every row written gets it
    plan = _Plan(now, types, locales)
    ids = sorted({a.id for a in actions if a.id is not None})
    for row in await repo.get_entries(conn, ids, for_update=True):
        entry = plan.entries[row["id"]] = _Entry(**dict(row))
        if (ct := types.get(entry.type)) is not None:
            # still in a previous schema's shape (a change being applied in the background): conform first
            data, published = rules.conform(ct, locales, entry.data), rules.conform(ct, locales, entry.published_data)
            if data != entry.data or published != entry.published_data:
                entry.data, entry.published_data, entry.changed = data or {}, published, True
    linked_entries, linked_assets = _linked_ids(actions, types, list(plan.entries.values()))
    known_ids = await repo.existing_ids(conn, sorted(linked_entries)) if linked_entries else {}
    known_assets = await assets_repo.existing_asset_ids(conn, sorted(linked_assets)) if linked_assets else set()

    def replay_all() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for action in actions:
            try:
                results.append(_replay(plan, action, ctx, known_ids, known_assets))
            except ProblemError as exc:
                errors.extend(prefixed_errors(exc, action.index))
        return results, errors

    # Validating up to 1,000 actions is pure CPU (no I/O): with pattern checks it runs in a
    # worker thread, and all of them share one pattern budget.
    with pattern_budget():
        results, errors = await run_checks(any(has_patterns(ct) for ct in types.values()), replay_all)
    # Actions that failed above set no values, so no action is blamed twice; sorted() is stable.
    errors = sorted([*errors, *await _unique_conflicts(conn, plan)], key=lambda e: int(e["pointer"].split("/")[2]))
    failed = len({e["pointer"].split("/")[2] for e in errors})
    if errors:
        raise atomic_failure(errors, failed, len(actions))
    await _write(conn, plan, ctx, assets_url)
    return results


def _linked_ids(
    actions: list[Action], types: dict[str, ContentType], loaded: list[_Entry]
) -> tuple[set[str], set[str]]:
    """Entry and asset ids that the upserts' fields and the loaded entries' drafts point to (looked
    up once, for the publish checks)."""
    entries: set[str] = set()
    assets: set[str] = set()
    for action in actions:
        # Raw input, not validated yet: take what looks like a link, validation judges the rest.
        ct = types.get(action.type)
        if action.op != "upsert" or ct is None or not isinstance(action.fields, dict):
            continue
        for f in ct.fields:
            if f.has_links:
                for holder, link in walk_links(f, action.fields.get(f.id)):
                    if isinstance(link.get("id"), str):
                        (entries if holder.type == "reference" else assets).add(link["id"])
    for entry in loaded:
        if entry.type in types:
            refs, asset_links = rules.links(types[entry.type], entry.data)
            entries |= {link["id"] for _, link in refs}
            assets |= {asset_id for _, asset_id in asset_links}
    return entries, assets


def _ct(plan: _Plan, type_id: str) -> ContentType:
    ct = plan.types.get(type_id)
    if ct is None:
        raise not_found("content type")
    return ct


def _existing(plan: _Plan, type_id: str, entry_id: str) -> _Entry:
    entry = plan.entries.get(entry_id)
    if entry is None or entry.deleted or entry.type != type_id:
        raise not_found("entry")
    return entry


def _replay(
    plan: _Plan, action: Action, ctx: WriteContext, known_ids: dict[str, str], known_assets: set[str]
) -> dict[str, Any]:
    ct = _ct(plan, action.type)
    target = f"entry:{action.type}/{{}}"
    if action.op == "upsert":
        given = rules.fields_input({"fields": action.fields if action.fields is not None else {}})
        code = resolve_locale(plan.locales, action.locale)
        current = plan.entries.get(action.id) if action.id is not None else None
        if current is not None and current.deleted:
            current = None
        if current is not None and current.type != action.type:
            raise conflict(f"the id {action.id!r} is used by an entry of type {current.type!r}")
        if current is not None:
            given = {**{f.id: None for f in ct.fields}, **given}  # PUT replaces the locale's fields
        errors = FieldErrorsProblem()
        values = rules.validate_fields(ct, given, errors)
        errors.raise_if_any()
        if current is None:
            if action.id is not None:
                rules.check_new_id(action.id)
            entry_id = action.id or str(ULID())
            data = rules.apply_values({}, ct, values, code)
            plan.entries[entry_id] = _Entry(
                entry_id, ct.id, data, 1, None, None, None, None, plan.now, plan.now, new=True, changed=True
            )
            plan.versions.append((entry_id, 1, data, "create"))
            plan.touched_unique[entry_id] = action.index
            plan.audit.append(("entry.create", target.format(entry_id)))
            plan.events.append((events.ENTRY_CREATED, rules.entry_event(plan.entries[entry_id], ct, plan.locales)))
            known_ids[entry_id] = ct.id
            return {"index": action.index, "status": 201, "id": entry_id, "error": None}
        data = rules.apply_values(current.data, ct, values, code)
        if data != current.data:
            current.data, current.version, current.updated_at = data, current.version + 1, plan.now
            current.changed = True
            plan.versions.append((current.id, current.version, data, "update"))
            plan.touched_unique[current.id] = action.index
            plan.audit.append(("entry.update", target.format(current.id)))
            plan.events.append((events.ENTRY_UPDATED, rules.entry_event(current, ct, plan.locales)))
        return {"index": action.index, "status": 200, "id": current.id, "error": None}

    assert action.id is not None  # parse_bulk requires it for everything but upserts
    entry = _existing(plan, action.type, action.id)
    tags = [f"entry:{entry.id}", f"type:{ct.id}"]
    if action.op == "publish":
        problems = rules.publish_problems(ct, entry.data, plan.locales.default)
        refs, asset_links = rules.links(ct, entry.data)
        for field_id, link in refs:
            if known_ids.get(link["id"]) != link["type"]:
                problems.add(f"/fields/{field_id}", f"references {link['type']} {link['id']!r}, which does not exist")
        for field_id, asset_id in asset_links:
            if asset_id not in known_assets:
                problems.add(f"/fields/{field_id}", f"asset {asset_id!r} does not exist")
        problems.raise_if_any()
        entry.published_version, entry.published_data, entry.published_at = entry.version, entry.data, plan.now
        entry.first_published_at = entry.first_published_at or plan.now
        entry.changed = entry.republished = True
        plan.audit.append(("entry.publish", target.format(entry.id)))
        plan.events.append((events.ENTRY_PUBLISHED, rules.entry_event(entry, ct, plan.locales, entry.published_version)))
        plan.tags += tags
        return {"index": action.index, "status": 200, "id": entry.id, "error": None}
    if action.op == "unpublish":
        if entry.published_version is not None:
            version = entry.published_version
            entry.published_version = entry.published_data = entry.published_at = None
            entry.changed = entry.republished = True
            plan.audit.append(("entry.unpublish", target.format(entry.id)))
            plan.events.append((events.ENTRY_UNPUBLISHED, rules.entry_event(entry, ct, plan.locales, version)))
            plan.tags += tags
        return {"index": action.index, "status": 200, "id": entry.id, "error": None}
    # delete (bulk never forces: a published entry must be unpublished first)
    if entry.published_version is not None:
        raise conflict("the entry is published; unpublish it first or use ?force=true")
    entry.deleted = True
    known_ids.pop(entry.id, None)
    plan.audit.append(("entry.delete", target.format(entry.id)))
    plan.events.append((events.ENTRY_DELETED, rules.entry_event(entry, ct, plan.locales)))
    plan.tags += tags
    return {"index": action.index, "status": 204, "id": entry.id, "error": None}


def _unique_rows(plan: _Plan) -> list[tuple[str, str, str, str, str]]:
    """(type, field, locale, value, entry id) of every entry whose values an action set."""
    rows = []
    for entry_id in plan.touched_unique:
        entry = plan.entries[entry_id]
        if not entry.deleted:
            ct = plan.types[entry.type]
            rows += [(ct.id, f, loc, v, entry_id) for f, loc, v in rules.unique_rows(ct, entry.data)]
    return rows


async def _unique_conflicts(conn: asyncpg.Connection, plan: _Plan) -> list[dict[str, Any]]:
    """Values taken twice within the request, or by an entry the request does not rewrite."""
    rows = _unique_rows(plan)
    errors: list[dict[str, Any]] = []

    def blame(entry_id: str, field_id: str, locale: str, value: str) -> None:
        where = "" if locale == NON_LOCALIZED else f" in {locale}"
        errors.append({
            "pointer": f"/actions/{plan.touched_unique[entry_id]}/fields/{field_id}",
            "detail": f"the value {value!r} is already used by another entry{where}",
        })

    owner: dict[tuple[str, str, str, str], str] = {}
    for type_id, field_id, locale, value, entry_id in rows:
        first = owner.setdefault((type_id, field_id, locale, value), entry_id)
        if first != entry_id:
            blame(entry_id, field_id, locale, value)
    if rows:
        rewritten = [e for e in plan.touched_unique] + [e.id for e in plan.entries.values() if e.deleted]
        taken = await repo.unique_values_taken(conn, [r[:4] for r in rows], rewritten)
        for r in taken:
            blame(owner[(r["type"], r["field"], r["locale"], r["value"])], r["field"], r["locale"], r["value"])
    return errors


async def _write(conn: asyncpg.Connection, plan: _Plan, ctx: WriteContext, assets_url: str) -> None:
    entries = list(plan.entries.values())
    deleted = [e.id for e in entries if e.deleted and not e.new]
    written = [e for e in entries if e.changed and not e.deleted]
    if deleted:
        await repo.delete_entries(conn, deleted)
    if written:
        await repo.upsert_entries(conn, [
            (e.id, e.type, e.data, e.version, e.published_version, e.published_data, e.first_published_at,
             e.published_at, e.created_at, e.updated_at)
            for e in written
        ])
    versions = [v for v in plan.versions if not plan.entries[v[0]].deleted]
    if versions:
        await repo.insert_versions(conn, versions, ctx.actor.actor())
    unique_ids = [e for e in plan.touched_unique if not plan.entries[e].deleted]
    if unique_ids:
        try:
            async with conn.transaction():
                await repo.replace_unique_values_many(conn, unique_ids, _unique_rows(plan))
        except asyncpg.UniqueViolationError:
            raise conflict("a unique value was taken by a concurrent write; retry") from None
    await _write_published(conn, plan, [e for e in written if e.republished], assets_url)
    await record_many(conn, actor=ctx.actor.actor(), writes=plan.audit, request_id=ctx.request_id, ip=ctx.ip)
    await emit_many(conn, plan.events)
    await invalidate(conn, *dict.fromkeys(plan.tags))


async def _write_published(conn: asyncpg.Connection, plan: _Plan, entries: list[_Entry], assets_url: str) -> None:
    """Published documents and reverse references of every entry whose published state changed."""
    if not entries:
        return
    ids = [e.id for e in entries]
    asset_ids: set[str] = set()
    for e in entries:
        if e.published_data is not None:
            asset_ids |= render.asset_ids(plan.types[e.type], e.published_data)
    assets = await assets_by_id(conn, asset_ids, assets_url)
    docs: list[tuple[Any, ...]] = []
    references: list[tuple[str, str]] = []
    for e in entries:
        if e.published_data is not None:
            rows, targets = published_rows(e, plan.types[e.type], plan.locales, assets)
            docs += [(e.id, *row) for row in rows]
            references += [(e.id, target) for target in targets]
    await documents_repo.replace_documents_many(conn, ids, docs)
    await documents_repo.replace_references_many(conn, ids, references)
