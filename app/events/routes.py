"""GET /v1/events: the outbox as a feed for scripts that poll (management app)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, get

from ..credentials.guards import current, management_guard
from ..http import many, query_int
from ..openapi import Doc, Event, list_of
from ..problems import gone, malformed
from . import feed

Req = Request[Any, Any, Any]


def _after(request: Req) -> str | None:
    """`after` (or `cursor`, the common name for meta.next_cursor): an event id."""
    params = request.query_params
    after = params.get("after")
    cursor = params.get("cursor")
    if after is not None and cursor is not None and after != cursor:
        raise malformed("cursor", "give either after or cursor, not two different ones")
    name, value = ("after", after) if after is not None else ("cursor", cursor)
    if value is None:
        return None
    if not feed.EVENT_ID.fullmatch(value):
        raise malformed(name, "must be the id of an event")
    return value


@get("/", opt={"scope": "content:read", "doc": Doc(200, list_of(Event), (410,), query=("after", "cursor", "limit"))})
async def list_events(request: Req) -> Response[bytes]:
    limit = query_int(request, "limit", 20, 1, 100)
    after = _after(request)
    credential = current(request)
    pool = request.app.state.pool
    # One snapshot: a prune committing between finding `after` and reading on must not skip events.
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        position = feed.START
        if after is not None:
            found = await feed.position_of(conn, after)
            if found is None:
                cut = await feed.pruned(conn)
                if after.upper() == cut.max_id:
                    found = cut.position  # the last event pruned: nothing after it is missing
                elif feed.was_pruned(after, cut):
                    raise gone(f"event {after} was pruned (events are kept CMS_OUTBOX_RETENTION_DAYS days); "
                               "start again without after")
                else:
                    raise malformed("after" if "after" in request.query_params else "cursor",
                                    "is not the id of an event")
            position = found
        rows = await feed.read(conn, position, limit, content_types=credential.content_types)
    data = [feed.event_json(r) for r in rows]
    # Always a place to continue from: the last event returned, else where this page started.
    return many(data, {"limit": limit, "next_cursor": data[-1]["id"] if data else after})


EVENT_ROUTES = Router("/v1/events", guards=[management_guard], route_handlers=[list_events])
