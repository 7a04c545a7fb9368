"""Content types: create, change (with what the change does to existing entries) and delete."""

from __future__ import annotations

import functools
from typing import Any

import asyncpg

from ..audit.service import WriteContext
from ..db import locks
from ..entries.repository import PUBLISHED_DATA
from ..events import types as events
from ..events.outbox import emit, invalidate
from ..problems import FieldErrorsProblem, conflict, forbidden, invalid, not_found
from ..protection.preconditions import check_precondition
from ..query.indexes import ensure_indexes
from . import repository as repo
from . import rerenders
from .model import (
    KEY_TEXT_MAX,
    STRUCTURED_TYPES,
    TEXT_TYPES,
    TYPE_ID,
    UNIQUE_TYPES,
    ContentType,
    Field,
    content_type_from_row,
    stored_fields,
)
from .parsing import parse_content_type
from .registry import load_locales, load_types
from .structured import prune
from .values import (
    check_value,
    has_patterns,
    run_checks,
)

INLINE_ENTRIES = rerenders.INLINE_ENTRIES
CHECK_CHUNK = 1000  # stored values checked per round trip

async def put_content_type(
    conn: asyncpg.Connection, type_id: str, body: Any, ctx: WriteContext, assets_url: str,
    if_match: str | None = None, inline_entries: int = INLINE_ENTRIES,
) -> tuple[ContentType, bool]:
    """Create or change a content type. The request costs O(1) of the type's entry count unless a
    changed field's stored values must be checked (then it reads that field's values only): the
    existing entries, documents and files are brought to the new shape in the background
    (app/schema/rerenders.py), or here when the type has at most `inline_entries` entries."""
    if not TYPE_ID.fullmatch(type_id):
        raise invalid("/id", "content type ids match ^[a-z][a-z0-9_]{0,63}$")
    async with conn.transaction():
        # Serialize schema changes: a content type change and entry writes must not interleave.
        await locks.lock_schema(conn)
        mark = await repo.render_mark(conn)  # before this change renders anything
        types = await load_types(conn)
        ct, errors = parse_content_type(type_id, body, set(types))
        errors.raise_if_any()
        assert ct is not None
        _check_graphql_names({**types, type_id: ct})
        existing = types.get(type_id)
        if existing is None and ctx.actor.content_types is not None:
            raise forbidden("a credential limited to some content types cannot create new ones")
        check_precondition(if_match, existing.version if existing else None)
        stored = {
            "name": ct.name, "description": ct.description, "display_field": ct.display_field,
            "fields": stored_fields(ct.fields),
        }
        removed: list[str] = []
        # (a new type has no entries; writes to this one wait for the schema lock held here)
        inline = existing is None or await repo.count_entries_fast(conn, type_id) <= inline_entries
        if existing is None:
            row = await repo.insert_type(conn, type_id, stored)
            created = True
        else:
            removed = [f.id for f in existing.fields if ct.field(f.id) is None]
            await _check_pending_removals(conn, ct, body)
            locales = await load_locales(conn)  # (also for the inline re-render below)
            for field_id, localized in await _check_type_change(conn, existing, ct, body, locales.default, inline):
                await repo.register_unique_values(
                    conn, type_id, field_id, localized=localized, default_locale=locales.default,
                )
            row = await repo.update_type(conn, type_id, stored)
            created = False
        saved = content_type_from_row(row)
        counted = [f.id for f in saved.fields if f.counted]
        changed = [f for f in counted if existing is None or (before := existing.field(f)) is None
                   or not before.counted or before.to_json() != saved.field(f).to_json()]  # type: ignore[union-attr]
        # Filtered counts use published_values once every document has its rows: at once for a new
        # or small type (its documents are rewritten below), after the background work otherwise.
        await repo.sync_counted_fields(conn, type_id, counted, changed, ready=created or inline)
        if await _small_table(conn, "published_documents", inline_entries * 100):
            await ensure_indexes(conn, saved, concurrently=False)
        rerendered: list[str] = []  # documents this request changed
        if inline and not created:
            # Small: entries, documents and unique values in the new shape before the change commits.
            rows = await repo.entry_rows_of_type(conn, type_id)
            rerendered = await rerenders.render_entries(conn, saved, locales, rows, assets_url)
            await repo.drop_stale_unique_values(conn, type_id, removed, locales.codes)
            removed = []
        # The files (and, when not inline, entries and documents), the indexes of a big site, and
        # `content_type.rerendered` when all is done: the workers, in batches.
        await rerenders.schedule(conn, type_id, saved.version, "content_type", removed=removed, created=created,
                                 mark=mark, changed=len(rerendered))
        await ctx.audit(conn, "content_type.save", f"content_type:{type_id}")
        await emit(conn, events.CONTENT_TYPE_SAVED, {"id": type_id, "version": saved.version})
        await invalidate(conn, "schema", f"type:{type_id}")
    return saved, created


