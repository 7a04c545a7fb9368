"""Entry writes: create, replace, patch, publish, unpublish, delete and restore, each in one
transaction with its version row, audit row, outbox event and cache invalidation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import asyncpg
from ulid import ULID

from ..assets import repository as assets_repo
from ..audit.service import WriteContext
from ..db import locks
from ..events import types as events
from ..events.outbox import record_write
from ..problems import FieldErrorsProblem, ProblemError, conflict, malformed, not_found
from ..protection.preconditions import check_precondition
from ..publishing import repository as documents_repo
from ..publishing.documents import render_published
from ..query.parse import parse_list_query
from ..query.sources import DraftSource
from ..query.sql import fetch_page
from ..schema import repository as schema_repo
from ..schema.model import (
    NON_LOCALIZED,
    RESOURCE_ID,
    SLUG_MAX,
    ContentType,
    Locales,
    content_type_from_row,
)
from ..schema.registry import load_locales, load_types, resolve_locale
from ..schema.values import (
    has_patterns,
    pattern_budget,
    run_checks,
)
from . import repository as repo
from .rules import (
    apply_values,
    check_new_id,
    conform,
    entry_event,
    fields_input,
    links,
    management_entry,
    merge_patch,
    publish_problems,
    slugify,
    still_valid,
    unique_rows,
    validate_fields,
    version_fields,
    version_json,
)


async def _fill_slugs(
    conn: asyncpg.Connection, ct: ContentType, data: dict[str, Any], locale: str, entry_id: str, locales: Locales
) -> None:
    """Empty slug fields take their value from the `from` field, with -2, -3 … to stay unique."""
    for field in ct.fields:
        if field.type != "slug" or not field.from_:
            continue
        slot = locale if field.localized else NON_LOCALIZED
        if (data.get(field.id) or {}).get(slot):
            continue
        source = ct.field(field.from_)
        if source is None:
            continue
        source_value = (data.get(source.id) or {}).get(locale if source.localized else NON_LOCALIZED)
        if source_value is None and not source.localized:
            source_value = None
        if source_value is None and source.localized:
            source_value = (data.get(source.id) or {}).get(locales.default)
        if not isinstance(source_value, str):
            continue
        base = slugify(source_value)
        if not base:
            continue
        taken = await repo.slugs_like(conn, ct.id, field.id, slot, base, entry_id)
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            suffix = f"-{n}"
            candidate = base[: SLUG_MAX - len(suffix)].rstrip("-") + suffix
        data.setdefault(field.id, {})[slot] = candidate


async def _save_unique(conn: asyncpg.Connection, ct: ContentType, data: dict[str, Any], entry_id: str) -> None:
    rows = unique_rows(ct, data)
    taken = await repo.unique_taken(conn, ct.id, rows, entry_id)
    if taken:
        problems = FieldErrorsProblem()
        for field, locale, value in taken:
            where = "" if locale == NON_LOCALIZED else f" in {locale}"
            problems.add(f"/fields/{field}", f"the value {value!r} is already used by another entry{where}")
        problems.raise_if_any(409, "conflict")
    try:
        async with conn.transaction():
            await repo.replace_unique_values(conn, entry_id, ct.id, rows)
    except asyncpg.UniqueViolationError:
        raise conflict("a unique value was taken by a concurrent write; retry") from None


async def _save_unique_if_changed(conn: asyncpg.Connection, ct: ContentType, data: dict[str, Any], entry_id: str) -> None:
    """`_save_unique` unless the entry's registered values are already these (one indexed read instead
    of a check, a savepoint, a delete and an insert). Compared with what is registered, not with the
    entry's previous data: a schema change may have reshaped the data (a flipped `localized`)
    without registering it again, and the next write then does."""
    if set(unique_rows(ct, data)) != set(await repo.registered_unique_values(conn, entry_id)):
        await _save_unique(conn, ct, data, entry_id)


async def _validated(ct: ContentType, given: dict[str, Any]) -> dict[str, Any]:
    """The stored form of the given values, or 422 with every error; pattern checks off the loop."""
    errors = FieldErrorsProblem()
    with pattern_budget():
        values = await run_checks(has_patterns(ct), lambda: validate_fields(ct, given, errors))
    errors.raise_if_any()
    return values


async def _type_for_write(conn: asyncpg.Connection, type_id: str) -> ContentType:
    row = await schema_repo.get_type(conn, type_id)
    if row is None:
        raise not_found("content type")
    return content_type_from_row(row)


class EntryExists(ProblemError):
    """create_entry found the id taken by an entry of the same type (PUT then replaces it)."""

    def __init__(self, entry_id: str) -> None:
        super().__init__(409, "conflict", f"an entry with id {entry_id!r} already exists")


async def create_entry(
    conn: asyncpg.Connection, type_id: str, entry_id: str | None, locale: str | None, body: Any, ctx: WriteContext
) -> tuple[dict[str, Any], bool]:
    """Create an entry (POST: server id; PUT: the client's id). Returns (ENTRY, True)."""
    given = fields_input(body)
    if entry_id is not None:
        check_new_id(entry_id)
    async with conn.transaction():
        await locks.lock_schema_shared(conn)
        ct = await _type_for_write(conn, type_id)
        locales = await load_locales(conn)
        code = resolve_locale(locales, locale)
        values = await _validated(ct, given)
        new_id = entry_id or str(ULID())
        data = apply_values({}, ct, values, code)
        await _fill_slugs(conn, ct, data, code, new_id, locales)
        try:
            async with conn.transaction():
                row = await repo.insert_entry(conn, new_id, type_id, data)
        except asyncpg.UniqueViolationError:
            taken_by = await repo.get_entry(conn, new_id)
            if taken_by is not None and taken_by["type"] != type_id:
                raise conflict(f"the id {new_id!r} is used by an entry of type {taken_by['type']!r}") from None
            raise EntryExists(new_id) from None
        await _save_unique(conn, ct, data, new_id)
        await repo.insert_version(conn, new_id, 1, data, "create", ctx.actor.actor())
        await record_write(conn, ctx, "entry.create", f"entry:{type_id}/{new_id}", events.ENTRY_CREATED,
                           entry_event(row, ct, locales))
        return management_entry(row, ct, code, locales), True


async def put_entry(
    conn: asyncpg.Connection, type_id: str, entry_id: str, locale: str | None, body: Any, ctx: WriteContext,
    if_match: str | None,
) -> tuple[dict[str, Any], bool]:
    """PUT: create with the client's id, or replace the locale's fields of the existing entry."""
    existing = await repo.get_entry(conn, entry_id) if RESOURCE_ID.fullmatch(entry_id) else None
    if existing is None:
        if if_match is not None:
            check_precondition(if_match, None)  # a conditional PUT never creates: nothing to match
        try:
            return await create_entry(conn, type_id, entry_id, locale, body, ctx)
        except EntryExists:
            pass  # created concurrently a moment ago: replace it like any existing entry
    elif existing["type"] != type_id:
        raise conflict(f"the id {entry_id!r} is used by an entry of type {existing['type']!r}")
    return await _update_entry(conn, type_id, entry_id, locale, body, ctx, if_match, patch=False), False


async def patch_entry(
    conn: asyncpg.Connection, type_id: str, entry_id: str, locale: str | None, body: Any, ctx: WriteContext,
    if_match: str | None,
) -> dict[str, Any]:
    return await _update_entry(conn, type_id, entry_id, locale, body, ctx, if_match, patch=True)


async def _update_entry(
    conn: asyncpg.Connection, type_id: str, entry_id: str, locale: str | None, body: Any, ctx: WriteContext,
    if_match: str | None, *, patch: bool,
) -> dict[str, Any]:
    given = fields_input(body)
    async with conn.transaction():
        ct, locales, existing = await _locked_entry(conn, type_id, entry_id, if_match)
        code = resolve_locale(locales, locale)
        if patch:
            current = management_entry(existing, ct, code, locales)["fields"]
            merged = {}
            for key, value in given.items():
                field = ct.field(key) if isinstance(key, str) else None
                # json values and (single) components merge as JSON merge patches; lists are replaced
                mergeable = field is not None and (field.type == "json" or (field.type == "component" and not field.list))
                if mergeable and value is not None:
                    merged[key] = merge_patch(current.get(key), value)
                else:
                    merged[key] = value
            given = merged
        else:
            # PUT replaces this locale's localized fields and every non-localized field.
            given = {**{f.id: None for f in ct.fields}, **given}
        values = await _validated(ct, given)
        data = apply_values(existing["data"], ct, values, code)
        await _fill_slugs(conn, ct, data, code, entry_id, locales)
        if data == existing["data"]:
            return management_entry(existing, ct, code, locales)
        await _save_unique_if_changed(conn, ct, data, entry_id)
        row = await repo.update_entry_data(conn, entry_id, data)
        await repo.insert_version(conn, entry_id, row["version"], data, "update", ctx.actor.actor())
        await record_write(conn, ctx, "entry.update", f"entry:{type_id}/{entry_id}", events.ENTRY_UPDATED,
                           entry_event(row, ct, locales))
        return management_entry(row, ct, code, locales)


class WriteSchemas:
    """The content types and locales entry writes parsed, per database, at one schema version
    (migration 0026): a write whose locked entry shows the same version reuses them instead of
    reading both again. Bounded: a few databases (tests open many), a version each, its types."""

    MAX_DATABASES = 8
    MAX_TYPES = 1000

    def __init__(self) -> None:
        self._by_database: dict[int, tuple[UUID, Locales, dict[str, ContentType]]] = {}

    def get(self, database: int, version: UUID, type_id: str) -> tuple[ContentType, Locales] | None:
        held = self._by_database.get(database)
        if held is None or held[0] != version or type_id not in held[2]:
            return None
        return held[2][type_id], held[1]

    def put(self, database: int, version: UUID, ct: ContentType, locales: Locales) -> None:
        held = self._by_database.get(database)
        if held is None or held[0] != version:
            if held is None and len(self._by_database) >= self.MAX_DATABASES:
                self._by_database.pop(next(iter(list(self._by_database))), None)
            held = (version, locales, {})
            self._by_database[database] = held
        if len(held[2]) < self.MAX_TYPES:
            held[2][ct.id] = ct


WRITE_SCHEMAS = WriteSchemas()


async def _locked_entry(
    conn: asyncpg.Connection, type_id: str, entry_id: str, if_match: str | None
) -> tuple[ContentType, Locales, Any]:
    """The start of every change to an existing entry, inside its transaction: schema changes held
    off, the entry row locked, If-Match checked against its version. The type and the locales come
    from WRITE_SCHEMAS when the schema version read with the locked entry (after the lock, so a
    schema change committed meanwhile shows) is the one they were parsed at."""
    await locks.lock_schema_shared(conn)
    existing = await repo.get_entry_for_write(conn, entry_id) if RESOURCE_ID.fullmatch(entry_id) else None
    key = None  # (no entry, or no schema_version row: nothing is reused)
    if existing is not None and existing["schema_version"] is not None:
        key = (existing["database_oid"], existing["schema_version"])
    cached = WRITE_SCHEMAS.get(*key, type_id) if key is not None else None
    if cached is not None:
        ct, locales = cached
    else:
        ct = await _type_for_write(conn, type_id)  # a missing type is a 404 of its own
        locales = await load_locales(conn)
        if key is not None:
            WRITE_SCHEMAS.put(*key, ct, locales)
    if existing is None or existing["type"] != type_id:
        raise not_found("entry")
    check_precondition(if_match, existing["version"])
    return ct, locales, await _conformed(conn, ct, locales, existing)


async def _conformed(conn: asyncpg.Connection, ct: ContentType, locales: Locales, row: Any) -> Any:
    """The locked entry in the current schema's shape: while a schema change is still being applied in
    the background, a write first brings its own entry up to date (no new version: nothing the
    editor wrote changed)."""
    data, published = conform(ct, locales, row["data"]), conform(ct, locales, row["published_data"])
    if data == row["data"] and published == row["published_data"]:
        return row
    await schema_repo.set_entry_values(conn, row["id"], data, published)
    return {**dict(row), "data": data, "published_data": published}


async def _entry_of_type(conn: asyncpg.Connection, type_id: str, entry_id: str) -> Any:
    row = await repo.get_entry(conn, entry_id) if RESOURCE_ID.fullmatch(entry_id) else None
    if row is None or row["type"] != type_id:
        raise not_found("entry")
    return row


async def get_entry(conn: asyncpg.Connection, type_id: str, entry_id: str, locale: str | None) -> tuple[dict[str, Any], int]:
    ct = await _type_for_write(conn, type_id)
    locales = await load_locales(conn)
    code = "*" if locale == "*" else resolve_locale(locales, locale)
    row = await _entry_of_type(conn, type_id, entry_id)
    return management_entry(row, ct, code, locales), row["version"]


async def validate_for_publish(
    conn: asyncpg.Connection, ct: ContentType, data: dict[str, Any], locales: Locales, at: str = ""
) -> FieldErrorsProblem:
    problems = publish_problems(ct, data, locales.default, at)
    refs, asset_links = links(ct, data)
    if refs:
        found = await repo.existing_ids(conn, sorted({link["id"] for _, link in refs}))
        for field_id, link in refs:
            if found.get(link["id"]) != link["type"]:
                problems.add(f"{at}/fields/{field_id}", f"references {link['type']} {link['id']!r}, which does not exist")
    if asset_links:
        found_assets = await assets_repo.existing_asset_ids(conn, sorted({a for _, a in asset_links}))
        for field_id, asset_id in asset_links:
            if asset_id not in found_assets:
                problems.add(f"{at}/fields/{field_id}", f"asset {asset_id!r} does not exist")
    return problems


async def publish_entry(
    conn: asyncpg.Connection, type_id: str, entry_id: str, ctx: WriteContext, assets_url: str, if_match: str | None
) -> dict[str, Any]:
    async with conn.transaction():
        ct, locales, existing = await _locked_entry(conn, type_id, entry_id, if_match)
        problems = await validate_for_publish(conn, ct, existing["data"], locales)
        problems.raise_if_any()
        row = await repo.mark_published(conn, entry_id)
        await render_published(conn, row, ct, locales, assets_url)
        await record_write(conn, ctx, "entry.publish", f"entry:{type_id}/{entry_id}", events.ENTRY_PUBLISHED,
                           entry_event(row, ct, locales, row["published_version"]), f"entry:{entry_id}", f"type:{type_id}")
        return management_entry(row, ct, locales.default, locales)


async def unpublish_entry(
    conn: asyncpg.Connection, type_id: str, entry_id: str, ctx: WriteContext, if_match: str | None
) -> dict[str, Any]:
    async with conn.transaction():
        ct, locales, existing = await _locked_entry(conn, type_id, entry_id, if_match)
        if existing["published_version"] is None:
            return management_entry(existing, ct, locales.default, locales)
        row = await repo.mark_unpublished(conn, entry_id)
        await documents_repo.delete_documents(conn, entry_id)
        await documents_repo.replace_references(conn, entry_id, [])
        await record_write(conn, ctx, "entry.unpublish", f"entry:{type_id}/{entry_id}", events.ENTRY_UNPUBLISHED,
                           entry_event(row, ct, locales, existing["published_version"]), f"entry:{entry_id}",
                           f"type:{type_id}")
        return management_entry(row, ct, locales.default, locales)


async def delete_entry(
    conn: asyncpg.Connection, type_id: str, entry_id: str, force: bool, ctx: WriteContext, if_match: str | None
) -> None:
    async with conn.transaction():
        ct, locales, existing = await _locked_entry(conn, type_id, entry_id, if_match)
        if existing["published_version"] is not None and not force:
            raise conflict("the entry is published; unpublish it first or use ?force=true")
        await repo.delete_entry(conn, entry_id)
        await record_write(conn, ctx, "entry.delete", f"entry:{type_id}/{entry_id}", events.ENTRY_DELETED,
                           entry_event(existing, ct, locales), f"entry:{entry_id}", f"type:{type_id}")


async def restore_version(
    conn: asyncpg.Connection, type_id: str, entry_id: str, version: int, ctx: WriteContext, if_match: str | None
) -> dict[str, Any]:
    async with conn.transaction():
        ct, locales, existing = await _locked_entry(conn, type_id, entry_id, if_match)
        old = await repo.get_version(conn, entry_id, version)
        if old is None:
            raise not_found("version")
        with pattern_budget():
            # in the current shape: deleted locales' values and a flipped `localized` as a write leaves them
            data = await run_checks(has_patterns(ct), lambda: conform(ct, locales, still_valid(ct, old["data"])) or {})
        if data == existing["data"]:
            return management_entry(existing, ct, locales.default, locales)
        await _save_unique_if_changed(conn, ct, data, entry_id)
        row = await repo.update_entry_data(conn, entry_id, data)
        await repo.insert_version(conn, entry_id, row["version"], data, "restore", ctx.actor.actor())
        await record_write(conn, ctx, "entry.restore", f"entry:{type_id}/{entry_id}", events.ENTRY_UPDATED,
                           entry_event(row, ct, locales))
        return management_entry(row, ct, locales.default, locales)


async def list_entries(
    conn: asyncpg.Connection, type_id: str, params: Mapping[str, Any], allowed: frozenset[str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`GET /v1/entries/{type}`: a page of latest drafts (management ENTRY) and its meta; `allowed`:
    the caller's content types (a filter through a reference into another is a 403)."""
    types = await load_types(conn)
    ct = types.get(type_id)
    if ct is None:
        raise not_found("content type")
    locales = await load_locales(conn)
    locale = resolve_locale(locales, params.get("locale"))
    query = parse_list_query(
        params, ct, types, locale=locale, default_sort="-updated_at", allow_status=True, allowed=allowed
    )
    page = await fetch_page(conn, query, DraftSource(locales.chain(locale)), "e.*")
    data = []
    for row in page.rows:
        entry = management_entry(row, ct, locale, locales)
        if query.fields is not None:
            entry["fields"] = {k: v for k, v in entry["fields"].items() if k in query.fields}
        data.append(entry)
    return data, {"limit": query.limit, "next_cursor": page.next_cursor, "total": page.total, "total_relation": page.total_relation}


async def list_versions(
    conn: asyncpg.Connection, type_id: str, entry_id: str, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """An entry's versions, newest first; the cursor is the last version of the previous page."""
    if cursor is not None and not (cursor.isdigit() and len(cursor) < 10):
        raise malformed("cursor", "is not a cursor from meta.next_cursor")
    await _type_for_write(conn, type_id)
    await _entry_of_type(conn, type_id, entry_id)
    rows = await repo.list_versions(conn, entry_id, int(cursor) if cursor else None, limit + 1)
    total = await repo.count_versions(conn, entry_id)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = str(rows[-1]["version"]) if more else None
    return [version_json(r) for r in rows], {"limit": limit, "next_cursor": next_cursor, "total": total}


async def get_version(conn: asyncpg.Connection, type_id: str, entry_id: str, version: int) -> dict[str, Any]:
    """One version with its fields as locale maps."""
    ct = await _type_for_write(conn, type_id)
    await _entry_of_type(conn, type_id, entry_id)
    row = await repo.get_version(conn, entry_id, version)
    if row is None:
        raise not_found("version")
    data = version_json(row)
    data["fields"] = version_fields(ct, row["data"], await load_locales(conn))
    return data
