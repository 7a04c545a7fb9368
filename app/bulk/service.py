"""`POST /v1/bulk`: up to 1000 upserts, publishes, unpublishes and deletes in one request.

Atomic (the default): all or nothing; any failure answers 422 with the errors of every failing
action, their pointers prefixed with /actions/{i}. Atomic requests are applied as sets (sets.py: a
constant number of statements per request); the few it does not cover go through the single-entry
service inside one transaction (per_action.py). Not atomic: each action is its own transaction and
its outcome, success or problem, is reported in `results`.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from ..audit.service import WriteContext
from ..problems import ProblemError, forbidden
from ..schema.values import pattern_budget
from . import per_action, sets
from .errors import problem_object
from .parse import OP_SCOPES, Action, parse_bulk


def access_problem(ctx: WriteContext, action: Action) -> ProblemError | None:
    """The 403 an action gets when the credential lacks its scope or content type."""
    scope = OP_SCOPES[action.op]
    if scope not in ctx.actor.scopes:
        return forbidden(f"{action.op} needs the scope {scope}")
    if not ctx.actor.may_use_type(action.type):
        return forbidden(f"this credential may not use the content type {action.type!r}")
    return None


async def run_bulk(conn: asyncpg.Connection, body: Any, ctx: WriteContext, assets_url: str) -> list[dict[str, Any]]:
    atomic, actions = parse_bulk(body)
    if not atomic:
        with pattern_budget():  # the request's actions share one budget for pattern checks
            return [await _apply_alone(conn, action, ctx, assets_url) for action in actions]
    denied = [(a, p) for a in actions if (p := access_problem(ctx, a)) is not None]
    if denied:
        raise ProblemError(
            403, "forbidden",
            f"{len(denied)} action(s) need a scope or content type this credential lacks (first: "
            f"/actions/{denied[0][0].index}: {denied[0][1].detail}); nothing was applied",
            errors=[{"pointer": f"/actions/{a.index}", "detail": p.detail} for a, p in denied],
        )
    async with conn.transaction():
        types, locales = await sets.load(conn)
        if not sets.needs_per_action_path(actions, types):
            return await sets.apply(conn, actions, types, locales, ctx, assets_url)
    return await per_action.apply_atomic(conn, actions, ctx, assets_url)


async def _apply_alone(conn: asyncpg.Connection, action: Action, ctx: WriteContext, assets_url: str) -> dict[str, Any]:
    """A non-atomic request's action, in its own transaction; a failure becomes its result item."""
    problem = access_problem(ctx, action)
    if problem is None:
        try:
            return await per_action.apply_action(conn, action, ctx, assets_url)
        except ProblemError as exc:
            problem = exc
    return {"index": action.index, "status": problem.status, "id": action.id, "error": problem_object(problem, action.index)}
