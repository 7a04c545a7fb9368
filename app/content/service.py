"""Content types, locales and entries: the rules, each write in one transaction with its event."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from ulid import ULID
from unidecode import unidecode

from .. import render
from ..audit.service import record as audit
from ..credentials.schemas import Credential
from ..events.outbox import INVALIDATE_CHANNEL, OUTBOX_CHANNEL, emit, invalidate
from ..problems import FieldErrorsProblem, ProblemError, conflict, invalid, malformed, not_found
from . import repository as repo
from .schemas import (
    LINK_TYPES,
    LOCALE_CODE,
    NON_LOCALIZED,
    RESOURCE_ID,
    SLUG_MAX,
    TYPE_ID,
    UNIQUE_TYPES,
    ContentType,
    Field,
    check_value,
    content_type_from_row,
    iso,
    parse_content_type,
    values_equal_for_unique,
)

# ------------------------------------------------------------------------------------------------
# locales


@dataclass(frozen=True)
class Locales:
    rows: dict[str, dict[str, Any]]
    default: str

    def chain(self, code: str) -> list[str]:
        chain = [code]
        seen = {code}
        current = self.rows.get(code, {}).get("fallback")
        while current and current not in seen and current in self.rows:
            chain.append(current)
            seen.add(current)
            current = self.rows[current].get("fallback")
        return chain

    @property
    def codes(self) -> list[str]:
        return list(self.rows)


def locales_from_rows(rows: list[asyncpg.Record]) -> Locales:
    data = {r["code"]: dict(r) for r in rows}
    default = next((r["code"] for r in rows if r["is_default"]), rows[0]["code"] if rows else "en")
    return Locales(data, default)


def locale_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "code": row["code"], "name": row["name"], "fallback": row["fallback"], "default": row["is_default"],
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
    }


class ContentTypeRegistry:
    """Per-process cache of content types and locales; dropped on the `schema` invalidation tag."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._types: dict[str, ContentType] | None = None
        self._locales: Locales | None = None
        self.generation = 0
        self._last_recheck = 0.0

    def invalidate(self, tags: list[str] | None) -> None:
        if tags is None or "schema" in tags:
            self._types = None
            self._locales = None
            self.generation += 1

    def _may_recheck(self) -> bool:
        """At most a few re-reads a second, however many unknown names clients send."""
        now = time.monotonic()
        if now - self._last_recheck < 0.2:
            return False
        self._last_recheck = now
        return True

    async def types(self) -> dict[str, ContentType]:
        if self._types is None:
            generation = self.generation
            rows = await repo.all_types(self.pool)
            types = {r["id"]: content_type_from_row(r) for r in rows}
            if generation == self.generation:
                self._types = types
            return types
        return self._types

    async def get(self, type_id: str) -> ContentType | None:
        types = await self.types()
        found = types.get(type_id)
        if found is None and self._types is not None and self._may_recheck():
            # A type created a moment ago may not have reached us yet: look once more.
            self._types = None
            found = (await self.types()).get(type_id)
        return found

    async def locales(self, expect: str | None = None) -> Locales:
        """All locales; `expect`: a code a client asked for, worth one fresh look if unknown."""
        if self._locales is not None and expect and expect not in self._locales.rows and self._may_recheck():
            self._locales = None
        if self._locales is None:
            generation = self.generation
            locales = locales_from_rows(await repo.all_locales(self.pool))
            if generation == self.generation:
                self._locales = locales
            return locales
        return self._locales


async def load_types(conn: asyncpg.Connection) -> dict[str, ContentType]:
    return {r["id"]: content_type_from_row(r) for r in await repo.all_types(conn)}


async def load_locales(conn: asyncpg.Connection) -> Locales:
    return locales_from_rows(await repo.all_locales(conn))


def resolve_locale(locales: Locales, requested: str | None) -> str:
    if requested is None or requested == "":
        return locales.default
    if requested not in locales.rows:
        raise malformed("locale", f"unknown locale {requested!r}")
    return requested


@dataclass
class WriteContext:
    actor: Credential
    request_id: str | None
    ip: str | None

    async def audit(self, conn: asyncpg.Connection, action: str, target: str) -> None:
        await audit(conn, actor=self.actor.actor(), action=action, target=target, request_id=self.request_id, ip=self.ip)


