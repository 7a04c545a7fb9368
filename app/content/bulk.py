"""POST /v1/bulk: up to 1000 upserts, publishes, unpublishes and deletes in one request.

Atomic: all or nothing; any failure answers 422 with the errors of every failing action, their
pointers prefixed with /actions/{i}. Atomic requests are applied as sets (bulk_sets.py: a constant
number of statements per request); the few it does not cover run every action through the
single-entry service inside one outer transaction (each call a SAVEPOINT). Not atomic: each action is its own transaction and its
outcome, success or problem, is reported in `results`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from ..problems import TITLES, FieldErrorsProblem, ProblemError, forbidden
from . import bulk_sets, service
from .schemas import RESOURCE_ID, TYPE_ID

MAX_ACTIONS = 1000
# The scope each operation needs, beyond the route's content:write.
OP_SCOPES = {"upsert": "content:write", "delete": "content:write", "publish": "content:publish", "unpublish": "content:publish"}
ACTION_KEYS = {"op", "type", "id", "locale", "fields"}


@dataclass(frozen=True)
class Action:
    index: int
    op: str
    type: str
    id: str | None
    locale: str | None
    fields: dict[str, Any] | None


def parse_bulk(body: Any) -> tuple[bool, list[Action]]:
    """(atomic, actions) or 422 with a pointer for every malformed part of the body."""
    problems = FieldErrorsProblem()
    if not isinstance(body, dict):
        problems.add("", "must be a JSON object with \"actions\"")
        problems.raise_if_any()
    for key in body:
        if key not in {"atomic", "actions"}:
            problems.add(f"/{key}", "unknown property")
    atomic = body.get("atomic", True)
    if not isinstance(atomic, bool):
        problems.add("/atomic", "must be true or false")
    raw = body.get("actions")
    if not isinstance(raw, list):
        problems.add("/actions", f"is required: a list of 1 to {MAX_ACTIONS} actions")
        raw = []
    elif not 1 <= len(raw) <= MAX_ACTIONS:
        problems.add("/actions", f"must hold 1 to {MAX_ACTIONS} actions (got {len(raw)})")
        raw = []
    actions: list[Action] = []
    for i, item in enumerate(raw):
        at = f"/actions/{i}"
        if not isinstance(item, dict):
            problems.add(at, "must be an object {\"op\", \"type\", \"id\", \"locale\"?, \"fields\"?}")
            continue
        before = len(problems.items)
        for key in item:
            if key not in ACTION_KEYS:
                problems.add(f"{at}/{key}", "unknown property")
        op = item.get("op")
        if op not in OP_SCOPES:
            problems.add(f"{at}/op", "is required: upsert, publish, unpublish or delete")
        type_id = item.get("type")
        if not isinstance(type_id, str) or not TYPE_ID.fullmatch(type_id):
            problems.add(f"{at}/type", "is required: a content type id")
        entry_id = item.get("id")
        if entry_id is None:
            if op in OP_SCOPES and op != "upsert":
                problems.add(f"{at}/id", f"is required for {op}")
        elif not isinstance(entry_id, str) or not RESOURCE_ID.fullmatch(entry_id):
            problems.add(f"{at}/id", "must be an id matching [A-Za-z0-9_-]{1,64}")
        locale = item.get("locale")
        if locale is not None and not isinstance(locale, str):
            problems.add(f"{at}/locale", "must be a locale code")
        fields = item.get("fields")
        if fields is not None:
            if op in OP_SCOPES and op != "upsert":
                problems.add(f"{at}/fields", f"{op} takes no fields")
            elif not isinstance(fields, dict):
                problems.add(f"{at}/fields", "must be an object")
        if len(problems.items) == before:
            actions.append(Action(i, op, type_id, entry_id, locale, fields))  # type: ignore[arg-type]
    problems.raise_if_any()
    assert isinstance(atomic, bool)
    return atomic, actions


def _access_problem(ctx: service.WriteContext, action: Action) -> ProblemError | None:
    scope = OP_SCOPES[action.op]
    if scope not in ctx.actor.scopes:
        return forbidden(f"{action.op} needs the scope {scope}")
    if not ctx.actor.may_use_type(action.type):
        return forbidden(f"this credential may not use the content type {action.type!r}")
    return None


def prefixed_errors(problem: ProblemError, index: int) -> list[dict[str, Any]]:
    """The problem's errors with pointers into the bulk body; one error at /actions/{i} if it has none."""
    base = f"/actions/{index}"
    if not problem.errors:
        return [{"pointer": base, "detail": problem.detail}]
    out = []
    for item in problem.errors:
        if "pointer" in item:
            where = item["pointer"]
        else:
            # A query parameter of the single-entry routes (e.g. locale) is a property of the action.
            where = "/" + str(item.get("parameter", "")) if item.get("parameter") else ""
        out.append({"pointer": base + where, "detail": item["detail"]})
    return out


