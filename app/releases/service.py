"""Releases: a titled set of entries published together, in one transaction, or not at all."""

from __future__ import annotations

from typing import Any

import asyncpg
from ulid import ULID

from ..audit.service import WriteContext
from ..credentials.schemas import Credential
from ..db import locks
from ..entries import repository as entries_repo
from ..entries import service as entry_service
from ..entries.rules import conform
from ..events import types as events
from ..events.outbox import emit
from ..problems import FieldErrorsProblem, ProblemError, conflict, forbidden, not_found
from ..protection.preconditions import check_precondition
from ..schema.model import (
    RESOURCE_ID,
    TYPE_ID,
)
from ..schema.registry import load_locales, load_types
from ..times import iso
from . import repository as repo

MAX_RELEASE_ENTRIES = 1000
TITLE_MAX = 200


def release_json(row: Any, entries: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "id": row["id"], "title": row["title"], "entries": entries, "status": row["status"],
        "version": row["version"], "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
        "published_at": iso(row["published_at"]),
    }


def parse_release(body: Any) -> tuple[str, list[dict[str, str]]]:
    """(title, entries) from a POST/PUT body, or 422 with a pointer for every problem."""
    problems = FieldErrorsProblem()
    if not isinstance(body, dict):
        problems.add("", "must be a JSON object with \"title\" and \"entries\"")
        problems.raise_if_any()
    for key in body:
        if key not in {"title", "entries", "id", "status", "version", "created_at", "updated_at", "published_at"}:
            problems.add(f"/{key}", "unknown property")
    title = body.get("title")
    if not isinstance(title, str) or not title.strip() or len(title) > TITLE_MAX or "\x00" in title:
        problems.add("/title", f"is required: a string of 1 to {TITLE_MAX} characters")
    raw = body.get("entries", [])
    entries: list[dict[str, str]] = []
    if not isinstance(raw, list):
        problems.add("/entries", "must be a list of {\"type\", \"id\"}")
        raw = []
    elif len(raw) > MAX_RELEASE_ENTRIES:
        problems.add("/entries", f"at most {MAX_RELEASE_ENTRIES} entries")
        raw = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        at = f"/entries/{i}"
        if not isinstance(item, dict):
            problems.add(at, "must be an object {\"type\", \"id\"}")
            continue
        bad = False
        for key in item:
            if key not in {"type", "id"}:
                problems.add(f"{at}/{key}", "unknown property")
                bad = True
        type_id, entry_id = item.get("type"), item.get("id")
        if not isinstance(type_id, str) or not TYPE_ID.fullmatch(type_id):
            problems.add(f"{at}/type", "is required: a content type id")
            bad = True
        if not isinstance(entry_id, str) or not RESOURCE_ID.fullmatch(entry_id):
            problems.add(f"{at}/id", "is required: an id matching [A-Za-z0-9_-]{1,64}")
            bad = True
        if bad:
            continue
        assert isinstance(type_id, str) and isinstance(entry_id, str)
        if entry_id in seen:
            problems.add(f"{at}/id", "this entry is already in the release")
            continue
        seen.add(entry_id)
        entries.append({"type": type_id, "id": entry_id})
    problems.raise_if_any()
    assert isinstance(title, str)
    return title, entries


def _check_access(ctx: WriteContext, entries: list[dict[str, str]]) -> None:
    for entry in entries:
        ctx.actor.require_type(entry["type"])  # 403


async def _check_entries_exist(conn: asyncpg.Connection, entries: list[dict[str, str]]) -> None:
    found = await entries_repo.existing_ids(conn, [e["id"] for e in entries])
    problems = FieldErrorsProblem()
    for i, entry in enumerate(entries):
        if found.get(entry["id"]) != entry["type"]:
            problems.add(f"/entries/{i}", f"no {entry['type']} entry with id {entry['id']!r}")
    problems.raise_if_any()


async def create_release(conn: asyncpg.Connection, body: Any, ctx: WriteContext) -> dict[str, Any]:
    title, entries = parse_release(body)
    _check_access(ctx, entries)
    release_id = str(ULID())
    async with conn.transaction():
        await _check_entries_exist(conn, entries)
        row = await repo.insert_release(conn, release_id, title)
        await repo.replace_entries(conn, release_id, entries)
        await ctx.audit(conn, "release.create", f"release:{release_id}")
    return release_json(row, entries)


def visible(actor: Credential, entries: list[dict[str, str]]) -> bool:
    """A credential limited to some content types sees a release only if it holds every type in it
    (lists leave the others out; addressed directly they are a 403, as other types are)."""
    return all(actor.may_use_type(entry["type"]) for entry in entries)


async def get(conn: asyncpg.Connection, release_id: str, actor: Credential) -> dict[str, Any]:
    row = await repo.get_release(conn, release_id)
    if row is None:
        raise not_found("release")
    entries = (await repo.release_entries(conn, [release_id]))[release_id]
    if not visible(actor, entries):
        raise forbidden("this release holds entries of content types this credential may not use")
    return release_json(row, entries)


