"""Delivery REST: published entries (and drafts under /preview), content types, locales, /cdn/."""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from litestar import Request, Response, get
from litestar.params import FromPath

from .. import render
from ..credentials.auth import current, delivery_guard, require_type_access
from ..http import JSON, encode, many
from ..problems import ProblemError, malformed, not_found
from . import query as q
from . import repository as repo
from .schemas import RESOURCE_ID, ContentType
from .service import Locales, locale_json, resolve_locale

Req = Request[Any, Any, Any]
Fetch = Callable[[list[str]], Awaitable[dict[str, dict[str, Any]]]]
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
    locales = await state.types.locales()
    locale = resolve_locale(locales, request.query_params.get("locale"))
    return ct, await state.types.types(), locales, locale


def _fetch_published(conn: Any, locale: str) -> Fetch:
    async def fetch(ids: list[str]) -> dict[str, dict[str, Any]]:
        return {r["entry_id"]: render.decode(r["body"]) for r in await repo.documents_for(conn, ids, locale)}

    return fetch


def _fetch_drafts(conn: Any, types: dict[str, ContentType], locales: Locales, locale: str, assets_url: str) -> Fetch:
    async def fetch(ids: list[str]) -> dict[str, dict[str, Any]]:
        from .service import _assets_for

        out = {}
        for row in await repo.get_entries(conn, ids):
            ct = types.get(row["type"])
            if ct is None:
                continue
            assets = await _assets_for(conn, ct, row["data"], assets_url)
            out[row["id"]] = render.decode(
                render.render_entry(row, ct, locale, locales.chain(locale), assets, draft=True).body
            )
        return out

    return fetch


async def _expand(
    documents: list[dict[str, Any]], ct: ContentType, types: dict[str, ContentType], include: list[str],
    depth: int, fetch: Fetch,
) -> set[str]:
    """Resolve references inline, one batched fetch per level; returns the ids included."""
    included: set[str] = set()
    if not include:
        return included
    only: set[str] | None = None if include == ["*"] else set(include)
    level: list[tuple[dict[str, Any], ContentType, set[str] | None]] = [(d, ct, only) for d in documents]
    for _ in range(depth):
        wanted = {link["id"] for doc, doc_ct, names in level for link in render.reference_links(doc, doc_ct, names)}
        if not wanted:
            break
        # Fresh decoded copies per level: the same entry at two depths never becomes a cycle.
        found = await fetch(sorted(wanted))
        included |= set(found)
        next_level = []
        for doc, doc_ct, names in level:
            links = render.reference_links(doc, doc_ct, names)
            own = {
                link["id"]: dict(found[link["id"]], fields=dict(found[link["id"]].get("fields") or {}))
                for link in links if link["id"] in found
            }
            render.resolve_includes(doc, doc_ct, names, own)
            next_level.extend((d, types[d["type"]], None) for d in own.values() if d.get("type") in types)
        level = next_level
    return included


def _select_fields(document: dict[str, Any], fields: list[str] | None) -> None:
    if fields is not None:
        document["fields"] = {k: v for k, v in (document.get("fields") or {}).items() if k in fields}


async def _list(request: Req, type_id: FromPath[str], preview: bool) -> Response[bytes]:
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
            page = await q.fetch_page(conn, query, q.DraftSource(locales.chain(locale)), "e.*")
            fetch = _fetch_drafts(conn, types, locales, locale, state.settings.assets_url)
            rendered = await fetch([r["id"] for r in page.rows])
            documents = [rendered[r["id"]] for r in page.rows if r["id"] in rendered]
            bodies = None
        else:
            page = await q.fetch_page(conn, query, q.DeliverySource(), "d.entry_id, d.body")
            fetch = _fetch_published(conn, locale)
            bodies = [r["body"] for r in page.rows]
            documents = []
        meta = {"limit": query.limit, "next_cursor": page.next_cursor, "total": page.total}
        ids = [d["id"] for d in documents] if preview else [r["entry_id"] for r in page.rows]
        included: set[str] = set()
        if bodies is not None and (query.include or query.fields is not None):
            documents = [render.decode(b) for b in bodies]
            bodies = None
        if bodies is None:
            included = await _expand(documents, ct, types, query.include, query.depth, fetch)
            for document in documents:
                _select_fields(document, query.fields)
    body = render.list_envelope(bodies if bodies is not None else [encode(d) for d in documents], meta)
    tags = (f"type:{type_id}", *(f"entry:{i}" for i in dict.fromkeys([*ids, *sorted(included)])))
    etag = render.etag_of(body)
    if cache is not None:
        cache.put(key, body, etag, tags, generation)
    return _respond(request, body, etag, tags, preview)


def _single_params(request: Req, ct: ContentType, types: dict[str, ContentType], locale: str) -> q.ListQuery | None:
    params = request.query_params
    if not any(k in params for k in ("fields", "include", "depth")):
        return None
    return q.parse_list_query(
        {k: v for k, v in params.items() if k in ("fields", "include", "depth")}, ct, types,
        locale=locale, default_sort="-published_at",
    )


async def _single(request: Req, type_id: FromPath[str], entry_id: FromPath[str] | None, slug: FromPath[str] | None, preview: bool) -> Response[bytes]:
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
    options = _single_params(request, ct, types, locale)
    async with state.read_pool.acquire() as conn:
        if preview:
            found_id = entry_id
            if slug is not None:
                found_id = await conn.fetchval(
                    "SELECT entry_id FROM entry_unique_values u JOIN content_types t ON t.id = u.type "
                    "WHERE u.type = $1 AND u.value = $2 AND u.locale = ANY($3::text[]) LIMIT 1",
                    type_id, slug, [*locales.chain(locale), "_"],
                )
            fetch = _fetch_drafts(conn, types, locales, locale, state.settings.assets_url)
            docs = await fetch([found_id]) if found_id else {}
            document = docs.get(found_id or "")
            if document is None or document.get("type") != type_id:
                raise not_found("entry")
            doc_id = document["id"]
            raw = None
        else:
            row = (
                await repo.document(conn, type_id, locale, entry_id) if entry_id is not None
                else await repo.document_by_slug(conn, type_id, locale, slug or "")
            )
            if row is None:
                raise not_found("entry")
            doc_id = entry_id or row["entry_id"]
            raw = row["body"]
            fetch = _fetch_published(conn, locale)
            document = render.decode(raw) if options is not None else {}
        included: set[str] = set()
        if options is not None:
            included = await _expand([document], ct, types, options.include, options.depth, fetch)
            _select_fields(document, options.fields)
    if raw is not None and options is None:
        body = render.envelope(raw)
        etag = row["etag"]
    else:
        body = render.envelope(encode(document))
        etag = render.etag_of(body)
    tags = tuple(f"entry:{i}" for i in dict.fromkeys([doc_id, *sorted(included)]))
    if cache is not None:
        cache.put(key, body, etag, tags, generation)
    return _respond(request, body, etag, tags, preview)


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
