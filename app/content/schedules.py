"""Scheduled actions: publish or unpublish an entry, or publish a release, at a given time.

The scheduler (workers/scheduler.py) fires due actions; the action's effect and its status change
commit in one transaction, so an action is applied at most once however many schedulers run.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import asyncpg
from ulid import ULID

from ..credentials.auth import require_type_access
from ..problems import FieldErrorsProblem, ProblemError, conflict, malformed, not_found
from . import releases, service
from . import repository as repo
from .schemas import RESOURCE_ID, TYPE_ID, iso

# NOTIFY channel the scheduler LISTENs on: a new action may be due before its next poll.
SCHEDULE_CHANNEL = "cms_schedule"
STATUSES = ("pending", "done", "failed", "canceled")
ACTIONS = ("publish", "unpublish")
_CURSOR = re.compile(r"(-?\d{1,20})~([A-Za-z0-9_-]{1,64})")

# ------------------------------------------------------------------------------------------------
# repository


async def get_action(conn: asyncpg.Connection, action_id: str, *, for_update: bool = False) -> asyncpg.Record | None:
    if not RESOURCE_ID.fullmatch(action_id):
        return None
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM scheduled_actions WHERE id = $1{lock}", action_id)


async def list_actions(
    conn: asyncpg.Connection, status: str | None, after: tuple[int, str] | None, limit: int
) -> list[asyncpg.Record]:
    """Ordered by (at, id); the cursor is the last row's (at in epoch microseconds, id)."""
    return await conn.fetch(
        """SELECT *, (extract(epoch FROM at) * 1000000)::bigint AS at_us FROM scheduled_actions
           WHERE ($1::text IS NULL OR status = $1)
             AND ($2::bigint IS NULL OR ((extract(epoch FROM at) * 1000000)::bigint, id) > ($2, $3::text))
           ORDER BY at, id LIMIT $4""",
        status, after[0] if after else None, after[1] if after else None, limit,
    )


async def count_actions(conn: asyncpg.Connection, status: str | None) -> int:
    return int(await conn.fetchval(
        "SELECT count(*) FROM scheduled_actions WHERE ($1::text IS NULL OR status = $1)", status
    ))


async def claim_due(conn: asyncpg.Connection) -> asyncpg.Record | None:
    """One due pending action, locked for this transaction; rows other schedulers hold are skipped."""
    return await conn.fetchrow(
        """SELECT * FROM scheduled_actions WHERE status = 'pending' AND at <= now()
           ORDER BY at, id LIMIT 1 FOR UPDATE SKIP LOCKED"""
    )


async def finish(conn: asyncpg.Connection, action_id: str, status: str, error: str | None) -> None:
    await conn.execute(
        """UPDATE scheduled_actions SET status = $2, error = $3, executed_at = now(), updated_at = now()
           WHERE id = $1""",
        action_id, status, error,
    )


async def next_due(conn: asyncpg.Connection) -> datetime | None:
    value: datetime | None = await conn.fetchval("SELECT min(at) FROM scheduled_actions WHERE status = 'pending'")
    return value


# ------------------------------------------------------------------------------------------------
# service


def action_json(row: Any) -> dict[str, Any]:
    entry = {"type": row["entry_type"], "id": row["entry_id"]} if row["entry_id"] is not None else None
    return {
        "id": row["id"], "action": row["action"], "entry": entry, "release": row["release_id"],
        "at": iso(row["at"]), "status": row["status"], "error": row["error"], "created_by": row["created_by"],
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
        "executed_at": iso(row["executed_at"]),
    }


def parse_at(value: Any) -> datetime | None:
    """An RFC 3339 date-time with a time zone offset, or None."""
    if not isinstance(value, str) or not re.fullmatch(
        r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", value
    ):
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value)  # Python takes at most microseconds
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return parsed


def parse_action(body: Any) -> dict[str, Any]:
    problems = FieldErrorsProblem()
    if not isinstance(body, dict):
        problems.add("", "must be a JSON object with \"action\", \"at\" and \"entry\" or \"release\"")
        problems.raise_if_any()
    for key in body:
        if key not in {"action", "entry", "release", "at"}:
            problems.add(f"/{key}", "unknown property")
    action = body.get("action")
    if action not in ACTIONS:
        problems.add("/action", "is required: publish or unpublish")
    at = parse_at(body.get("at"))
    if at is None:
        problems.add("/at", "is required: an RFC 3339 date-time with a time zone offset, e.g. 2030-01-01T09:00:00Z")
    entry, release = body.get("entry"), body.get("release")
    out: dict[str, Any] = {"action": action, "at": at, "entry": None, "release": None}
    if (entry is None) == (release is None):
        problems.add("", "give exactly one of \"entry\" or \"release\"")
    elif entry is not None:
        if not isinstance(entry, dict):
            problems.add("/entry", "must be an object {\"type\", \"id\"}")
        else:
            for key in entry:
                if key not in {"type", "id"}:
                    problems.add(f"/entry/{key}", "unknown property")
            if not isinstance(entry.get("type"), str) or not TYPE_ID.fullmatch(entry["type"]):
                problems.add("/entry/type", "is required: a content type id")
            if not isinstance(entry.get("id"), str) or not RESOURCE_ID.fullmatch(entry["id"]):
                problems.add("/entry/id", "is required: an id matching [A-Za-z0-9_-]{1,64}")
            out["entry"] = {"type": entry.get("type"), "id": entry.get("id")}
    else:
        if not isinstance(release, str) or not RESOURCE_ID.fullmatch(release):
            problems.add("/release", "must be a release id")
        elif action == "unpublish":
            problems.add("/action", "a release can only be published")
        out["release"] = release
    problems.raise_if_any()
    return out


