"""Bulk actions applied one by one through the single-entry service.

Requests the set path (sets.py) does not cover take this path when atomic: every action inside one
outer transaction (each service call a SAVEPOINT), every failing action reported, nothing applied
if one failed. Non-atomic requests take it always: each action is its own transaction.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from ..audit.service import WriteContext
from ..entries import service as entries
from ..problems import ProblemError
from ..schema.values import pattern_budget
from .errors import atomic_failure, prefixed_errors
from .parse import Action


async def apply_action(conn: asyncpg.Connection, action: Action, ctx: WriteContext, assets_url: str) -> dict[str, Any]:
    """One action through the single-entry service; its result item (a ProblemError if it fails)."""
    if action.op == "upsert":
        body = {"fields": action.fields if action.fields is not None else {}}
        if action.id is None:
            entry, _ = await entries.create_entry(conn, action.type, None, action.locale, body, ctx)
            return {"index": action.index, "status": 201, "id": entry["id"], "error": None}
        entry, created = await entries.put_entry(conn, action.type, action.id, action.locale, body, ctx, None)
        return {"index": action.index, "status": 201 if created else 200, "id": entry["id"], "error": None}
    assert action.id is not None
    if action.op == "publish":
        await entries.publish_entry(conn, action.type, action.id, ctx, assets_url, None)
        return {"index": action.index, "status": 200, "id": action.id, "error": None}
    if action.op == "unpublish":
        await entries.unpublish_entry(conn, action.type, action.id, ctx, None)
        return {"index": action.index, "status": 200, "id": action.id, "error": None}
    await entries.delete_entry(conn, action.type, action.id, False, ctx, None)
    return {"index": action.index, "status": 204, "id": action.id, "error": None}


async def apply_atomic(
    conn: asyncpg.Connection, actions: list[Action], ctx: WriteContext, assets_url: str
) -> list[dict[str, Any]]:
    """Every action in one transaction, or none: 422 with the errors of every failing action."""
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    failed = 0
    # One transaction, and one budget for every action's pattern checks.
    async with conn.transaction():
        with pattern_budget():
            for action in actions:
                try:
                    results.append(await apply_action(conn, action, ctx, assets_url))
                except ProblemError as exc:
                    # The action's savepoint rolled back; go on to report every failing action.
                    failed += 1
                    errors.extend(prefixed_errors(exc, action.index))
        if errors:
            raise atomic_failure(errors, failed, len(actions))
    return results
