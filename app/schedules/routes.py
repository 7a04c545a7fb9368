"""Management routes for scheduled actions (thin: parse, call the service, answer)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, delete, get, post
from litestar.params import FromPath

from ..credentials.guards import current, management_guard
from ..http import many, one, query_int, read_json
from ..openapi import LIST_QUERY, Doc, ScheduledAction, ScheduledActionInput, list_of, one_of
from ..routing import pool, write_context
from . import service

Req = Request[Any, Any, Any]
READ, PUBLISH = {"scope": "content:read"}, {"scope": "content:publish"}


@post("/", opt={**PUBLISH, "doc": Doc(201, one_of(ScheduledAction), body=ScheduledActionInput)})
async def create_scheduled_action(request: Req) -> Response[bytes]:
    body = await read_json(request)
    async with pool(request).acquire() as conn:
        action = await service.create_action(conn, body, write_context(request))
    return one(action, 201, {"Location": f"/v1/scheduled-actions/{action['id']}"})


@get("/", opt={**READ, "doc": Doc(200, list_of(ScheduledAction), query=(*LIST_QUERY, "status"))})
async def list_scheduled_actions(request: Req) -> Response[bytes]:
    limit = query_int(request, "limit", 20, 1, 100)
    status = service.parse_status(request.query_params.get("status"))
    cursor = request.query_params.get("cursor")
    service.parse_cursor(cursor)
    async with pool(request).acquire() as conn:
        data, next_cursor, total = await service.list_page(conn, status, cursor, limit, current(request))
    return many(data, {"limit": limit, "next_cursor": next_cursor, "total": total})


@get("/{action_id:str}", opt={**READ, "doc": Doc(200, one_of(ScheduledAction), (404,))})
async def get_scheduled_action(request: Req, action_id: FromPath[str]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        action = await service.get(conn, action_id, current(request))
    return one(action)


@delete("/{action_id:str}", opt={**PUBLISH, "doc": Doc(204, None, (404, 409))}, status_code=204)
async def cancel_scheduled_action(request: Req, action_id: FromPath[str]) -> None:
    async with pool(request).acquire() as conn:
        await service.cancel_action(conn, action_id, write_context(request))


SCHEDULE_ROUTES = Router(
    "/v1/scheduled-actions", guards=[management_guard],
    route_handlers=[create_scheduled_action, list_scheduled_actions, get_scheduled_action, cancel_scheduled_action],
)
