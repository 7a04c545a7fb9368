"""GET /v1/audit: the append-only audit log, filtered and paged (scope audit:read)."""

from __future__ import annotations

import re
from typing import Any

from litestar import Request, Response, Router, get

from ..credentials.guards import management_guard
from ..http import many, query_int
from ..openapi import AuditEntry, Doc, list_of
from ..problems import malformed
from ..times import iso
from . import repository

Req = Request[Any, Any, Any]

_ID = re.compile(r"[1-9][0-9]{0,18}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
OUTCOMES = ("success", "denied")


def _text(request: Req, name: str, max_len: int) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if len(value) > max_len or "\x00" in value:
        raise malformed(name, f"at most {max_len} characters")
    return value


def _after(request: Req) -> int | None:
    params = request.query_params
    after, cursor = params.get("after"), params.get("cursor")
    if after is not None and cursor is not None and after != cursor:
        raise malformed("cursor", "give either after or cursor, not two different ones")
    name, value = ("after", after) if after is not None else ("cursor", cursor)
    if value is None:
        return None
    if not _ID.fullmatch(value) or int(value) >= 2**63:
        raise malformed(name, "must be the id of an audit entry")
    return int(value)


def entry_json(row: Any) -> dict[str, Any]:
    return {
        "id": str(row["id"]), "at": iso(row["at"]), "actor": row["actor"], "action": row["action"],
        "target": row["target"], "request_id": row["request_id"], "ip": row["ip"], "outcome": row["outcome"],
    }


QUERY = ("actor", "action", "request_id", "outcome", "after", "cursor", "limit")


@get("/", opt={"scope": "audit:read", "doc": Doc(200, list_of(AuditEntry), query=QUERY)})
async def list_audit(request: Req) -> Response[bytes]:
    limit = query_int(request, "limit", 20, 1, 100)
    after = _after(request)
    request_id = _text(request, "request_id", 128)
    if request_id is not None and not _REQUEST_ID.fullmatch(request_id):
        raise malformed("request_id", "is not a request id")
    outcome = _text(request, "outcome", 16)
    if outcome is not None and outcome not in OUTCOMES:
        raise malformed("outcome", f"must be one of {', '.join(OUTCOMES)}")
    async with request.app.state.pool.acquire() as conn:
        rows = await repository.page(
            conn, after=after, limit=limit, actor=_text(request, "actor", 64), action=_text(request, "action", 100),
            request_id=request_id, outcome=outcome,
        )
    data = [entry_json(r) for r in rows]
    # Oldest first, like the events feed: the last id returned is where to continue (new entries
    # appear after it), and on an empty page the cursor stays where it was.
    next_cursor = data[-1]["id"] if data else (str(after) if after is not None else None)
    return many(data, {"limit": limit, "next_cursor": next_cursor})


AUDIT_ROUTES = Router("/v1/audit", guards=[management_guard], route_handlers=[list_audit])
