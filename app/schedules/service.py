"""Scheduled actions: publish or unpublish an entry, or publish a release, at a given time.

The scheduler (workers/scheduler.py) fires due actions; the action's effect and its status change
commit in one transaction, so an action is applied at most once however many schedulers run.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
from ulid import ULID

from ..audit.service import WriteContext
from ..credentials.schemas import Credential
from ..entries import repository as entries_repo
from ..entries import service as entries
from ..problems import FieldErrorsProblem, ProblemError, conflict, forbidden, malformed, not_found
from ..releases import repository as releases_repo
from ..releases import service as releases
from ..schema.model import (
    RESOURCE_ID,
    TYPE_ID,
)
from ..times import iso, parse_rfc3339
from . import repository as repo

STATUSES = ("pending", "done", "failed", "canceled")
ACTIONS = ("publish", "unpublish")
_CURSOR = re.compile(r"(-?\d{1,20})~([A-Za-z0-9_-]{1,64})")


def action_json(row: Any) -> dict[str, Any]:
    entry = {"type": row["entry_type"], "id": row["entry_id"]} if row["entry_id"] is not None else None
    return {
        "id": row["id"], "action": row["action"], "entry": entry, "release": row["release_id"],
        "at": iso(row["at"]), "status": row["status"], "error": row["error"], "created_by": row["created_by"],
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
        "executed_at": iso(row["executed_at"]),
    }


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
    at = parse_rfc3339(body.get("at"))
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


async def create_action(conn: asyncpg.Connection, body: Any, ctx: WriteContext) -> dict[str, Any]:
    parsed = parse_action(body)
    entry = parsed["entry"]
    if entry is not None:
        ctx.actor.require_type(entry["type"])
    action_id = str(ULID())
    async with conn.transaction():
        if entry is not None:
            found = await entries_repo.existing_ids(conn, [entry["id"]])
            if found.get(entry["id"]) != entry["type"]:
                raise ProblemError(
                    422, "validation", f"/entry: no {entry['type']} entry with id {entry['id']!r}",
                    errors=[{"pointer": "/entry", "detail": f"no {entry['type']} entry with id {entry['id']!r}"}],
                )
        else:
            release = await releases_repo.get_release(conn, parsed["release"])
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
            members = (await releases_repo.release_entries(conn, [parsed["release"]]))[parsed["release"]]
            for member in members:
                ctx.actor.require_type(member["type"])
        row = await repo.insert_action(
            conn, action_id, parsed["action"], entry, parsed["release"], parsed["at"], ctx.actor.actor()
        )
        await ctx.audit(conn, "scheduled_action.create", f"scheduled_action:{action_id}")
        await repo.wake_scheduler(conn, action_id)
    return action_json(row)


async def _require_visible(conn: asyncpg.Connection, row: Any, actor: Credential) -> None:
    """403 unless the credential may see the action: one on an entry of its types, or on a release
    whose entries are all of its types (lists leave the others out)."""
    if actor.content_types is None:
        return
    if row["entry_type"] is not None:
        actor.require_type(row["entry_type"])
    elif not releases.visible(actor, (await releases_repo.release_entries(conn, [row["release_id"]]))[row["release_id"]]):
        raise forbidden("this action publishes a release with entries of content types this credential may not use")


async def get(conn: asyncpg.Connection, action_id: str, actor: Credential) -> dict[str, Any]:
    row = await repo.get_action(conn, action_id)
    if row is None:
        raise not_found("scheduled action")
    await _require_visible(conn, row, actor)
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
    conn: asyncpg.Connection, status: str | None, cursor: str | None, limit: int, actor: Credential
) -> tuple[list[dict[str, Any]], str | None, int]:
    allowed = sorted(actor.content_types) if actor.content_types is not None else None
    rows = await repo.list_actions(conn, parse_status(status), parse_cursor(cursor), limit + 1, allowed)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = f"{rows[-1]['at_us']}~{rows[-1]['id']}" if more else None
    return [action_json(r) for r in rows], next_cursor, await repo.count_actions(conn, status, allowed)


async def cancel_action(conn: asyncpg.Connection, action_id: str, ctx: WriteContext) -> None:
    async with conn.transaction():
        # Waits for a scheduler firing this action right now; then sees it is no longer pending.
        row = await repo.get_action(conn, action_id, for_update=True)
        if row is None:
            raise not_found("scheduled action")
        await _require_visible(conn, row, ctx.actor)
        if row["status"] != "pending":
            raise conflict(f"the action is {row['status']}; only a pending action can be canceled")
        await repo.cancel(conn, action_id)
        await ctx.audit(conn, "scheduled_action.cancel", f"scheduled_action:{action_id}")


async def execute(conn: asyncpg.Connection, row: Any, ctx: WriteContext, assets_url: str) -> None:
    """Apply one action (inside the caller's transaction); raises ProblemError when it cannot."""
    if row["release_id"] is not None:
        await releases.publish_release(conn, row["release_id"], ctx, assets_url, None)
    elif row["action"] == "publish":
        await entries.publish_entry(conn, row["entry_type"], row["entry_id"], ctx, assets_url, None)
    else:
        await entries.unpublish_entry(conn, row["entry_type"], row["entry_id"], ctx, None)


def error_text(problem: ProblemError) -> str:
    """The problem's detail, followed by each pointer's detail it does not already say."""
    parts = []
    for item in problem.errors or []:
        part = f"{item.get('pointer') or item.get('parameter') or '/'}: {item['detail']}"
        if part not in problem.detail:
            parts.append(part)
    return f"{problem.detail} ({'; '.join(parts)})" if parts else problem.detail
