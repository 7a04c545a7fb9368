"""Releases: a titled set of entries published together, in one transaction, or not at all."""

from __future__ import annotations

from typing import Any

import asyncpg
from ulid import ULID

from ..credentials.auth import require_type_access
from ..events.outbox import emit
from ..problems import FieldErrorsProblem, ProblemError, conflict, not_found
from . import repository as repo
from . import service
from .schemas import RESOURCE_ID, TYPE_ID, iso

MAX_RELEASE_ENTRIES = 1000
TITLE_MAX = 200
# The schema lock service.py takes (shared) before entry writes: taken first here too, so a release
# publish and a content type change always lock in the same order.
SCHEMA_LOCK = 7261002

# ------------------------------------------------------------------------------------------------
# repository


async def get_release(conn: asyncpg.Connection, release_id: str, *, for_update: bool = False) -> asyncpg.Record | None:
    if not RESOURCE_ID.fullmatch(release_id):
        return None
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM releases WHERE id = $1{lock}", release_id)


async def release_entries(conn: asyncpg.Connection, release_ids: list[str]) -> dict[str, list[dict[str, str]]]:
    rows = await conn.fetch(
        "SELECT release_id, type, entry_id FROM release_entries WHERE release_id = ANY($1::text[]) "
        "ORDER BY release_id, position",
        release_ids,
    )
    out: dict[str, list[dict[str, str]]] = {rid: [] for rid in release_ids}
    for row in rows:
        out[row["release_id"]].append({"type": row["type"], "id": row["entry_id"]})
    return out


async def _replace_entries(conn: asyncpg.Connection, release_id: str, entries: list[dict[str, str]]) -> None:
    await conn.execute("DELETE FROM release_entries WHERE release_id = $1", release_id)
    if entries:
        await conn.execute(
            """INSERT INTO release_entries (release_id, position, type, entry_id)
               SELECT $1, p.position - 1, p.type, p.entry_id
               FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS p(type, entry_id, position)""",
            release_id, [e["type"] for e in entries], [e["id"] for e in entries],
        )


async def list_releases(conn: asyncpg.Connection, after: str | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM releases WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2", after, limit
    )


async def count_releases(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM releases"))


# ------------------------------------------------------------------------------------------------
# service


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


def _check_access(ctx: service.WriteContext, entries: list[dict[str, str]]) -> None:
    for entry in entries:
        require_type_access(ctx.actor, entry["type"])


async def _check_entries_exist(conn: asyncpg.Connection, entries: list[dict[str, str]]) -> None:
    found = await repo.existing_ids(conn, [e["id"] for e in entries])
    problems = FieldErrorsProblem()
    for i, entry in enumerate(entries):
        if found.get(entry["id"]) != entry["type"]:
            problems.add(f"/entries/{i}", f"no {entry['type']} entry with id {entry['id']!r}")
    problems.raise_if_any()


async def create_release(conn: asyncpg.Connection, body: Any, ctx: service.WriteContext) -> dict[str, Any]:
    title, entries = parse_release(body)
    _check_access(ctx, entries)
    release_id = str(ULID())
    async with conn.transaction():
        await _check_entries_exist(conn, entries)
        row = await conn.fetchrow("INSERT INTO releases (id, title) VALUES ($1, $2) RETURNING *", release_id, title)
        await _replace_entries(conn, release_id, entries)
        await ctx.audit(conn, "release.create", f"release:{release_id}")
    return release_json(row, entries)


async def get(conn: asyncpg.Connection, release_id: str) -> dict[str, Any]:
    row = await get_release(conn, release_id)
    if row is None:
        raise not_found("release")
    return release_json(row, (await release_entries(conn, [release_id]))[release_id])


async def list_page(conn: asyncpg.Connection, after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None, int]:
    rows = await list_releases(conn, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    entries = await release_entries(conn, [r["id"] for r in rows])
    total = await count_releases(conn)
    return [release_json(r, entries[r["id"]]) for r in rows], (rows[-1]["id"] if more else None), total


async def put_release(
    conn: asyncpg.Connection, release_id: str, body: Any, ctx: service.WriteContext, if_match: str | None
) -> dict[str, Any]:
    title, entries = parse_release(body)
    _check_access(ctx, entries)
    async with conn.transaction():
        existing = await get_release(conn, release_id, for_update=True)
        if existing is None:
            raise not_found("release")
        service.check_precondition(if_match, existing["version"])
        _check_access(ctx, (await release_entries(conn, [release_id]))[release_id])
        if existing["status"] != "open":
            raise conflict("the release is published; it can no longer change")
        await _check_entries_exist(conn, entries)
        row = await conn.fetchrow(
            """UPDATE releases SET title = $2, version = version + 1, updated_at = now()
               WHERE id = $1 RETURNING *""",
            release_id, title,
        )
        await _replace_entries(conn, release_id, entries)
        await ctx.audit(conn, "release.update", f"release:{release_id}")
    return release_json(row, entries)


async def delete_release(
    conn: asyncpg.Connection, release_id: str, ctx: service.WriteContext, if_match: str | None
) -> None:
    async with conn.transaction():
        existing = await get_release(conn, release_id, for_update=True)
        if existing is None:
            raise not_found("release")
        service.check_precondition(if_match, existing["version"])
        _check_access(ctx, (await release_entries(conn, [release_id]))[release_id])
        pending = await conn.fetchval(
            "SELECT count(*) FROM scheduled_actions WHERE release_id = $1 AND status = 'pending'", release_id
        )
        if pending:
            raise conflict(f"{pending} pending scheduled action(s) publish this release; cancel them first")
        await conn.execute("DELETE FROM releases WHERE id = $1", release_id)
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
    conn: asyncpg.Connection, release_id: str, ctx: service.WriteContext, assets_url: str, if_match: str | None,
) -> dict[str, Any]:
    """Every entry published in one transaction, or none: 422 with one error per invalid entry."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", SCHEMA_LOCK)
        existing = await get_release(conn, release_id, for_update=True)
        if existing is None:
            raise not_found("release")
        service.check_precondition(if_match, existing["version"])
        entries = (await release_entries(conn, [release_id]))[release_id]
        _check_access(ctx, entries)
        if existing["status"] != "open":
            raise conflict("the release is already published")
        types = await service.load_types(conn)
        locales = await service.load_locales(conn)
        rows = {
            r["id"]: r for r in await conn.fetch(
                f"SELECT {repo.ENTRY_COLUMNS} FROM entries WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
                [e["id"] for e in entries],
            )
        }
        errors: list[dict[str, str]] = []
        for i, entry in enumerate(entries):
            row = rows.get(entry["id"])
            ct = types.get(entry["type"])
            if row is None or ct is None or row["type"] != entry["type"]:
                errors.append({"pointer": f"/entries/{i}", "detail": f"no {entry['type']} entry with id {entry['id']!r}"})
                continue
            problems = await service.validate_for_publish(conn, ct, row["data"], locales)
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
                await service.publish_entry(conn, entry["type"], entry["id"], ctx, assets_url, None)
            except ProblemError as exc:
                raise ProblemError(
                    422, "validation", f"/entries/{i}: {exc.detail}; nothing was published",
                    errors=[{"pointer": f"/entries/{i}", "detail": _summary(exc)}],
                ) from None
        row = await conn.fetchrow(
            """UPDATE releases SET status = 'published', published_at = now(), version = version + 1,
                      updated_at = now()
               WHERE id = $1 RETURNING *""",
            release_id,
        )
        await ctx.audit(conn, "release.publish", f"release:{release_id}")
        await emit(conn, "release.published", {"id": release_id, "entries": entries})
    return release_json(row, entries)
