"""Delivery REST: published entries (and drafts under /preview), content types, locales, /cdn/."""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path
from typing import Any

from litestar import Request, Response, get
from litestar.params import FromPath

from .. import render
from ..credentials.auth import current, delivery_guard, require_type_access
from ..http import JSON, encode, many
from ..problems import ProblemError, malformed, not_found
from . import delivery
from . import query as q
from .schemas import RESOURCE_ID, ContentType
from .service import Locales, locale_json, resolve_locale

Req = Request[Any, Any, Any]
PREVIEW = {"preview": True}


def _cache_headers(request: Req, etag: str, tags: tuple[str, ...], preview: bool) -> dict[str, str]:
    headers = {"ETag": f'"{etag}"'}
    if preview:
        headers["Cache-Control"] = "no-store"
        return headers
    headers["Cache-Control"] = request.app.state.settings.cache_control
    headers["Surrogate-Key"] = " ".join(tags)
    headers["Cache-Tag"] = ",".join(tags)
    return headers


def _not_modified(request: Req, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/").strip('"') == etag for tag in header.split(","))


def _respond(request: Req, body: bytes, etag: str, tags: tuple[str, ...], preview: bool) -> Response[bytes]:
    headers = _cache_headers(request, etag, tags, preview)
    if _not_modified(request, etag):
        return Response(content=b"", status_code=304, headers=headers)
    return Response(content=body, media_type=JSON, headers=headers)


def _cache_key(request: Req) -> str:
    return request.scope["path"] + "?" + request.scope["query_string"].decode("latin-1")


async def _schema(request: Req, type_id: FromPath[str]) -> tuple[ContentType, dict[str, ContentType], Locales, str]:
    state = request.app.state
    require_type_access(current(request), type_id)
    ct = await state.types.get(type_id)
    if ct is None:
        raise not_found("content type")
    locales = await state.types.locales(request.query_params.get("locale"))
    locale = resolve_locale(locales, request.query_params.get("locale"))
    return ct, await state.types.types(), locales, locale


def _single_options(request: Req, ct: ContentType, types: dict[str, ContentType], locale: str) -> q.ListQuery | None:
    params = request.query_params
    if not any(k in params for k in ("fields", "include", "depth")):
        return None
    return q.parse_list_query(
        {k: v for k, v in params.items() if k in ("fields", "include", "depth")}, ct, types,
        locale=locale, default_sort="-published_at",
    )


async def _list(request: Req, type_id: str, preview: bool) -> Response[bytes]:
    state = request.app.state
    ct, types, locales, locale = await _schema(request, type_id)
    cache = None if preview else state.cache
    key = _cache_key(request)
    if cache is not None and (hit := cache.get(key)) is not None:
        return _respond(request, hit.body, hit.etag, hit.tags, preview)
    generation = cache.generation if cache is not None else 0
    query = q.parse_list_query(request.query_params, ct, types, locale=locale, default_sort="-published_at")
    async with state.read_pool.acquire() as conn:
        if preview:
            result = await delivery.draft_list(conn, types, ct, locales, query, state.settings.assets_url)
        else:
            result = await delivery.published_list(conn, types, ct, query)
    if cache is not None:
        cache.put(key, result.body, result.etag, result.tags, generation)
    return _respond(request, result.body, result.etag, result.tags, preview)


async def _single(
    request: Req, type_id: str, entry_id: str | None, slug: str | None, preview: bool
) -> Response[bytes]:
    state = request.app.state
    ct, types, locales, locale = await _schema(request, type_id)
    cache = None if preview else state.cache
    key = _cache_key(request)
    if cache is not None and (hit := cache.get(key)) is not None:
        return _respond(request, hit.body, hit.etag, hit.tags, preview)
    generation = cache.generation if cache is not None else 0
    if entry_id is not None and not RESOURCE_ID.fullmatch(entry_id):
        raise not_found("entry")
    if slug is not None and (len(slug) > 200 or "\x00" in slug):
        raise not_found("entry")
    options = _single_options(request, ct, types, locale)
    include = options.include if options else []
    depth = options.depth if options else 1
    fields = options.fields if options else None
    async with state.read_pool.acquire() as conn:
        if preview:
            result = await delivery.draft_entry(
                conn, types, ct, locales, locale, state.settings.assets_url,
                entry_id=entry_id, slug=slug, include=include, depth=depth, fields=fields,
            )
        else:
            result = await delivery.published_entry(
                conn, types, ct, locale, entry_id=entry_id, slug=slug, include=include, depth=depth, fields=fields
            )
    if result is None:
        raise not_found("entry")
    if cache is not None:
        cache.put(key, result.body, result.etag, result.tags, generation)
    return _respond(request, result.body, result.etag, result.tags, preview)


@get("/api/v1/entries/{type_id:str}", guards=[delivery_guard])
async def list_entries(request: Req, type_id: FromPath[str]) -> Response[bytes]:
    return await _list(request, type_id, False)


@get("/api/v1/entries/{type_id:str}/{entry_id:str}", guards=[delivery_guard])
async def get_entry(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> Response[bytes]:
    return await _single(request, type_id, entry_id, None, False)


@get("/api/v1/entries/{type_id:str}/by-slug/{slug:str}", guards=[delivery_guard])
async def get_entry_by_slug(request: Req, type_id: FromPath[str], slug: FromPath[str]) -> Response[bytes]:
    return await _single(request, type_id, None, slug, False)


@get("/preview/v1/entries/{type_id:str}", guards=[delivery_guard], opt=PREVIEW)
async def preview_list(request: Req, type_id: FromPath[str]) -> Response[bytes]:
    return await _list(request, type_id, True)


@get("/preview/v1/entries/{type_id:str}/{entry_id:str}", guards=[delivery_guard], opt=PREVIEW)
async def preview_entry(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> Response[bytes]:
    return await _single(request, type_id, entry_id, None, True)


@get("/preview/v1/entries/{type_id:str}/by-slug/{slug:str}", guards=[delivery_guard], opt=PREVIEW)
async def preview_by_slug(request: Req, type_id: FromPath[str], slug: FromPath[str]) -> Response[bytes]:
    return await _single(request, type_id, None, slug, True)


async def _types_response(request: Req, preview: bool) -> Response[bytes]:
    types = await request.app.state.types.types()
    credential = current(request)
    data = [ct.to_json() for ct in types.values() if credential.may_use_type(ct.id)]
    body = encode({"data": data, "meta": {"limit": len(data), "next_cursor": None, "total": len(data)}})
    return _respond(request, body, render.etag_of(body), ("schema",), preview)


@get("/api/v1/content-types", guards=[delivery_guard])
async def list_content_types(request: Req) -> Response[bytes]:
    return await _types_response(request, False)


@get("/api/v1/content-types/{type_id:str}", guards=[delivery_guard])
async def get_content_type(request: Req, type_id: FromPath[str]) -> Response[bytes]:
    require_type_access(current(request), type_id)
    ct = await request.app.state.types.get(type_id)
    if ct is None:
        raise not_found("content type")
    body = encode({"data": ct.to_json()})
    return _respond(request, body, render.etag_of(body), (f"type:{type_id}",), False)


@get("/api/v1/locales", guards=[delivery_guard])
async def list_locales(request: Req) -> Response[bytes]:
    locales = await request.app.state.types.locales()
    data = [locale_json(row) for row in locales.rows.values()]
    body = encode({"data": data, "meta": {"limit": len(data), "next_cursor": None, "total": len(data)}})
    return _respond(request, body, render.etag_of(body), ("schema",), False)


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
    etag = render.etag_of(body)
    headers = {"ETag": f'"{etag}"', "Cache-Control": request.app.state.settings.cache_control}
    if _not_modified(request, etag):
        return Response(content=b"", status_code=304, headers=headers)
    return Response(content=body, media_type=media_type, headers=headers)


DELIVERY_ROUTES = [
    list_entries, get_entry, get_entry_by_slug, preview_list, preview_entry, preview_by_slug,
    list_content_types, get_content_type, list_locales, cdn,
]

__all__ = ["DELIVERY_ROUTES", "ProblemError", "malformed", "many"]
