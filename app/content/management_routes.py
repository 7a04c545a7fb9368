"""Management routes for content types, locales and entries (thin: parse, call the service, answer)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, patch, post, put
from litestar.params import FromPath

from ..credentials.auth import client_ip, current, management_guard, require_type_access
from ..http import many, one, query_int, read_json
from ..problems import malformed, not_found
from . import query as q
from . import repository as repo
from . import service
from .schemas import content_type_from_row

Req = Request[Any, Any, Any]


def _ctx(request: Req) -> service.WriteContext:
    return service.WriteContext(current(request), request.scope["state"]["request_id"], client_ip(request))


def _assets_url(request: Req) -> str:
    return request.app.state.settings.assets_url


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def _force(request: Req) -> bool:
    raw = request.query_params.get("force", "false")
    if raw not in ("true", "false", "1", "0"):
        raise malformed("force", "must be true or false")
    return raw in ("true", "1")


def _pool(request: Req) -> Any:
    return request.app.state.pool


# --- content types -----------------------------------------------------------------------------


@get("/v1/content-types", guards=[management_guard])
async def list_types(request: Req) -> Response[bytes]:
    async with _pool(request).acquire() as conn:
        rows = await repo.all_types(conn)
    data = [content_type_from_row(r).to_json() for r in rows]
    return many(data, {"limit": len(data), "next_cursor": None, "total": len(data)})


@get("/v1/content-types/{type_id:str}", guards=[management_guard])
async def get_type(request: Req, type_id: FromPath[str]) -> Response[bytes]:
    async with _pool(request).acquire() as conn:
        row = await repo.get_type(conn, type_id)
    if row is None:
        raise not_found("content type")
    ct = content_type_from_row(row)
    return one(ct.to_json(), headers=_etag(ct.version))


@put("/v1/content-types/{type_id:str}", guards=[management_guard], opt={"scope": "schema:write"})
async def put_type(request: Req, type_id: FromPath[str]) -> Response[bytes]:
    body = await read_json(request)
    async with _pool(request).acquire() as conn:
        ct, created = await service.put_content_type(
            conn, type_id, body, _ctx(request), _assets_url(request), request.headers.get("if-match")
        )
    headers = _etag(ct.version)
    if created:
        headers["Location"] = f"/v1/content-types/{type_id}"
    return one(ct.to_json(), 201 if created else 200, headers)


@delete("/v1/content-types/{type_id:str}", guards=[management_guard], opt={"scope": "schema:write"}, status_code=204)
async def delete_type(request: Req, type_id: FromPath[str]) -> None:
    async with _pool(request).acquire() as conn:
        await service.delete_content_type(conn, type_id, _ctx(request))


# --- locales -----------------------------------------------------------------------------------


@get("/v1/locales", guards=[management_guard])
async def list_locales(request: Req) -> Response[bytes]:
    async with _pool(request).acquire() as conn:
        rows = await repo.all_locales(conn)
    data = [service.locale_json(dict(r)) for r in rows]
    return many(data, {"limit": len(data), "next_cursor": None, "total": len(data)})


@put("/v1/locales/{code:str}", guards=[management_guard], opt={"scope": "schema:write"})
async def put_locale(request: Req, code: FromPath[str]) -> Response[bytes]:
    body = await read_json(request)
    async with _pool(request).acquire() as conn:
        data, created = await service.put_locale(conn, code, body, _ctx(request), _assets_url(request))
    return one(data, 201 if created else 200)


@delete("/v1/locales/{code:str}", guards=[management_guard], opt={"scope": "schema:write"}, status_code=204)
async def delete_locale(request: Req, code: FromPath[str]) -> None:
    force = _force(request)
    async with _pool(request).acquire() as conn:
        await service.delete_locale(conn, code, force, _ctx(request), _assets_url(request))


# --- entries -----------------------------------------------------------------------------------


@get("/v1/entries/{type_id:str}", guards=[management_guard], opt={"scope": "content:read"})
async def list_entries(request: Req, type_id: FromPath[str]) -> Response[bytes]:
    require_type_access(current(request), type_id)
    async with _pool(request).acquire() as conn:
        types = await service.load_types(conn)
        ct = types.get(type_id)
        if ct is None:
            raise not_found("content type")
        locales = await service.load_locales(conn)
        locale = service.resolve_locale(locales, request.query_params.get("locale"))
        query = q.parse_list_query(
            request.query_params, ct, types, locale=locale, default_sort="-updated_at", allow_status=True
        )
        page = await q.fetch_page(conn, query, q.DraftSource(locales.chain(locale)), "e.*")
    data = []
    for row in page.rows:
        entry = service.management_entry(row, ct, locale, locales)
        if query.fields is not None:
            entry["fields"] = {k: v for k, v in entry["fields"].items() if k in query.fields}
        data.append(entry)
    return many(data, {"limit": query.limit, "next_cursor": page.next_cursor, "total": page.total})


@post("/v1/entries/{type_id:str}", guards=[management_guard], opt={"scope": "content:write"})
async def create_entry(request: Req, type_id: FromPath[str]) -> Response[bytes]:
    require_type_access(current(request), type_id)
    body = await read_json(request)
    async with _pool(request).acquire() as conn:
        entry, _ = await service.create_entry(conn, type_id, None, request.query_params.get("locale"), body, _ctx(request))
    headers = _etag(entry["version"])
    headers["Location"] = f"/v1/entries/{type_id}/{entry['id']}"
    return one(entry, 201, headers)


@get("/v1/entries/{type_id:str}/{entry_id:str}", guards=[management_guard], opt={"scope": "content:read"})
async def get_entry(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> Response[bytes]:
    require_type_access(current(request), type_id)
    async with _pool(request).acquire() as conn:
        entry, version = await service.get_entry(conn, type_id, entry_id, request.query_params.get("locale"))
    return one(entry, headers=_etag(version))


@put("/v1/entries/{type_id:str}/{entry_id:str}", guards=[management_guard], opt={"scope": "content:write"})
async def put_entry(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> Response[bytes]:
    require_type_access(current(request), type_id)
    body = await read_json(request)
    async with _pool(request).acquire() as conn:
        entry, created = await service.put_entry(
            conn, type_id, entry_id, request.query_params.get("locale"), body, _ctx(request),
            request.headers.get("if-match"),
        )
    headers = _etag(entry["version"])
    if created:
        headers["Location"] = f"/v1/entries/{type_id}/{entry_id}"
    return one(entry, 201 if created else 200, headers)


@patch("/v1/entries/{type_id:str}/{entry_id:str}", guards=[management_guard], opt={"scope": "content:write"})
async def patch_entry(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> Response[bytes]:
    require_type_access(current(request), type_id)
    body = await read_json(request, merge_patch=True)
    async with _pool(request).acquire() as conn:
        entry = await service.patch_entry(
            conn, type_id, entry_id, request.query_params.get("locale"), body, _ctx(request),
            request.headers.get("if-match"),
        )
    return one(entry, headers=_etag(entry["version"]))


@delete(
    "/v1/entries/{type_id:str}/{entry_id:str}", guards=[management_guard], opt={"scope": "content:write"},
    status_code=204,
)
async def delete_entry(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> None:
    require_type_access(current(request), type_id)
    force = _force(request)
    async with _pool(request).acquire() as conn:
        await service.delete_entry(conn, type_id, entry_id, force, _ctx(request), request.headers.get("if-match"))


@post(
    "/v1/entries/{type_id:str}/{entry_id:str}/publish", guards=[management_guard], opt={"scope": "content:publish"}
)
async def publish_entry(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> Response[bytes]:
    require_type_access(current(request), type_id)
    async with _pool(request).acquire() as conn:
        entry = await service.publish_entry(
            conn, type_id, entry_id, _ctx(request), _assets_url(request), request.headers.get("if-match")
        )
    return one(entry, 200, _etag(entry["version"]))


@post(
    "/v1/entries/{type_id:str}/{entry_id:str}/unpublish", guards=[management_guard], opt={"scope": "content:publish"}
)
async def unpublish_entry(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> Response[bytes]:
    require_type_access(current(request), type_id)
    async with _pool(request).acquire() as conn:
        entry = await service.unpublish_entry(conn, type_id, entry_id, _ctx(request), request.headers.get("if-match"))
    return one(entry, 200, _etag(entry["version"]))


@get("/v1/entries/{type_id:str}/{entry_id:str}/versions", guards=[management_guard], opt={"scope": "content:read"})
async def list_versions(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> Response[bytes]:
    require_type_access(current(request), type_id)
    limit = query_int(request, "limit", 20, 1, 100)
    raw_cursor = request.query_params.get("cursor")
    if raw_cursor is not None and not (raw_cursor.isdigit() and len(raw_cursor) < 10):
        raise malformed("cursor", "is not a cursor from meta.next_cursor")
    async with _pool(request).acquire() as conn:
        await service.get_entry(conn, type_id, entry_id, None)
        rows = await repo.list_versions(conn, entry_id, int(raw_cursor) if raw_cursor else None, limit + 1)
        total = await conn.fetchval("SELECT count(*) FROM entry_versions WHERE entry_id = $1", entry_id)
    more = len(rows) > limit
    rows = rows[:limit]
    return many(
        [service.version_json(r) for r in rows],
        {"limit": limit, "next_cursor": str(rows[-1]["version"]) if more else None, "total": total},
    )


@get(
    "/v1/entries/{type_id:str}/{entry_id:str}/versions/{version:int}",
    guards=[management_guard], opt={"scope": "content:read"},
)
async def get_version(request: Req, type_id: FromPath[str], entry_id: FromPath[str], version: FromPath[int]) -> Response[bytes]:
    require_type_access(current(request), type_id)
    async with _pool(request).acquire() as conn:
        await service.get_entry(conn, type_id, entry_id, None)
        row = await repo.get_version(conn, entry_id, version)
        if row is None:
            raise not_found("version")
        types = await service.load_types(conn)
        locales = await service.load_locales(conn)
    data = service.version_json(row)
    data["fields"] = service.version_fields(types[type_id], row["data"], locales)
    return one(data)


@post(
    "/v1/entries/{type_id:str}/{entry_id:str}/versions/{version:int}/restore",
    guards=[management_guard], opt={"scope": "content:write"},
)
async def restore_version(request: Req, type_id: FromPath[str], entry_id: FromPath[str], version: FromPath[int]) -> Response[bytes]:
    require_type_access(current(request), type_id)
    async with _pool(request).acquire() as conn:
        entry = await service.restore_version(
            conn, type_id, entry_id, version, _ctx(request), request.headers.get("if-match")
        )
    return one(entry, 200, _etag(entry["version"]))


MANAGEMENT_ROUTES = [
    list_types, get_type, put_type, delete_type, list_locales, put_locale, delete_locale,
    list_entries, create_entry, get_entry, put_entry, patch_entry, delete_entry, publish_entry,
    unpublish_entry, list_versions, get_version, restore_version,
]
