"""Management routes for releases, scheduled actions and bulk writes (thin: parse, call, answer)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, post, put
from litestar.params import FromPath

from ..credentials.auth import client_ip, current, management_guard
from ..http import many, one, query_int, read_json
from ..problems import malformed
from . import bulk, releases, schedules, service
from .schemas import RESOURCE_ID

Req = Request[Any, Any, Any]


def _ctx(request: Req) -> service.WriteContext:
    return service.WriteContext(current(request), request.scope["state"]["request_id"], client_ip(request))


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def _pool(request: Req) -> Any:
    return request.app.state.pool


def _assets_url(request: Req) -> str:
    return request.app.state.settings.assets_url


# --- releases ----------------------------------------------------------------------------------


@post("/v1/releases", guards=[management_guard], opt={"scope": "content:write"})
async def create_release(request: Req) -> Response[bytes]:
    body = await read_json(request)
    async with _pool(request).acquire() as conn:
        release = await releases.create_release(conn, body, _ctx(request))
    headers = _etag(release["version"])
    headers["Location"] = f"/v1/releases/{release['id']}"
    return one(release, 201, headers)


@get("/v1/releases", guards=[management_guard], opt={"scope": "content:read"})
async def list_releases(request: Req) -> Response[bytes]:
    limit = query_int(request, "limit", 20, 1, 100)
    cursor = request.query_params.get("cursor")
    if cursor is not None and not RESOURCE_ID.fullmatch(cursor):
        raise malformed("cursor", "is not a cursor from meta.next_cursor")
    async with _pool(request).acquire() as conn:
        data, next_cursor, total = await releases.list_page(conn, cursor, limit)
    return many(data, {"limit": limit, "next_cursor": next_cursor, "total": total})


@get("/v1/releases/{release_id:str}", guards=[management_guard], opt={"scope": "content:read"})
async def get_release(request: Req, release_id: FromPath[str]) -> Response[bytes]:
    async with _pool(request).acquire() as conn:
        release = await releases.get(conn, release_id)
    return one(release, headers=_etag(release["version"]))


@put("/v1/releases/{release_id:str}", guards=[management_guard], opt={"scope": "content:write"})
async def put_release(request: Req, release_id: FromPath[str]) -> Response[bytes]:
    body = await read_json(request)
    async with _pool(request).acquire() as conn:
        release = await releases.put_release(conn, release_id, body, _ctx(request), request.headers.get("if-match"))
    return one(release, headers=_etag(release["version"]))


@delete("/v1/releases/{release_id:str}", guards=[management_guard], opt={"scope": "content:write"}, status_code=204)
async def delete_release(request: Req, release_id: FromPath[str]) -> None:
    async with _pool(request).acquire() as conn:
        await releases.delete_release(conn, release_id, _ctx(request), request.headers.get("if-match"))


@post("/v1/releases/{release_id:str}/publish", guards=[management_guard], opt={"scope": "content:publish"})
async def publish_release(request: Req, release_id: FromPath[str]) -> Response[bytes]:
    async with _pool(request).acquire() as conn:
        release = await releases.publish_release(
            conn, release_id, _ctx(request), _assets_url(request), request.headers.get("if-match")
        )
    return one(release, 200, _etag(release["version"]))


# --- scheduled actions -------------------------------------------------------------------------


@post("/v1/scheduled-actions", guards=[management_guard], opt={"scope": "content:publish"})
async def create_scheduled_action(request: Req) -> Response[bytes]:
    body = await read_json(request)
    async with _pool(request).acquire() as conn:
        action = await schedules.create_action(conn, body, _ctx(request))
    return one(action, 201, {"Location": f"/v1/scheduled-actions/{action['id']}"})


@get("/v1/scheduled-actions", guards=[management_guard], opt={"scope": "content:read"})
async def list_scheduled_actions(request: Req) -> Response[bytes]:
    limit = query_int(request, "limit", 20, 1, 100)
    status = schedules.parse_status(request.query_params.get("status"))
    cursor = request.query_params.get("cursor")
    schedules.parse_cursor(cursor)
    async with _pool(request).acquire() as conn:
        data, next_cursor, total = await schedules.list_page(conn, status, cursor, limit)
    return many(data, {"limit": limit, "next_cursor": next_cursor, "total": total})


@get("/v1/scheduled-actions/{action_id:str}", guards=[management_guard], opt={"scope": "content:read"})
async def get_scheduled_action(request: Req, action_id: FromPath[str]) -> Response[bytes]:
    async with _pool(request).acquire() as conn:
        action = await schedules.get(conn, action_id)
    return one(action)


@delete(
    "/v1/scheduled-actions/{action_id:str}", guards=[management_guard], opt={"scope": "content:publish"},
    status_code=204,
)
async def cancel_scheduled_action(request: Req, action_id: FromPath[str]) -> None:
    async with _pool(request).acquire() as conn:
        await schedules.cancel_action(conn, action_id, _ctx(request))


# --- bulk --------------------------------------------------------------------------------------


@post("/v1/bulk", guards=[management_guard], opt={"scope": "content:write"})
async def run_bulk(request: Req) -> Response[bytes]:
    body = await read_json(request, limit=request.app.state.settings.max_bulk_body_bytes)
    async with _pool(request).acquire() as conn:
        results = await bulk.run_bulk(conn, body, _ctx(request), _assets_url(request))
    return one({"results": results})


PIPELINE_ROUTES = [
    create_release, list_releases, get_release, put_release, delete_release, publish_release,
    create_scheduled_action, list_scheduled_actions, get_scheduled_action, cancel_scheduled_action,
    run_bulk,
]
