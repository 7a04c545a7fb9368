"""The delivery hot path: answer a cached GET before Litestar's routing, guards and response layers.

Only a request that would certainly get exactly the cached answer is served here: a GET of an entry
or a list under /api/v1/entries/, a cache hit (or a purged list that another request is recomputing,
see reads.py), and a credential already known to this process that may read the type.
Everything else (misses, unknown or missing keys, any doubt) goes to the full app, which applies
every rule and fills the cache. The key is computed by the same function the routes use.
"""

from __future__ import annotations

from typing import Any

from litestar._parsers import parse_query_string
from litestar.types import ASGIApp, Receive, Scope, Send

from .cache import CachedResponse, etag_matches
from .reads import Read, make_read

PREFIX = "/api/v1/entries/"
_JSON = (b"content-type", b"application/json")


def read_of(path: str, query_string: bytes) -> Read | None:
    """The delivery read a path under PREFIX asks for, as the routes would see it (None: not one)."""
    parts = path[len(PREFIX):].split("/")
    if not all(parts) or len(parts) > 3 or (len(parts) == 3 and parts[1] != "by-slug"):
        return None
    pairs = parse_query_string(query_string)
    if len(parts) == 1:
        return make_read(path, pairs, parts[0])
    if len(parts) == 2:
        return make_read(path, pairs, parts[0], entry_id=parts[1])
    return make_read(path, pairs, parts[0], slug=parts[2])


class DeliveryFastPath:
    def __init__(self, app: Any, inner: ASGIApp) -> None:
        self.app = app  # the Litestar app: its state holds the cache, credentials and settings
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "GET" and scope["path"].startswith(PREFIX):
            state = self.app.state
            cache = getattr(state, "cache", None)
            read = read_of(scope["path"], scope["query_string"]) if cache is not None else None
            item = cache.peek(read.key) if cache is not None and read is not None else None
            if (
                read is not None and item is not None
                and (item.stale_since is None or state.reads.serves_stale(read.key, item.stale_since))
                and self._may_read(read, scope, state)
            ):
                await self._answer(item, scope, send)
                return
        await self.inner(scope, receive, send)

    def _may_read(self, read: Read, scope: Scope, state: Any) -> bool:
        authorization = api_key = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"x-api-key":
                api_key = value
        if authorization is not None:
            scheme, _, secret = authorization.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                return False
            presented = secret.strip()
        elif api_key is not None:
            presented = api_key.decode("latin-1").strip()
        else:
            return bool(state.settings.public_delivery)
        credential = state.credentials.cached(presented)
        if credential is None or credential.kind not in ("delivery", "preview"):
            return False
        return credential.may_use_type(read.type_id)

    async def _answer(self, item: CachedResponse, scope: Scope, send: Any) -> None:
        if_none_match = next((v for k, v in scope["headers"] if k == b"if-none-match"), None)
        if if_none_match is not None and etag_matches(if_none_match.decode("latin-1"), item.etag):
            await send({"type": "http.response.start", "status": 304, "headers": item.raw_headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [*item.raw_headers, _JSON, (b"content-length", str(len(item.body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": item.body})
