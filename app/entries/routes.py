"""Management routes for entries and their versions (thin: parse, call the service, answer).

One router: `management_guard` checks the credential, the route's scope and the `type_id` path
parameter against the credential's content types.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, delete, get, patch, post, put
from litestar.params import FromPath

from ..credentials.guards import current, management_guard
from ..http import many, one, query_int, read_json
from ..openapi import LIST_QUERY, Doc, EntryInput, ManagementEntry, Version, VersionSummary, list_of, one_of
from ..routing import assets_url, force_param, if_match, pool, version_etag, write_context
from . import service

Req = Request[Any, Any, Any]
READ, WRITE, PUBLISH = {"scope": "content:read"}, {"scope": "content:write"}, {"scope": "content:publish"}
ENTRY = one_of(ManagementEntry)
CHANGE = (404, 409, 412)  # a missing entry, a conflict (slug, unique, published), a stale If-Match
LIST_PARAMS = ("locale", "sort", "limit", "cursor", "fields", "q", "status")


@get("/{type_id:str}", opt={**READ, "doc": Doc(200, list_of(ManagementEntry), (404,), query=LIST_PARAMS)})
async def list_entries(request: Req, type_id: FromPath[str]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        data, meta = await service.list_entries(conn, type_id, request.query_params, current(request).content_types)
    return many(data, meta)


@post("/{type_id:str}", opt={**WRITE, "doc": Doc(201, ENTRY, (404, 409), body=EntryInput, query=("locale",))})
async def create_entry(request: Req, type_id: FromPath[str]) -> Response[bytes]:
    body = await read_json(request)
    async with pool(request).acquire() as conn:
        entry, _ = await service.create_entry(
            conn, type_id, None, request.query_params.get("locale"), body, write_context(request)
        )
    headers = version_etag(entry["version"])
    headers["Location"] = f"/v1/entries/{type_id}/{entry['id']}"
    return one(entry, 201, headers)


@get("/{type_id:str}/{entry_id:str}", opt={**READ, "doc": Doc(200, ENTRY, (404,), query=("locale",))})
async def get_entry(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        entry, version = await service.get_entry(conn, type_id, entry_id, request.query_params.get("locale"))
    return one(entry, headers=version_etag(version))


@put("/{type_id:str}/{entry_id:str}", opt={**WRITE, "doc": Doc((200, 201), ENTRY, CHANGE, body=EntryInput, query=("locale",))})
async def put_entry(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> Response[bytes]:
    body = await read_json(request)
    async with pool(request).acquire() as conn:
        entry, created = await service.put_entry(
            conn, type_id, entry_id, request.query_params.get("locale"), body, write_context(request), if_match(request),
        )
    headers = version_etag(entry["version"])
    if created:
        headers["Location"] = f"/v1/entries/{type_id}/{entry_id}"
    return one(entry, 201 if created else 200, headers)


@patch("/{type_id:str}/{entry_id:str}", opt={**WRITE, "doc": Doc(200, ENTRY, CHANGE, body=EntryInput, query=("locale",))})
async def patch_entry(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> Response[bytes]:
    body = await read_json(request, merge_patch=True)
    async with pool(request).acquire() as conn:
        entry = await service.patch_entry(
            conn, type_id, entry_id, request.query_params.get("locale"), body, write_context(request), if_match(request),
        )
    return one(entry, headers=version_etag(entry["version"]))


@delete("/{type_id:str}/{entry_id:str}", opt={**WRITE, "doc": Doc(204, None, CHANGE, query=("force",))}, status_code=204)
async def delete_entry(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> None:
    force = force_param(request)
    async with pool(request).acquire() as conn:
        await service.delete_entry(conn, type_id, entry_id, force, write_context(request), if_match(request))


@post("/{type_id:str}/{entry_id:str}/publish", opt={**PUBLISH, "doc": Doc(200, ENTRY, (*CHANGE, 422))})
async def publish_entry(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        entry = await service.publish_entry(
            conn, type_id, entry_id, write_context(request), assets_url(request), if_match(request)
        )
    return one(entry, 200, version_etag(entry["version"]))


@post("/{type_id:str}/{entry_id:str}/unpublish", opt={**PUBLISH, "doc": Doc(200, ENTRY, CHANGE)})
async def unpublish_entry(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        entry = await service.unpublish_entry(conn, type_id, entry_id, write_context(request), if_match(request))
    return one(entry, 200, version_etag(entry["version"]))


@get("/{type_id:str}/{entry_id:str}/versions", opt={**READ, "doc": Doc(200, list_of(VersionSummary), (404,), query=LIST_QUERY)})
async def list_versions(request: Req, type_id: FromPath[str], entry_id: FromPath[str]) -> Response[bytes]:
    limit = query_int(request, "limit", 20, 1, 100)
    async with pool(request).acquire() as conn:
        data, meta = await service.list_versions(conn, type_id, entry_id, request.query_params.get("cursor"), limit)
    return many(data, meta)


@get("/{type_id:str}/{entry_id:str}/versions/{version:int}", opt={**READ, "doc": Doc(200, one_of(Version), (404,))})
async def get_version(request: Req, type_id: FromPath[str], entry_id: FromPath[str], version: FromPath[int]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        return one(await service.get_version(conn, type_id, entry_id, version))


@post("/{type_id:str}/{entry_id:str}/versions/{version:int}/restore", opt={**WRITE, "doc": Doc(200, ENTRY, (*CHANGE, 422))})
async def restore_version(request: Req, type_id: FromPath[str], entry_id: FromPath[str], version: FromPath[int]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        entry = await service.restore_version(
            conn, type_id, entry_id, version, write_context(request), if_match(request)
        )
    return one(entry, 200, version_etag(entry["version"]))


ENTRY_ROUTES = Router(
    "/v1/entries", guards=[management_guard],
    route_handlers=[
        list_entries, create_entry, get_entry, put_entry, patch_entry, delete_entry, publish_entry, unpublish_entry,
        list_versions, get_version, restore_version,
    ],
)
