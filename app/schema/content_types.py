"""Content types: create, change (with what the change does to existing entries) and delete."""

from __future__ import annotations

from typing import Any

import asyncpg

from ..audit.service import WriteContext
from ..db import locks
from ..events import types as events
from ..events.outbox import emit, invalidate
from ..problems import FieldErrorsProblem, conflict, forbidden, invalid, not_found
from ..protection.preconditions import check_precondition
from ..publishing.documents import rerender_all
from ..query.indexes import index_ddl, newest_ddl, trigram_ddl
from ..query.parse import LIKE_TYPES
from . import repository as repo
from .model import (
    NON_LOCALIZED,
    SORTABLE_TYPES,
    STRUCTURED_TYPES,
    TYPE_ID,
    ContentType,
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
    values_equal_for_unique,
)


async def put_content_type(
    conn: asyncpg.Connection, type_id: str, body: Any, ctx: WriteContext, assets_url: str,
    if_match: str | None = None,
) -> tuple[ContentType, bool]:
    if not TYPE_ID.fullmatch(type_id):
        raise invalid("/id", "content type ids match ^[a-z][a-z0-9_]{0,63}$")
    async with conn.transaction():
        # Serialize schema changes: a content type change and entry writes must not interleave.
        await locks.lock_schema(conn)
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
        if existing is None:
            row = await repo.insert_type(conn, type_id, stored)
            created = True
        else:
            await _check_type_change(conn, existing, ct, body)
            await _migrate_entries(conn, existing, ct)
            row = await repo.update_type(conn, type_id, stored)
            created = False
        saved = content_type_from_row(row)
        trigrams = any(f.indexed and f.type in LIKE_TYPES for f in saved.fields) and await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm')")
        for field in saved.fields:
            if field.indexed:
                await conn.execute(index_ddl(type_id, field.id))
                if field.type in SORTABLE_TYPES:  # eq on a value, newest first (references filter by ->>'id')
                    await conn.execute(newest_ddl(type_id, field.id))
                if trigrams and field.type in LIKE_TYPES:
                    await conn.execute(trigram_ddl(type_id, field.id))
        if not created:
            await rerender_all(conn, type_id, assets_url)
        await ctx.audit(conn, "content_type.save", f"content_type:{type_id}")
        await emit(conn, events.CONTENT_TYPE_SAVED, {"id": type_id, "version": saved.version})
        await invalidate(conn, "schema", f"type:{type_id}")
    return saved, created


def _check_graphql_names(types: dict[str, ContentType]) -> None:
    """The GraphQL schema generated from these types must build: a component or block type whose
    name meets another (`article` + `seo` and a type `article_seo` are both `ArticleSeo`) → 422,
    before the schema is saved and every delivery process is left with the previous one."""
    from cms.graphql.schema import build  # the GraphQL layer is built on this one, not the reverse

    try:
        build(types)
    except TypeError as exc:
        raise invalid("/fields", f"the GraphQL names this schema generates collide: {exc}") from None


async def _check_type_change(conn: asyncpg.Connection, old: ContentType, new: ContentType, body: Any) -> None:
    """Changes existing values cannot satisfy → 409 with blocking_entries and pointers."""
    problems = FieldErrorsProblem()
    blocking: set[str] = set()
    positions = {f.get("id"): i for i, f in enumerate(body.get("fields", [])) if isinstance(f, dict)}
    rows = await repo.entry_values_of_type(conn, old.id)
    # Checking every stored value is pure CPU: with patterns, off the event loop.
    await run_checks(has_patterns(new), lambda: _blocking_values(old, new, rows, positions, problems, blocking))
    if problems:
        problems.raise_if_any(409, "conflict", blocking_entries=len(blocking))


def _blocking_values(
    old: ContentType, new: ContentType, rows: list[Any], positions: dict[Any, int], problems: FieldErrorsProblem,
    blocking: set[str],
) -> None:
    """Collect, per changed field, the entries whose values the new field rejects."""
    for field in new.fields:
        before = old.field(field.id)
        if before is None:
            continue
        at = f"/fields/{positions.get(field.id, 0)}"
        structural = (
            before.type != field.type or before.list != field.list
            or (field.type == "reference" and set(field.to or []) != set(before.to or []))
            or (field.type == "enum" and set(field.values or []) != set(before.values or []))
            # inside components and blocks: any change re-checks the values (what was removed is dropped)
            or (field.type in STRUCTURED_TYPES and field.to_json() != before.to_json())
        )
        tightened = field.validations != before.validations or (field.unique and not before.unique)
        if not structural and not tightened:
            continue
        bad_entries: set[str] = set()
        seen_unique: dict[tuple[str, str], str] = {}
        for row in rows:
            per_locale = (row["data"] or {}).get(field.id) or {}
            for locale, value in per_locale.items():
                errors = FieldErrorsProblem()
                check_value(field, prune(field, value), at, errors)
                if errors:
                    bad_entries.add(row["id"])
                elif field.unique:
                    key = (locale, values_equal_for_unique(value))
                    if key in seen_unique and seen_unique[key] != row["id"]:
                        bad_entries.add(row["id"])
                    seen_unique[key] = row["id"]
        if bad_entries:
            blocking |= bad_entries
            reason = "type" if before.type != field.type else "change"
            problems.add(f"{at}/{reason if reason == 'type' else 'id'}", f"{len(bad_entries)} entries have values this change rejects")


async def _migrate_entries(conn: asyncpg.Connection, old: ContentType, new: ContentType) -> None:
    """Removed fields drop their values; a localized flip moves values between `_` and the default locale."""
    removed = [f.id for f in old.fields if new.field(f.id) is None]
    flipped = [f for f in new.fields if (o := old.field(f.id)) is not None and o.localized != f.localized]
    # components and blocks whose definition changed: removed sub-fields and block types are dropped
    reshaped = [
        f for f in new.fields
        if f.type in STRUCTURED_TYPES and (o := old.field(f.id)) is not None and o.to_json() != f.to_json()
    ]
    if not removed and not flipped and not reshaped:
        return
    default = (await load_locales(conn)).default
    rows = await repo.entry_values_of_type(conn, old.id, for_update=True)
    for row in rows:
        updated: list[dict[str, Any] | None] = []
        for data in (row["data"], row["published_data"]):
            if data is None:
                updated.append(None)
                continue
            data = {k: v for k, v in data.items() if k not in removed}
            for field in reshaped:
                if field.id in data:
                    data[field.id] = {code: prune(field, value) for code, value in data[field.id].items()}
            for field in flipped:
                per_locale = data.get(field.id)
                if not per_locale:
                    continue
                if field.localized and NON_LOCALIZED in per_locale:
                    data[field.id] = {default: per_locale[NON_LOCALIZED]}
                elif not field.localized:
                    value = per_locale.get(default, next(iter(per_locale.values())))
                    data[field.id] = {NON_LOCALIZED: value}
            updated.append(data)
        await repo.set_entry_values(conn, row["id"], updated[0], updated[1])
    if removed:
        await repo.drop_unique_values(conn, old.id, removed)


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


async def list_content_types(conn: asyncpg.Connection) -> list[ContentType]:
    return [content_type_from_row(r) for r in await repo.all_types(conn)]


async def get_content_type(conn: asyncpg.Connection, type_id: str) -> ContentType:
    row = await repo.get_type(conn, type_id)
    if row is None:
        raise not_found("content type")
    return content_type_from_row(row)
