"""The body of `POST /v1/bulk`: up to 1000 upserts, publishes, unpublishes and deletes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..problems import FieldErrorsProblem
from ..schema.model import (
    RESOURCE_ID,
    TYPE_ID,
)

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
        if not isinstance(op, str) or op not in OP_SCOPES:
            op = None
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
