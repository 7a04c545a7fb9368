"""Delivery REST: published entries (and drafts under /preview), sync, content types, locales, /cdn/.

Thin: parse the request, call reads.py / sync.py, answer with the caching rules of cache.py.
Every route but /cdn/ sits behind `delivery_guard`, set once per router; a `type_id` path parameter
is checked against the credential's content types there.
"""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path
from typing import Any

from litestar import Request, Response, Router, get
from litestar._parsers import parse_query_string
from litestar.params import FromPath

from .. import render
from ..credentials.guards import current, delivery_guard
from ..cursors import page_after
from ..http import JSON, encode, page_params, query_int
from ..openapi import LIST_QUERY, ContentType, Doc, Entry, Locale, SyncPage, list_of, one_of
from ..problems import not_found
from ..schema.locales import locale_json
from ..schema.model import (
    LOCALE_CODE,
    TYPE_ID,
)
from . import sync
from .cache import answer_headers, etag_matches
from .reads import for_credential, make_read

Req = Request[Any, Any, Any]


def _respond(request: Req, body: bytes, etag: str, tags: tuple[str, ...], preview: bool) -> Response[bytes]:
    cache_control = None if preview else request.app.state.settings.cache_control
    headers = answer_headers(etag, tags, cache_control)
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(content=b"", status_code=304, headers=headers)
    return Response(content=body, media_type=JSON, headers=headers)


async def _read(
    request: Req, type_id: str, entry_id: str | None, slug: str | None, preview: bool
) -> Response[bytes]:
    pairs = parse_query_string(request.scope["query_string"])
    read = make_read(request.scope["path"], pairs, type_id, entry_id=entry_id, slug=slug, preview=preview)
    read = for_credential(read, current(request).content_types)
    result = await request.app.state.reads.answer(read)
    return _respond(request, result.body, result.etag, result.tags, preview)


LIST_DOC = Doc(
    200, list_of(Entry), (404,), query=("locale", "sort", "limit", "cursor", "fields", "include", "depth", "q"),
    extra=(304,),
)
ENTRY_DOC = Doc(200, one_of(Entry), (404,), query=("locale", "fields", "include", "depth"), extra=(304,))


def _entry_routes(preview: bool) -> list[Any]:
    """The three entry routes, published (/api/v1) or draft (/preview/v1): one set of handlers."""

    @get("/entries/{type_id:str}", opt={"doc": LIST_DOC})
    async def list_entries(request: Req, type_id: FromPath[str]) -> Response[bytes]:
        return await _read(request, type_id, None, None, preview)

    @get("/entries/{type_id:str}/{entry_id:str}", opt={"doc": ENTRY_DOC})
    async def get_entry(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> Response[bytes]:
        return await _read(request, type_id, entry_id, None, preview)

    @get("/entries/{type_id:str}/by-slug/{slug:str}", opt={"doc": ENTRY_DOC})
    async def get_entry_by_slug(request: Req, type_id: FromPath[str], slug: FromPath[str]) -> Response[bytes]:
        return await _read(request, type_id, None, slug, preview)

    return [list_entries, get_entry, get_entry_by_slug]


@get("/sync", opt={"doc": Doc(200, SyncPage, (404, 410), query=("type", "locale", "cursor", "limit"))})
async def sync_entries(request: Req) -> Response[bytes]:
    state = request.app.state
    limit = query_int(request, "limit", sync.PAGE, 1, sync.PAGE)
    params = request.query_params
    type_id, locale, cursor = await sync.resolve(
        state.types, current(request), params.get("type") or None, params.get("locale") or None, params.get("cursor"),
    )
    async with state.read_pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        page = await sync.sync_page(conn, type_id, locale, cursor, limit)
    # Cursors are per client: never cached, here or on the way.
    return Response(content=page.body(limit), media_type=JSON, headers={"Cache-Control": "no-store"})


@get("/content-types", opt={"doc": Doc(200, list_of(ContentType), query=LIST_QUERY, extra=(304,))})
async def list_content_types(request: Req) -> Response[bytes]:
    limit, cursor = page_params(request, TYPE_ID)
    credential = current(request)
    visible = [ct for ct in (await request.app.state.types.types()).values() if credential.may_use_type(ct.id)]
    page, next_cursor = page_after(visible, lambda ct: ct.id, limit, cursor)
    meta = {"limit": limit, "next_cursor": next_cursor, "total": len(visible)}
    body = encode({"data": [ct.to_json() for ct in page], "meta": meta})
    return _respond(request, body, render.answer_etag(body), ("schema",), False)


@get("/content-types/{type_id:str}", opt={"doc": Doc(200, one_of(ContentType), (404,), extra=(304,))})
async def get_content_type(request: Req, type_id: FromPath[str]) -> Response[bytes]:
    ct = await request.app.state.types.get(type_id)
    if ct is None:
        raise not_found("content type")
    body = encode({"data": ct.to_json()})
    return _respond(request, body, render.answer_etag(body), (f"type:{type_id}",), False)


@get("/locales", opt={"doc": Doc(200, list_of(Locale), query=LIST_QUERY, extra=(304,))})
async def list_locales(request: Req) -> Response[bytes]:
    limit, cursor = page_params(request, LOCALE_CODE)
    rows = list((await request.app.state.types.locales()).rows.values())
    page, next_cursor = page_after(rows, lambda row: row["code"], limit, cursor)
    body = encode({"data": [locale_json(row) for row in page], "meta": {
        "limit": limit, "next_cursor": next_cursor, "total": len(rows),
    }})
    return _respond(request, body, render.answer_etag(body), ("schema",), False)


def _read_object(root: Path, relative: str) -> bytes | None:
    """The file under root for a /cdn/ key, or None; never anything outside root or hidden."""
    parts = relative.split("/")
    if not relative or "\x00" in relative or any(p in ("", "..") or p.startswith(".") for p in parts):
        return None
    base = root.resolve()
    target = (base / relative).resolve()
    if base not in target.parents or not target.is_file():
        return None
    return target.read_bytes()


@get("/cdn/{key:path}", opt={"public": True}, include_in_schema=False)
async def cdn(request: Req, key: FromPath[str]) -> Response[bytes]:
    """The embedded object store, served as a CDN would serve the bucket."""
    relative = key.lstrip("/")
    body = await asyncio.to_thread(_read_object, Path(request.app.state.settings.objects_dir), relative)
    if body is None:
        raise not_found("object")
    media_type = mimetypes.guess_type(relative)[0] or "application/octet-stream"
    etag = render.answer_etag(body)
    headers = {"ETag": f'"{etag}"', "Cache-Control": request.app.state.settings.cache_control}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(content=b"", status_code=304, headers=headers)
    return Response(content=body, media_type=media_type, headers=headers)


DELIVERY_ROUTES = [
    Router(
        "/api/v1", guards=[delivery_guard],
        route_handlers=[*_entry_routes(False), sync_entries, list_content_types, get_content_type, list_locales],
    ),
    Router("/preview/v1", guards=[delivery_guard], opt={"preview": True}, route_handlers=_entry_routes(True)),
    cdn,
]
