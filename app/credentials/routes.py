"""/v1/keys: create (secret shown once), inventory, rotate, revoke; /v1/preview-tokens."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, delete, get, post
from litestar.params import FromPath

from ..http import many, one, query_int, read_json, read_optional_json
from ..openapi import (
    LIST_QUERY,
    Doc,
    Key,
    KeyInput,
    KeyRotation,
    PreviewToken,
    PreviewTokenInput,
    list_of,
    one_of,
)
from ..problems import malformed, not_found
from ..routing import pool
from ..times import iso
from . import repository
from .guards import client_ip, current, management_guard
from .service import create_key, create_preview_token, key_json, revoke, rotate


@post("/", opt={"doc": Doc(201, one_of(Key), body=KeyInput)})
async def create_key_route(request: Request[Any, Any, Any]) -> Response[bytes]:
    body = await read_json(request)
    async with pool(request).acquire() as conn:
        row, secret = await create_key(
            conn, body, current(request), request_id=request.scope["state"]["request_id"], ip=client_ip(request)
        )
    data = key_json(row)
    data["secret"] = secret
    return one(data, 201, {"Location": f"/v1/keys/{row['id']}"})


@get("/", opt={"doc": Doc(200, list_of(Key), query=LIST_QUERY)})
async def list_keys_route(request: Request[Any, Any, Any]) -> Response[bytes]:
    limit = query_int(request, "limit", 20, 1, 100)
    cursor = request.query_params.get("cursor")
    if cursor is not None and not (0 < len(cursor) <= 64 and cursor.replace("-", "").replace("_", "").isalnum()):
        raise malformed("cursor", "is not a cursor from meta.next_cursor")
    async with pool(request).acquire() as conn:
        rows = await repository.list_keys(conn, cursor, limit + 1)
        total = await repository.count_keys(conn)
    more = len(rows) > limit
    rows = rows[:limit]
    return many(
        [key_json(r) for r in rows],
        {"limit": limit, "next_cursor": rows[-1]["id"] if more else None, "total": total},
    )


@post("/{key_id:str}/rotate", opt={"doc": Doc(200, one_of(Key), (404, 409), body=KeyRotation)}, status_code=200)
async def rotate_key_route(request: Request[Any, Any, Any], key_id: FromPath[str]) -> Response[bytes]:
    body = await read_optional_json(request)
    async with pool(request).acquire() as conn:
        row, secret = await rotate(
            conn, key_id, body, current(request), request_id=request.scope["state"]["request_id"], ip=client_ip(request)
        )
    data = key_json(row)
    data["secret"] = secret
    return one(data)


@get("/{key_id:str}", opt={"doc": Doc(200, one_of(Key), (404,))})
async def get_key_route(request: Request[Any, Any, Any], key_id: FromPath[str]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        row = await repository.get_key(conn, key_id)
    if row is None:
        raise not_found("key")
    return one(key_json(row))


@delete("/{key_id:str}", opt={"doc": Doc(204, None, (404,))}, status_code=204)
async def revoke_key_route(request: Request[Any, Any, Any], key_id: FromPath[str]) -> None:
    async with pool(request).acquire() as conn:
        await revoke(conn, key_id, current(request), request_id=request.scope["state"]["request_id"], ip=client_ip(request))


CREDENTIAL_ROUTES = Router(
    "/v1/keys", guards=[management_guard], opt={"scope": "credentials:manage"},
    route_handlers=[create_key_route, list_keys_route, get_key_route, rotate_key_route, revoke_key_route],
)


@post("/", opt={"scope": "content:read", "doc": Doc(201, one_of(PreviewToken), body=PreviewTokenInput)})
async def create_preview_token_route(request: Request[Any, Any, Any]) -> Response[bytes]:
    body = await read_optional_json(request)
    async with pool(request).acquire() as conn:
        token, expires_at = await create_preview_token(
            conn, body, current(request), request_id=request.scope["state"]["request_id"], ip=client_ip(request)
        )
    return one({"token": token, "expires_at": iso(expires_at)}, 201, {"Cache-Control": "no-store"})


PREVIEW_TOKEN_ROUTES = Router("/v1/preview-tokens", guards=[management_guard], route_handlers=[create_preview_token_route])