async def _small_table(conn: asyncpg.Connection, table: str, rows: int) -> bool:
    """The table holds at most about `rows` rows of ~4 KB (a CREATE INDEX over it is quick): by its
    size on disk, which is known even where the planner has no estimate yet (never analyzed)."""
    size = await conn.fetchval("SELECT pg_relation_size(to_regclass('public.' || $1))", table)
    return int(size or 0) <= rows * 4096


async def _check_pending_removals(conn: asyncpg.Connection, new: ContentType, body: Any) -> None:
    """A field removed by an earlier change whose values are still being dropped cannot come back
    yet: its old values would reappear in the entries not yet reached."""
    pending = await rerenders.pending_removals(conn, new.id)
    again = [f.id for f in new.fields if f.id in pending]
    if again:
        positions = {f.get("id"): i for i, f in enumerate(body.get("fields", [])) if isinstance(f, dict)}
        problems = FieldErrorsProblem()
        for field_id in again:
            problems.add(f"/fields/{positions.get(field_id, 0)}/id",
                         f"field {field_id!r} was removed and its values are still being dropped in the background; "
                         "add it again when GET /v1/content-types/{id} shows rendering.status done")
        problems.raise_if_any(409, "conflict")


def _check_graphql_names(types: dict[str, ContentType]) -> None:
    """The GraphQL schema generated from these types must build: a component or block type whose
    name meets another (`article` + `seo` and a type `article_seo` are both `ArticleSeo`) → 422,
    before the schema is saved and every delivery process is left with the previous one."""
    from cms.graphql.schema import build  # the GraphQL layer is built on this one, not the reverse

    try:
        build(types)
    except TypeError as exc:
        raise invalid("/fields", f"the GraphQL names this schema generates collide: {exc}") from None