async def record_write(
    conn: asyncpg.Connection, ctx: WriteContext, action: str, target: str, event_type: str,
    payload: dict[str, Any], *tags: str,
) -> None:
    """The bookkeeping of an entry write, in one round trip: its audit row, its outbox event (and
    the relay's wake-up) and the invalidation of delivery caches by `tags`, all at commit."""
    invalidation = " ".join(tags)
    if len(invalidation) > 7900:  # NOTIFY payload limit: let `invalidate` split it
        await ctx.audit(conn, action, target)
        await emit(conn, event_type, payload)
        await invalidate(conn, *tags)
        return
    await conn.execute(
        "WITH a AS (INSERT INTO audit_log (actor, action, target, request_id, ip, outcome) "
        "           VALUES ($1, $2, $3, $4, $5, 'success')), "
        "     e AS (INSERT INTO outbox_events (id, type, payload) VALUES ($6, $7, $8) RETURNING id) "
        "SELECT pg_notify($9, e.id), CASE WHEN $10 <> '' THEN pg_notify($11, $10) END FROM e",
        ctx.actor.actor(), action, target, ctx.request_id, ctx.ip, str(ULID()), event_type, payload,
        OUTBOX_CHANNEL, invalidation, INVALIDATE_CHANNEL,
    )


# ------------------------------------------------------------------------------------------------
# publishing: the one place published_documents rows are written


def published_rows(
    entry: Any, ct: ContentType, locales: Locales, assets: dict[str, Any]
) -> tuple[list[tuple[Any, ...]], list[str]]:
    """The published_documents rows (one per locale, without the entry id) and the referenced ids
    of a published entry; `assets` holds at least the assets it links to."""
    docs = []
    for code in locales.codes:
        rendered = render.render_entry(entry, ct, code, locales.chain(code), assets)
        docs.append((
            code, ct.id, entry["published_version"], rendered.slug, rendered.body, rendered.etag, rendered.vals,
            rendered.search_text, entry["published_at"], entry["updated_at"], entry["created_at"],
        ))
    refs, _ = _links(ct, entry["published_data"])
    return docs, sorted({link["id"] for _, link in refs})


async def render_published(
    conn: asyncpg.Connection, entry: Any, ct: ContentType, locales: Locales, assets_url: str
) -> None:
    assets = await _assets_for(conn, ct, entry["published_data"], assets_url)
    docs, targets = published_rows(entry, ct, locales, assets)
    await repo.replace_documents(conn, entry["id"], docs)
    await repo.replace_references(conn, entry["id"], targets)


async def _assets_for(conn: asyncpg.Connection, ct: ContentType, data: dict[str, Any], assets_url: str) -> dict[str, Any]:
    ids = render.asset_ids(ct, data)
    if not ids:
        return {}
    return {row["id"]: render.asset_json(row, assets_url) for row in await repo.get_assets(conn, sorted(ids))}


async def rerender_all(conn: asyncpg.Connection, type_id: str | None, assets_url: str) -> int:
    """Re-render published documents (after a schema or locale change)."""
    types = await load_types(conn)
    locales = await load_locales(conn)
    rows = await (repo.published_entries_of_type(conn, type_id) if type_id else repo.all_published_entries(conn))
    for row in rows:
        await render_published(conn, row, types[row["type"]], locales, assets_url)
    return len(rows)


# ------------------------------------------------------------------------------------------------
# content types