def atomic_failure(errors: list[dict[str, Any]], failed: int, total: int) -> ProblemError:
    """The 422 of an atomic request in which `failed` of `total` actions failed (nothing applied)."""
    first = errors[0]
    return ProblemError(
        422, "validation",
        f"{failed} of {total} actions failed (first: {first['pointer']}: {first['detail']}); nothing was applied",
        errors=errors,
    )


def problem_object(problem: ProblemError, index: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"urn:cms:problem:{problem.code}", "title": TITLES.get(problem.code, problem.code),
        "status": problem.status, "detail": problem.detail, "errors": prefixed_errors(problem, index),
    }
    body.update(problem.extra)
    return body


async def _apply(conn: asyncpg.Connection, action: Action, ctx: service.WriteContext, assets_url: str) -> dict[str, Any]:
    if action.op == "upsert":
        body = {"fields": action.fields if action.fields is not None else {}}
        if action.id is None:
            entry, _ = await service.create_entry(conn, action.type, None, action.locale, body, ctx)
            return {"index": action.index, "status": 201, "id": entry["id"], "error": None}
        entry, created = await service.put_entry(conn, action.type, action.id, action.locale, body, ctx, None)
        return {"index": action.index, "status": 201 if created else 200, "id": entry["id"], "error": None}
    assert action.id is not None
    if action.op == "publish":
        await service.publish_entry(conn, action.type, action.id, ctx, assets_url, None)
        return {"index": action.index, "status": 200, "id": action.id, "error": None}
    if action.op == "unpublish":
        await service.unpublish_entry(conn, action.type, action.id, ctx, None)
        return {"index": action.index, "status": 200, "id": action.id, "error": None}
    await service.delete_entry(conn, action.type, action.id, False, ctx, None)
    return {"index": action.index, "status": 204, "id": action.id, "error": None}


async def run_bulk(conn: asyncpg.Connection, body: Any, ctx: service.WriteContext, assets_url: str) -> list[dict[str, Any]]:
    atomic, actions = parse_bulk(body)
    if atomic:
        denied = [(a, p) for a in actions if (p := _access_problem(ctx, a)) is not None]
        if denied:
            raise ProblemError(
                403, "forbidden",
                f"{len(denied)} action(s) need a scope or content type this credential lacks (first: "
                f"/actions/{denied[0][0].index}: {denied[0][1].detail}); nothing was applied",
                errors=[{"pointer": f"/actions/{a.index}", "detail": p.detail} for a, p in denied],
            )
        async with conn.transaction():
            types, locales = await bulk_sets.load(conn)
            if not bulk_sets.needs_per_action_path(actions, types):
                return await bulk_sets.apply(conn, actions, types, locales, ctx, assets_url)
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        failed = 0
        async with conn.transaction():
            for action in actions:
                try:
                    results.append(await _apply(conn, action, ctx, assets_url))
                except ProblemError as exc:
                    # The action's savepoint rolled back; go on to report every failing action.
                    failed += 1
                    errors.extend(prefixed_errors(exc, action.index))
            if errors:
                raise atomic_failure(errors, failed, len(actions))
        return results
    results = []
    for action in actions:
        problem = _access_problem(ctx, action)
        if problem is None:
            try:
                results.append(await _apply(conn, action, ctx, assets_url))
                continue
            except ProblemError as exc:
                problem = exc
        results.append(
            {"index": action.index, "status": problem.status, "id": action.id, "error": problem_object(problem, action.index)}
        )
    return results
