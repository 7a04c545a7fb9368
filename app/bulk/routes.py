"""`POST /v1/bulk` (thin: read the body, call the service, answer)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post

from ..credentials.guards import management_guard
from ..http import one, read_json
from ..openapi import BulkInput, BulkResults, Doc, one_of
from ..routing import assets_url, pool, write_context
from . import service

Req = Request[Any, Any, Any]


@post("/v1/bulk", guards=[management_guard], opt={
    "scope": "content:write", "doc": Doc(200, one_of(BulkResults), body=BulkInput),
})
async def run_bulk(request: Req) -> Response[bytes]:
    body = await read_json(request, limit=request.app.state.settings.max_bulk_body_bytes)
    async with pool(request).acquire() as conn:
        results = await service.run_bulk(conn, body, write_context(request), assets_url(request))
    return one({"results": results})


BULK_ROUTES = [run_bulk]