async def _check_type_change(
    conn: asyncpg.Connection, old: ContentType, new: ContentType, body: Any, default_locale: str, small: bool,
) -> list[tuple[str, bool | None]]:
    """Changes existing values cannot satisfy → 409 with blocking_entries and pointers; else the
    fields whose existing values must be registered as unique now (made unique, changed, or with
    `localized` flipped: then with the new `localized`, as the values move between `_` and the
    default locale; else None).

    Only changed fields whose change can reject a stored value are checked, and only their values
    are read (a server-side cursor, a chunk at a time; entries without a value are skipped by the
    query); unique values are compared by PostgreSQL. Adding, removing or renaming fields and
    loosening rules read nothing. A text field made `indexed` or `unique` bounds its values
    (KEY_TEXT_MAX): checked here for a `small` type; on a big one a new `unique` checks it in its
    SQL, a new `indexed` alone does not (the request stays O(1); publishing such an entry is a 422)."""
    problems = FieldErrorsProblem()
    blocking: set[str] = set()
    unique_now: list[tuple[str, bool | None]] = []
    positions = {f.get("id"): i for i, f in enumerate(body.get("fields", [])) if isinstance(f, dict)}
    for field in new.fields:
        before = old.field(field.id)
        if before is None:
            continue
        structural = (
            before.type != field.type or before.list != field.list
            or (field.type == "reference" and set(field.to or []) != set(before.to or []))
            or (field.type == "enum" and set(field.values or []) != set(before.values or []))
            # inside components and blocks: any change re-checks the values (what was removed is dropped)
            or (field.type in STRUCTURED_TYPES and field.to_json() != before.to_json())
        )
        keyed = field.type in TEXT_TYPES and (
            (field.indexed and not before.indexed) or (field.unique and not before.unique))
        tightened = field.validations != before.validations or (keyed and small)
        bad: set[str] = set()
        if structural or tightened:
            cursor = await conn.cursor(
                # (a NULL published_data is the same as data: `data ? $2` finds those)
                f"SELECT id, data -> $2 AS draft, {PUBLISHED_DATA} -> $2 AS published FROM entries "
                "WHERE type = $1 AND (data ? $2 OR published_data ? $2)", old.id, field.id,
            )
            while chunk := await cursor.fetch(CHECK_CHUNK):
                # Pure CPU: with patterns, off the event loop.
                bad |= await run_checks(has_patterns(new), functools.partial(_rejected, field, chunk))
        flipped = field.localized if before.localized != field.localized else None
        if field.unique and field.type in UNIQUE_TYPES and (structural or not before.unique or flipped is not None):
            bad |= await repo.entries_sharing_values(
                conn, old.id, field.id, localized=flipped, default_locale=default_locale,
                longer_than=KEY_TEXT_MAX if keyed and not small else None,
            )
            unique_now.append((field.id, flipped))
        if bad:
            blocking |= bad
            at = f"/fields/{positions.get(field.id, 0)}"
            reason = "type" if before.type != field.type else "localized" if flipped is not None else "id"
            problems.add(f"{at}/{reason}", f"{len(bad)} entries have values this change rejects")
    if problems:
        problems.raise_if_any(409, "conflict", blocking_entries=len(blocking))
    return unique_now


def _rejected(field: Field, rows: list[Any]) -> set[str]:
    """Ids of the entries one of whose values (draft or published, any locale) `field` rejects."""
    bad = set()
    for row in rows:
        for per_locale in (row["draft"], row["published"]):
            for value in (per_locale or {}).values():
                errors = FieldErrorsProblem()
                check_value(field, prune(field, value), "", errors)
                if errors:
                    bad.add(row["id"])
    return bad


async def delete_content_type(conn: asyncpg.Connection, type_id: str, ctx: WriteContext) -> None:
    async with conn.transaction():
        await locks.lock_schema(conn)
        if await repo.get_type(conn, type_id, for_update=True) is None:
            raise not_found("content type")
        count = await repo.count_entries(conn, type_id)
        if count:
            raise conflict(f"{count} entries of this type exist; delete them first", blocking_entries=count)
        referencing = [
            ct.id for ct in (await load_types(conn)).values()
            if ct.id != type_id and any(type_id in (f.to or []) for f in ct.fields)
        ]
        if referencing:
            raise conflict(f"content types {', '.join(referencing)} reference this type")
        await repo.delete_type(conn, type_id)
        await ctx.audit(conn, "content_type.delete", f"content_type:{type_id}")
        await emit(conn, events.CONTENT_TYPE_DELETED, {"id": type_id})
        await invalidate(conn, "schema", f"type:{type_id}")


async def rendering(conn: asyncpg.Connection, type_id: str) -> dict[str, Any] | None:
    """How far the type's last change has been applied to its entries, documents and files."""
    return rerenders.status_json(await repo.get_rerender(conn, type_id))


async def list_content_types(conn: asyncpg.Connection) -> list[ContentType]:
    return [content_type_from_row(r) for r in await repo.all_types(conn)]


async def get_content_type(conn: asyncpg.Connection, type_id: str) -> ContentType:
    row = await repo.get_type(conn, type_id)
    if row is None:
        raise not_found("content type")
    return content_type_from_row(row)
