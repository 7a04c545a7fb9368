"""Management routes for content types and locales (thin: parse, call the service, answer).

Reading the schema needs any management credential; changing it needs `schema:write`.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, delete, get, put
from litestar.params import FromPath

from ..credentials.guards import current, management_guard
from ..cursors import page_after
from ..http import many, one, page_params, read_json
from ..openapi import LIST_QUERY, ContentType, ContentTypeInput, Doc, Locale, LocaleInput, list_of, one_of
from ..routing import assets_url, force_param, if_match, pool, version_etag, write_context
from . import content_types, locales
from .model import (
    LOCALE_CODE,
    TYPE_ID,
)

Req = Request[Any, Any, Any]


def inline_entries(request: Req) -> int:
    return request.app.state.settings.schema_inline_entries  # type: ignore[no-any-return]
WRITE = {"scope": "schema:write"}


@get("/content-types", opt={"doc": Doc(200, list_of(ContentType), query=LIST_QUERY)})
async def list_types(request: Req) -> Response[bytes]:
    limit, cursor = page_params(request, TYPE_ID)
    async with pool(request).acquire() as conn:
        types = [ct for ct in await content_types.list_content_types(conn) if current(request).may_use_type(ct.id)]
    page, next_cursor = page_after(types, lambda ct: ct.id, limit, cursor)
    return many([ct.to_json() for ct in page], {"limit": limit, "next_cursor": next_cursor, "total": len(types)})


@get("/content-types/{type_id:str}", opt={"doc": Doc(200, one_of(ContentType), (404,))})
async def get_type(request: Req, type_id: FromPath[str]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        ct = await content_types.get_content_type(conn, type_id)
        rendering = await content_types.rendering(conn, type_id)
    return one({**ct.to_json(), "rendering": rendering}, headers=version_etag(ct.version))


@put("/content-types/{type_id:str}", opt={**WRITE, "doc": Doc((200, 201), one_of(ContentType), (409, 412), body=ContentTypeInput)})
async def put_type(request: Req, type_id: FromPath[str]) -> Response[bytes]:
    body = await read_json(request)
    async with pool(request).acquire() as conn:
        ct, created = await content_types.put_content_type(
            conn, type_id, body, write_context(request), assets_url(request), if_match(request),
            inline_entries(request),
        )
        rendering = await content_types.rendering(conn, type_id)
    headers = version_etag(ct.version)
    if created:
        headers["Location"] = f"/v1/content-types/{type_id}"
    return one({**ct.to_json(), "rendering": rendering}, 201 if created else 200, headers)


@delete("/content-types/{type_id:str}", opt={**WRITE, "doc": Doc(204, None, (404, 409))}, status_code=204)
async def delete_type(request: Req, type_id: FromPath[str]) -> None:
    async with pool(request).acquire() as conn:
        await content_types.delete_content_type(conn, type_id, write_context(request))


@get("/locales", opt={"doc": Doc(200, list_of(Locale), query=LIST_QUERY)})
async def list_locales(request: Req) -> Response[bytes]:
    limit, cursor = page_params(request, LOCALE_CODE)
    async with pool(request).acquire() as conn:
        rows = await locales.list_locales(conn)
    page, next_cursor = page_after(rows, lambda row: row["code"], limit, cursor)
    return many(page, {"limit": limit, "next_cursor": next_cursor, "total": len(rows)})


@put("/locales/{code:str}", opt={**WRITE, "doc": Doc((200, 201), one_of(Locale), (409,), body=LocaleInput)})
async def put_locale(request: Req, code: FromPath[str]) -> Response[bytes]:
    body = await read_json(request)
    async with pool(request).acquire() as conn:
        data, created = await locales.put_locale(
            conn, code, body, write_context(request), assets_url(request), inline_entries(request),
        )
    return one(data, 201 if created else 200)


@delete("/locales/{code:str}", opt={**WRITE, "doc": Doc(204, None, (404, 409), query=("force",))}, status_code=204)
async def delete_locale(request: Req, code: FromPath[str]) -> None:
    force = force_param(request)
    async with pool(request).acquire() as conn:
        await locales.delete_locale(
            conn, code, force, write_context(request), assets_url(request), inline_entries(request),
        )


SCHEMA_ROUTES = Router(
    "/v1", guards=[management_guard],
    route_handlers=[list_types, get_type, put_type, delete_type, list_locales, put_locale, delete_locale],
)