async def put_content_type(
    conn: asyncpg.Connection, type_id: str, body: Any, ctx: WriteContext, assets_url: str,
    if_match: str | None = None,
) -> tuple[ContentType, bool]:
    if not TYPE_ID.fullmatch(type_id):
        raise invalid("/id", "content type ids match ^[a-z][a-z0-9_]{0,63}$")
    async with conn.transaction():
        # Serialize schema changes: a content type change and entry writes must not interleave.
        await conn.execute("SELECT pg_advisory_xact_lock(7261002)")
        types = await load_types(conn)
        ct, errors = parse_content_type(type_id, body, set(types))
        errors.raise_if_any()
        assert ct is not None
        existing = types.get(type_id)
        check_precondition(if_match, existing.version if existing else None)
        stored = {
            "name": ct.name, "description": ct.description, "display_field": ct.display_field,
            "fields": [f.to_json() for f in ct.fields],
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
        from .query import index_ddl

        for field in saved.fields:
            if field.indexed:
                await conn.execute(index_ddl(type_id, field.id))
        if not created:
            await rerender_all(conn, type_id, assets_url)
        await ctx.audit(conn, "content_type.save", f"content_type:{type_id}")
        await emit(conn, "content_type.saved", {"id": type_id, "version": saved.version})
        await invalidate(conn, "schema", f"type:{type_id}")
    return saved, created


async def _check_type_change(conn: asyncpg.Connection, old: ContentType, new: ContentType, body: Any) -> None:
    """Changes existing values cannot satisfy → 409 with blocking_entries and pointers."""
    problems = FieldErrorsProblem()
    blocking: set[str] = set()
    positions = {f.get("id"): i for i, f in enumerate(body.get("fields", [])) if isinstance(f, dict)}
    rows = await conn.fetch("SELECT id, data FROM entries WHERE type = $1", old.id)
    for field in new.fields:
        before = old.field(field.id)
        if before is None:
            continue
        at = f"/fields/{positions.get(field.id, 0)}"
        structural = (
            before.type != field.type or before.list != field.list
            or (field.type == "reference" and set(field.to or []) != set(before.to or []))
            or (field.type == "enum" and set(field.values or []) != set(before.values or []))
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
                check_value(field, value, at, errors)
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
    if problems:
        problems.raise_if_any(409, "conflict", blocking_entries=len(blocking))


async def _migrate_entries(conn: asyncpg.Connection, old: ContentType, new: ContentType) -> None:
    """Removed fields drop their values; a localized flip moves values between `_` and the default locale."""
    removed = [f.id for f in old.fields if new.field(f.id) is None]
    flipped = [f for f in new.fields if (o := old.field(f.id)) is not None and o.localized != f.localized]
    if not removed and not flipped:
        return
    default = (await load_locales(conn)).default
    rows = await conn.fetch("SELECT id, data, published_data FROM entries WHERE type = $1 FOR UPDATE", old.id)
    for row in rows:
        updated: list[dict[str, Any] | None] = []
        for data in (row["data"], row["published_data"]):
            if data is None:
                updated.append(None)
                continue
            data = {k: v for k, v in data.items() if k not in removed}
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
        await conn.execute(
            "UPDATE entries SET data = $2, published_data = $3 WHERE id = $1", row["id"], updated[0], updated[1]
        )
    if removed:
        await conn.execute(
            "DELETE FROM entry_unique_values WHERE type = $1 AND field = ANY($2::text[])", old.id, removed
        )


async def delete_content_type(conn: asyncpg.Connection, type_id: str, ctx: WriteContext) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(7261002)")
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
        await emit(conn, "content_type.deleted", {"id": type_id})
        await invalidate(conn, "schema", f"type:{type_id}")


# ------------------------------------------------------------------------------------------------
# locales


async def put_locale(
    conn: asyncpg.Connection, code: str, body: Any, ctx: WriteContext, assets_url: str
) -> tuple[dict[str, Any], bool]:
    if not LOCALE_CODE.fullmatch(code) or len(code) > 35:
        raise invalid("/code", "must be a BCP 47 code like en or de-AT")
    problems = FieldErrorsProblem()
    if not isinstance(body, dict):
        problems.add("", "must be a JSON object")
        problems.raise_if_any()
    for key in body:
        if key not in {"name", "fallback", "default", "code", "created_at", "updated_at"}:
            problems.add(f"/{key}", "unknown property")
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 100 or "\x00" in name:
        problems.add("/name", "is required: a string of 1 to 100 characters")
    fallback = body.get("fallback")
    if fallback is not None and not isinstance(fallback, str):
        problems.add("/fallback", "must be a locale code or null")
    make_default = body.get("default", False)
    if not isinstance(make_default, bool):
        problems.add("/default", "must be true or false")
    problems.raise_if_any()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(7261002)")
        locales = await load_locales(conn)
        if fallback is not None:
            if fallback not in locales.rows:
                raise invalid("/fallback", f"unknown locale {fallback!r}")
            # Walk the chain from the fallback: reaching `code` again is a cycle.
            current: str | None = fallback
            seen: set[str] = set()
            while current is not None and current not in seen:
                if current == code:
                    raise invalid("/fallback", "this fallback would make a cycle")
                seen.add(current)
                current = locales.rows.get(current, {}).get("fallback")
        was_default = locales.rows.get(code, {}).get("is_default", False)
        if was_default and make_default is False and "default" in body:
            raise invalid("/default", "move the default by making another locale default")
        row, created = await repo.upsert_locale(conn, code, name, fallback)
        if make_default and not was_default:
            await repo.set_default_locale(conn, code)
        row = next(r for r in await repo.all_locales(conn) if r["code"] == code)
        await rerender_all(conn, None, assets_url)
        await ctx.audit(conn, "locale.save", f"locale:{code}")
        await emit(conn, "locale.saved", {"code": code})
        await invalidate(conn, "schema", "locales")
    return locale_json(dict(row)), created


async def delete_locale(conn: asyncpg.Connection, code: str, force: bool, ctx: WriteContext, assets_url: str) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(7261002)")
        locales = await load_locales(conn)
        if code not in locales.rows:
            raise not_found("locale")
        if locales.default == code:
            raise conflict("the default locale cannot be deleted; make another locale the default first")
        if not force:
            count = await repo.count_entries_with_locale(conn, code)
            if count:
                raise conflict(f"{count} entries have values in {code}; use ?force=true", blocking_entries=count)
        await repo.drop_locale_values(conn, code)
        await repo.delete_locale(conn, code)
        await conn.execute("DELETE FROM published_documents WHERE locale = $1", code)
        await rerender_all(conn, None, assets_url)
        await ctx.audit(conn, "locale.delete", f"locale:{code}")
        await emit(conn, "locale.deleted", {"code": code})
        await invalidate(conn, "schema", "locales")


# ------------------------------------------------------------------------------------------------
# entries


def check_precondition(if_match: str | None, version: int | None) -> None:
    """If-Match with a version ETag: a stale one → 412 and nothing changes."""
    if if_match is None:
        return
    candidates = [c.strip() for c in if_match.split(",")]
    if "*" in candidates and version is not None:
        return
    wanted = {c.removeprefix("W/").strip('"') for c in candidates}
    if version is None or str(version) not in wanted:
        raise ProblemError(
            412, "precondition-failed",
            f"If-Match {if_match} does not match the current version {version if version is not None else '(none)'}",
        )


def slugify(text: str) -> str:
    ascii_text = unidecode(text).lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    return slug[:SLUG_MAX].rstrip("-")


def _fields_input(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("", "must be a JSON object with \"fields\"")
    unknown = set(body) - {"fields", "id", "type", "locale", "version"}
    if unknown:
        raise invalid(f"/{sorted(unknown)[0]}", "unknown property")
    fields = body.get("fields", {})
    if not isinstance(fields, dict):
        raise invalid("/fields", "must be an object")
    return fields


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _validate_fields(
    ct: ContentType, given: dict[str, Any], errors: FieldErrorsProblem
) -> dict[str, Any]:
    """Validated, stored form of the given field values (None = clear)."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        field = ct.field(key) if isinstance(key, str) else None
        if field is None:
            errors.add(f"/fields/{key}", "unknown field")
            continue
        if value is None or (field.list and value == []):
            out[key] = None
            continue
        checked = check_value(field, value, f"/fields/{key}", errors)
        if checked is not None:
            out[key] = checked
    return out


def _apply(data: dict[str, Any], ct: ContentType, values: dict[str, Any], locale: str) -> dict[str, Any]:
    data = {k: dict(v) for k, v in data.items()}
    for key, value in values.items():
        field = ct.field(key)
        assert field is not None
        slot = locale if field.localized else NON_LOCALIZED
        per_locale = data.setdefault(key, {})
        if value is None or value == "":
            per_locale.pop(slot, None)
        else:
            per_locale[slot] = value
        if not per_locale:
            data.pop(key)
    return data


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


def _unique_rows(ct: ContentType, data: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for field in ct.fields:
        if field.type not in UNIQUE_TYPES or not (field.unique or field.type == "slug"):
            continue
        for locale, value in (data.get(field.id) or {}).items():
            rows.append((field.id, locale, values_equal_for_unique(value)))
    return rows


async def _save_unique(conn: asyncpg.Connection, ct: ContentType, data: dict[str, Any], entry_id: str) -> None:
    rows = _unique_rows(ct, data)
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


def management_entry(row: Any, ct: ContentType, locale: str, locales: Locales) -> dict[str, Any]:
    data = row["data"]
    fields: dict[str, Any] = {}
    for field in ct.fields:
        per_locale = data.get(field.id) or {}
        if locale == "*":
            if field.localized:
                fields[field.id] = dict(per_locale)
            else:
                value = per_locale.get(NON_LOCALIZED)
                fields[field.id] = {locales.default: value} if value is not None else {}
            continue
        value = per_locale.get(locale if field.localized else NON_LOCALIZED)
        fields[field.id] = value if value is not None else ([] if field.list else None)
    if row["published_version"] is None:
        status = "draft"
    elif row["published_version"] == row["version"]:
        status = "published"
    else:
        status = "changed"
    document = render.entry_document(
        entry_id=row["id"], type_id=row["type"], locale=locale, version=row["version"],
        created_at=row["created_at"], updated_at=row["updated_at"], published_at=row["published_at"], fields=fields,
    )
    document.update(
        status=status, published_version=row["published_version"], first_published_at=iso(row["first_published_at"])
    )
    return document


def entry_event(row: Any, ct: ContentType, locales: Locales, version: int | None = None) -> dict[str, Any]:
    return {"id": row["id"], "type": ct.id, "version": version or row["version"], "locales": locales.codes}


async def _lock_schema_shared(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock_shared(7261002)")


async def _type_for_write(conn: asyncpg.Connection, type_id: str) -> ContentType:
    row = await repo.get_type(conn, type_id)
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
    given = _fields_input(body)
    if entry_id is not None and not RESOURCE_ID.fullmatch(entry_id):
        raise invalid("/id", "ids match [A-Za-z0-9_-]{1,64}")
    async with conn.transaction():
        await _lock_schema_shared(conn)
        ct = await _type_for_write(conn, type_id)
        locales = await load_locales(conn)
        code = resolve_locale(locales, locale)
        errors = FieldErrorsProblem()
        values = _validate_fields(ct, given, errors)
        errors.raise_if_any()
        new_id = entry_id or str(ULID())
        data = _apply({}, ct, values, code)
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
        await record_write(conn, ctx, "entry.create", f"entry:{type_id}/{new_id}", "entry.created",
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
    given = _fields_input(body)
    async with conn.transaction():
        ct, locales, existing = await _locked_entry(conn, type_id, entry_id, if_match)
        code = resolve_locale(locales, locale)
        if patch:
            current = management_entry(existing, ct, code, locales)["fields"]
            merged = {}
            for key, value in given.items():
                field = ct.field(key) if isinstance(key, str) else None
                if field is not None and field.type == "json" and value is not None:
                    merged[key] = merge_patch(current.get(key), value)
                else:
                    merged[key] = value
            given = merged
        else:
            # PUT replaces this locale's localized fields and every non-localized field.
            given = {**{f.id: None for f in ct.fields}, **given}
        errors = FieldErrorsProblem()
        values = _validate_fields(ct, given, errors)
        errors.raise_if_any()
        data = _apply(existing["data"], ct, values, code)
        await _fill_slugs(conn, ct, data, code, entry_id, locales)
        if data == existing["data"]:
            return management_entry(existing, ct, code, locales)
        await _save_unique(conn, ct, data, entry_id)
        row = await repo.update_entry_data(conn, entry_id, data)
        await repo.insert_version(conn, entry_id, row["version"], data, "update", ctx.actor.actor())
        await record_write(conn, ctx, "entry.update", f"entry:{type_id}/{entry_id}", "entry.updated",
                           entry_event(row, ct, locales))
        return management_entry(row, ct, code, locales)


async def _locked_entry(
    conn: asyncpg.Connection, type_id: str, entry_id: str, if_match: str | None
) -> tuple[ContentType, Locales, Any]:
    """The start of every change to an existing entry, inside its transaction: schema changes held
    off, the entry row locked, If-Match checked against its version."""
    await _lock_schema_shared(conn)
    ct = await _type_for_write(conn, type_id)
    locales = await load_locales(conn)
    existing = await _entry_of_type(conn, type_id, entry_id, for_update=True)
    check_precondition(if_match, existing["version"])
    return ct, locales, existing


async def _entry_of_type(conn: asyncpg.Connection, type_id: str, entry_id: str, *, for_update: bool = False) -> Any:
    row = await repo.get_entry(conn, entry_id, for_update=for_update) if RESOURCE_ID.fullmatch(entry_id) else None
    if row is None or row["type"] != type_id:
        raise not_found("entry")
    return row


async def get_entry(conn: asyncpg.Connection, type_id: str, entry_id: str, locale: str | None) -> tuple[dict[str, Any], int]:
    ct = await _type_for_write(conn, type_id)
    locales = await load_locales(conn)
    code = "*" if locale == "*" else resolve_locale(locales, locale)
    row = await _entry_of_type(conn, type_id, entry_id)
    return management_entry(row, ct, code, locales), row["version"]


def _publish_problems(ct: ContentType, data: dict[str, Any], default: str, at: str = "") -> FieldErrorsProblem:
    problems = FieldErrorsProblem()
    for field in ct.fields:
        if not field.required:
            continue
        per_locale = data.get(field.id) or {}
        value = per_locale.get(default if field.localized else NON_LOCALIZED)
        if value is None or value == "" or value == []:
            problems.add(f"{at}/fields/{field.id}", f"is required (in the default locale {default})")
    return problems


def _links(ct: ContentType, data: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, str]]]:
    refs: list[tuple[str, dict[str, Any]]] = []
    assets: list[tuple[str, str]] = []
    for field in ct.fields:
        if field.type not in LINK_TYPES:
            continue
        for value in (data.get(field.id) or {}).values():
            for link in value if isinstance(value, list) else [value]:
                if field.type == "reference":
                    refs.append((field.id, link))
                else:
                    assets.append((field.id, link["id"]))
    return refs, assets


async def validate_for_publish(
    conn: asyncpg.Connection, ct: ContentType, data: dict[str, Any], locales: Locales, at: str = ""
) -> FieldErrorsProblem:
    problems = _publish_problems(ct, data, locales.default, at)
    refs, asset_links = _links(ct, data)
    if refs:
        found = await repo.existing_ids(conn, sorted({link["id"] for _, link in refs}))
        for field_id, link in refs:
            if found.get(link["id"]) != link["type"]:
                problems.add(f"{at}/fields/{field_id}", f"references {link['type']} {link['id']!r}, which does not exist")
    if asset_links:
        found_assets = await repo.existing_asset_ids(conn, sorted({a for _, a in asset_links}))
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
        await record_write(conn, ctx, "entry.publish", f"entry:{type_id}/{entry_id}", "entry.published",
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
        await repo.delete_documents(conn, entry_id)
        await repo.replace_references(conn, entry_id, [])
        await record_write(conn, ctx, "entry.unpublish", f"entry:{type_id}/{entry_id}", "entry.unpublished",
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
        await record_write(conn, ctx, "entry.delete", f"entry:{type_id}/{entry_id}", "entry.deleted",
                           entry_event(existing, ct, locales), f"entry:{entry_id}", f"type:{type_id}")


def version_fields(ct: ContentType, data: dict[str, Any], locales: Locales) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, per_locale in data.items():
        field = ct.field(key)
        if field is not None and not field.localized:
            fields[key] = {locales.default: per_locale.get(NON_LOCALIZED)}
        else:
            fields[key] = dict(per_locale)
    return fields


def version_json(row: Any) -> dict[str, Any]:
    return {"version": row["version"], "created_at": iso(row["created_at"]), "actor": row["actor"], "action": row["action"]}


async def restore_version(
    conn: asyncpg.Connection, type_id: str, entry_id: str, version: int, ctx: WriteContext, if_match: str | None
) -> dict[str, Any]:
    async with conn.transaction():
        ct, locales, existing = await _locked_entry(conn, type_id, entry_id, if_match)
        old = await repo.get_version(conn, entry_id, version)
        if old is None:
            raise not_found("version")
        # Values the current schema no longer has, or no longer accepts, are dropped.
        data: dict[str, Any] = {}
        for key, per_locale in old["data"].items():
            field = ct.field(key)
            if field is None:
                continue
            kept = {}
            for code, value in per_locale.items():
                scratch = FieldErrorsProblem()
                checked = check_value(field, value, "", scratch)
                if not scratch and checked is not None:
                    kept[code] = checked
            if kept:
                data[key] = kept
        if data == existing["data"]:
            return management_entry(existing, ct, locales.default, locales)
        await _save_unique(conn, ct, data, entry_id)
        row = await repo.update_entry_data(conn, entry_id, data)
        await repo.insert_version(conn, entry_id, row["version"], data, "restore", ctx.actor.actor())
        await record_write(conn, ctx, "entry.restore", f"entry:{type_id}/{entry_id}", "entry.updated",
                           entry_event(row, ct, locales))
        return management_entry(row, ct, locales.default, locales)


def parse_datetime_param(name: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise malformed(name, "must be an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise malformed(name, "needs a time zone offset")
    return parsed


__all__ = ["Field"]
