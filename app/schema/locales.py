"""Locales: create, change (fallback chains, the default) and delete, each with its re-render."""

from __future__ import annotations

from typing import Any

import asyncpg

from ..audit.service import WriteContext
from ..db import locks
from ..events import types as events
from ..events.outbox import emit, invalidate
from ..problems import FieldErrorsProblem, conflict, forbidden, invalid, not_found
from ..times import iso
from . import repository as repo
from . import rerenders
from .model import LOCALE_CODE
from .registry import load_locales


def locale_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "code": row["code"], "name": row["name"], "fallback": row["fallback"], "default": row["is_default"],
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
    }


def _require_every_type(ctx: WriteContext) -> None:
    """Locales apply to every content type: only a credential not limited to some may change them."""
    if ctx.actor.content_types is not None:
        raise forbidden("locales apply to every content type: a credential limited to some cannot change them")


async def put_locale(
    conn: asyncpg.Connection, code: str, body: Any, ctx: WriteContext, assets_url: str,
    inline_entries: int = rerenders.INLINE_ENTRIES,
) -> tuple[dict[str, Any], bool]:
    _require_every_type(ctx)
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
        await locks.lock_schema(conn)
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
        if code not in locales.rows and await rerenders.locale_still_dropping(conn, code, inline_entries):
            raise conflict(f"locale {code!r} was deleted and its values are still being dropped in the background; "
                           "create it again when the content types' rendering.status is done")
        was_default = locales.rows.get(code, {}).get("is_default", False)
        if was_default and make_default is False and "default" in body:
            raise invalid("/default", "move the default by making another locale default")
        if make_default and not was_default and await rerenders.background_pending(conn, inline_entries):
            # an unapplied `localized` flip moves values to or from the default locale as it is then
            raise conflict("a content type change is still being applied in the background; "
                           "change the default locale when the content types' rendering.status is done")
        row, created = await repo.upsert_locale(conn, code, name, fallback)
        if make_default and not was_default:
            await repo.set_default_locale(conn, code)
        row = next(r for r in await repo.all_locales(conn) if r["code"] == code)
        await rerenders.rerender_every_type(conn, assets_url, inline_entries)
        await ctx.audit(conn, "locale.save", f"locale:{code}")
        await emit(conn, events.LOCALE_SAVED, {"code": code})
        await invalidate(conn, "schema", "locales")
    return locale_json(dict(row)), created


async def delete_locale(
    conn: asyncpg.Connection, code: str, force: bool, ctx: WriteContext, assets_url: str,
    inline_entries: int = rerenders.INLINE_ENTRIES,
) -> None:
    _require_every_type(ctx)
    async with conn.transaction():
        await locks.lock_schema(conn)
        locales = await load_locales(conn)
        if code not in locales.rows:
            raise not_found("locale")
        if locales.default == code:
            raise conflict("the default locale cannot be deleted; make another locale the default first")
        if not force:
            count = await repo.count_entries_with_locale(conn, code)
            if count:
                raise conflict(f"{count} entries have values in {code}; use ?force=true", blocking_entries=count)
        await repo.delete_locale(conn, code)
        # Its values, documents and files go with every type's re-render (here for small types).
        await rerenders.rerender_every_type(conn, assets_url, inline_entries, dropped_locale=code)
        await ctx.audit(conn, "locale.delete", f"locale:{code}")
        await emit(conn, events.LOCALE_DELETED, {"code": code})
        await invalidate(conn, "schema", "locales")


async def list_locales(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [locale_json(dict(r)) for r in await repo.all_locales(conn)]