async def list_page(
    conn: asyncpg.Connection, after: str | None, limit: int, actor: Credential
) -> tuple[list[dict[str, Any]], str | None, int]:
    allowed = sorted(actor.content_types) if actor.content_types is not None else None
    rows = await repo.list_releases(conn, after, limit + 1, allowed)
    more = len(rows) > limit
    rows = rows[:limit]
    entries = await repo.release_entries(conn, [r["id"] for r in rows])
    total = await repo.count_releases(conn, allowed)
    return [release_json(r, entries[r["id"]]) for r in rows], (rows[-1]["id"] if more else None), total


async def _locked_release(
    conn: asyncpg.Connection, release_id: str, ctx: WriteContext, if_match: str | None
) -> tuple[asyncpg.Record, list[dict[str, str]]]:
    """Inside a transaction: the release row locked, If-Match checked, the credential allowed every
    type among its entries; (row, entries)."""
    existing = await repo.get_release(conn, release_id, for_update=True)
    if existing is None:
        raise not_found("release")
    entries = (await repo.release_entries(conn, [release_id]))[release_id]
    _check_access(ctx, entries)
    check_precondition(if_match, existing["version"])
    return existing, entries


async def put_release(
    conn: asyncpg.Connection, release_id: str, body: Any, ctx: WriteContext, if_match: str | None
) -> dict[str, Any]:
    title, entries = parse_release(body)
    _check_access(ctx, entries)
    async with conn.transaction():
        existing, _ = await _locked_release(conn, release_id, ctx, if_match)
        if existing["status"] != "open":
            raise conflict("the release is published; it can no longer change")
        await _check_entries_exist(conn, entries)
        row = await repo.update_title(conn, release_id, title)
        await repo.replace_entries(conn, release_id, entries)
        await ctx.audit(conn, "release.update", f"release:{release_id}")
    return release_json(row, entries)


async def delete_release(
    conn: asyncpg.Connection, release_id: str, ctx: WriteContext, if_match: str | None
) -> None:
    async with conn.transaction():
        await _locked_release(conn, release_id, ctx, if_match)
        pending = await repo.pending_actions(conn, release_id)
        if pending:
            raise conflict(f"{pending} pending scheduled action(s) publish this release; cancel them first")
        await repo.delete_release(conn, release_id)
        await ctx.audit(conn, "release.delete", f"release:{release_id}")


def _summary(problem: FieldErrorsProblem | ProblemError) -> str:
    items = problem.items if isinstance(problem, FieldErrorsProblem) else (problem.errors or [])
    if not items:
        return problem.detail if isinstance(problem, ProblemError) else "is invalid"
    parts = []
    for item in items:
        where = item.get("pointer") or item.get("parameter") or ""
        parts.append(f"{where.lstrip('/')}: {item['detail']}" if where else item["detail"])
    return "; ".join(parts)


async def publish_release(
    conn: asyncpg.Connection, release_id: str, ctx: WriteContext, assets_url: str, if_match: str | None,
) -> dict[str, Any]:
    """Every entry published in one transaction, or none: 422 with one error per invalid entry."""
    async with conn.transaction():
        # Shared schema lock first, as every entry write takes it: a release publish and a content
        # type change always lock in the same order.
        await locks.lock_schema_shared(conn)
        existing, entries = await _locked_release(conn, release_id, ctx, if_match)
        if existing["status"] != "open":
            raise conflict("the release is already published")
        types = await load_types(conn)
        locales = await load_locales(conn)
        rows = {r["id"]: r for r in await entries_repo.get_entries(conn, [e["id"] for e in entries], for_update=True)}
        errors: list[dict[str, str]] = []
        for i, entry in enumerate(entries):
            row = rows.get(entry["id"])
            ct = types.get(entry["type"])
            if row is None or ct is None or row["type"] != entry["type"]:
                errors.append({"pointer": f"/entries/{i}", "detail": f"no {entry['type']} entry with id {entry['id']!r}"})
                continue
            problems = await entry_service.validate_for_publish(conn, ct, conform(ct, locales, row["data"]) or {}, locales)
            if problems:
                errors.append({"pointer": f"/entries/{i}", "detail": _summary(problems)})
        if errors:
            raise ProblemError(
                422, "validation",
                f"{len(errors)} of {len(entries)} entries cannot be published; nothing was published",
                errors=errors,
            )
        for i, entry in enumerate(entries):
            try:
                await entry_service.publish_entry(conn, entry["type"], entry["id"], ctx, assets_url, None)
            except ProblemError as exc:
                raise ProblemError(
                    422, "validation", f"/entries/{i}: {exc.detail}; nothing was published",
                    errors=[{"pointer": f"/entries/{i}", "detail": _summary(exc)}],
                ) from None
        row = await repo.mark_published(conn, release_id)
        await ctx.audit(conn, "release.publish", f"release:{release_id}")
        await emit(conn, events.RELEASE_PUBLISHED, {"id": release_id, "entries": entries})
    return release_json(row, entries)