async def create_action(conn: asyncpg.Connection, body: Any, ctx: service.WriteContext) -> dict[str, Any]:
    parsed = parse_action(body)
    entry = parsed["entry"]
    if entry is not None:
        require_type_access(ctx.actor, entry["type"])
    action_id = str(ULID())
    async with conn.transaction():
        if entry is not None:
            found = await repo.existing_ids(conn, [entry["id"]])
            if found.get(entry["id"]) != entry["type"]:
                raise ProblemError(
                    422, "validation", f"/entry: no {entry['type']} entry with id {entry['id']!r}",
                    errors=[{"pointer": "/entry", "detail": f"no {entry['type']} entry with id {entry['id']!r}"}],
                )
        else:
            release = await releases.get_release(conn, parsed["release"])
            if release is None:
                raise ProblemError(
                    422, "validation", "/release: no such release",
                    errors=[{"pointer": "/release", "detail": "no such release"}],
                )
            if release["status"] != "open":
                raise ProblemError(
                    422, "validation", "/release: the release is already published",
                    errors=[{"pointer": "/release", "detail": "the release is already published"}],
                )
            members = (await releases.release_entries(conn, [parsed["release"]]))[parsed["release"]]
            for member in members:
                require_type_access(ctx.actor, member["type"])
        row = await conn.fetchrow(
            """INSERT INTO scheduled_actions (id, action, entry_type, entry_id, release_id, at, created_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
            action_id, parsed["action"], entry["type"] if entry else None, entry["id"] if entry else None,
            parsed["release"], parsed["at"], ctx.actor.actor(),
        )
        await ctx.audit(conn, "scheduled_action.create", f"scheduled_action:{action_id}")
        await conn.execute("SELECT pg_notify($1, $2)", SCHEDULE_CHANNEL, action_id)
    return action_json(row)


async def get(conn: asyncpg.Connection, action_id: str) -> dict[str, Any]:
    row = await get_action(conn, action_id)
    if row is None:
        raise not_found("scheduled action")
    return action_json(row)


def parse_status(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in STATUSES:
        raise malformed("status", f"must be one of {', '.join(STATUSES)}")
    return value


def parse_cursor(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    match = _CURSOR.fullmatch(value)
    if match is None:
        raise malformed("cursor", "is not a cursor from meta.next_cursor")
    return int(match.group(1)), match.group(2)


async def list_page(
    conn: asyncpg.Connection, status: str | None, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None, int]:
    rows = await list_actions(conn, parse_status(status), parse_cursor(cursor), limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = f"{rows[-1]['at_us']}~{rows[-1]['id']}" if more else None
    return [action_json(r) for r in rows], next_cursor, await count_actions(conn, status)


async def cancel_action(conn: asyncpg.Connection, action_id: str, ctx: service.WriteContext) -> None:
    async with conn.transaction():
        # Waits for a scheduler firing this action right now; then sees it is no longer pending.
        row = await get_action(conn, action_id, for_update=True)
        if row is None:
            raise not_found("scheduled action")
        if row["entry_type"] is not None:
            require_type_access(ctx.actor, row["entry_type"])
        if row["status"] != "pending":
            raise conflict(f"the action is {row['status']}; only a pending action can be canceled")
        await conn.execute(
            "UPDATE scheduled_actions SET status = 'canceled', updated_at = now() WHERE id = $1", action_id
        )
        await ctx.audit(conn, "scheduled_action.cancel", f"scheduled_action:{action_id}")


async def execute(conn: asyncpg.Connection, row: Any, ctx: service.WriteContext, assets_url: str) -> None:
    """Apply one action (inside the caller's transaction); raises ProblemError when it cannot."""
    if row["release_id"] is not None:
        await releases.publish_release(conn, row["release_id"], ctx, assets_url, None)
    elif row["action"] == "publish":
        await service.publish_entry(conn, row["entry_type"], row["entry_id"], ctx, assets_url, None)
    else:
        await service.unpublish_entry(conn, row["entry_type"], row["entry_id"], ctx, None)


def error_text(problem: ProblemError) -> str:
    """The problem's detail, followed by each pointer's detail it does not already say."""
    parts = []
    for item in problem.errors or []:
        part = f"{item.get('pointer') or item.get('parameter') or '/'}: {item['detail']}"
        if part not in problem.detail:
            parts.append(part)
    return f"{problem.detail} ({'; '.join(parts)})" if parts else problem.detail
