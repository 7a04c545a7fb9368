"""What the management route modules share: the write context of a request, common parameters,
version ETags."""

from __future__ import annotations

from typing import Any

from litestar import Request

from .audit.service import WriteContext
from .credentials.guards import client_ip, current
from .problems import malformed

Req = Request[Any, Any, Any]


def write_context(request: Req) -> WriteContext:
    return WriteContext(current(request), request.scope["state"]["request_id"], client_ip(request))


def assets_url(request: Req) -> str:
    return request.app.state.settings.assets_url  # type: ignore[no-any-return]


def pool(request: Req) -> Any:
    """Where a route takes its connection: the pool, or during an idempotent write the write's own
    connection (protection/idempotency.py), so the write and its stored answer commit together."""
    return request.scope["state"].get("borrowed_pool") or request.app.state.pool


def version_etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def if_match(request: Req) -> str | None:
    return request.headers.get("if-match")


def force_param(request: Req) -> bool:
    raw = request.query_params.get("force", "false")
    if raw not in ("true", "false", "1", "0"):
        raise malformed("force", "must be true or false")
    return raw in ("true", "1")
