"""Management routes for releases (thin: parse, call the service, answer)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, delete, get, post, put
from litestar.params import FromPath

from ..credentials.guards import current, management_guard
from ..http import many, one, query_int, read_json
from ..openapi import LIST_QUERY, Doc, Release, ReleaseInput, list_of, one_of
from ..problems import malformed
from ..routing import assets_url, if_match, pool, version_etag, write_context
from ..schema.model import RESOURCE_ID
from . import service

Req = Request[Any, Any, Any]
READ, WRITE, PUBLISH = {"scope": "content:read"}, {"scope": "content:write"}, {"scope": "content:publish"}
RELEASE = one_of(Release)


@post("/", opt={**WRITE, "doc": Doc(201, RELEASE, body=ReleaseInput)})
async def create_release(request: Req) -> Response[bytes]:
    body = await read_json(request)
    async with pool(request).acquire() as conn:
        release = await service.create_release(conn, body, write_context(request))
    headers = version_etag(release["version"])
    headers["Location"] = f"/v1/releases/{release['id']}"
    return one(release, 201, headers)


@get("/", opt={**READ, "doc": Doc(200, list_of(Release), query=LIST_QUERY)})
async def list_releases(request: Req) -> Response[bytes]:
    limit = query_int(request, "limit", 20, 1, 100)
    cursor = request.query_params.get("cursor")
    if cursor is not None and not RESOURCE_ID.fullmatch(cursor):
        raise malformed("cursor", "is not a cursor from meta.next_cursor")
    async with pool(request).acquire() as conn:
        data, next_cursor, total = await service.list_page(conn, cursor, limit, current(request))
    return many(data, {"limit": limit, "next_cursor": next_cursor, "total": total})


@get("/{release_id:str}", opt={**READ, "doc": Doc(200, RELEASE, (404,))})
async def get_release(request: Req, release_id: FromPath[str]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        release = await service.get(conn, release_id, current(request))
    return one(release, headers=version_etag(release["version"]))


@put("/{release_id:str}", opt={**WRITE, "doc": Doc(200, RELEASE, (404, 409, 412), body=ReleaseInput)})
async def put_release(request: Req, release_id: FromPath[str]) -> Response[bytes]:
    body = await read_json(request)
    async with pool(request).acquire() as conn:
        release = await service.put_release(conn, release_id, body, write_context(request), if_match(request))
    return one(release, headers=version_etag(release["version"]))


@delete("/{release_id:str}", opt={**WRITE, "doc": Doc(204, None, (404, 409, 412))}, status_code=204)
async def delete_release(request: Req, release_id: FromPath[str]) -> None:
    async with pool(request).acquire() as conn:
        await service.delete_release(conn, release_id, write_context(request), if_match(request))


@post("/{release_id:str}/publish", opt={**PUBLISH, "doc": Doc(200, RELEASE, (404, 409, 412, 422))})
async def publish_release(request: Req, release_id: FromPath[str]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        release = await service.publish_release(
            conn, release_id, write_context(request), assets_url(request), if_match(request)
        )
    return one(release, 200, version_etag(release["version"]))


RELEASE_ROUTES = Router(
    "/v1/releases", guards=[management_guard],
    route_handlers=[create_release, list_releases, get_release, put_release, delete_release, publish_release],
)
