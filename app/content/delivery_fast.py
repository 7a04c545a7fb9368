"""The delivery hot path: answer a cached GET before Litestar's routing, guards and response layers.

Only a request that would certainly get exactly the cached answer is served here: a GET under
/api/v1/entries/, a cache hit, and a credential already known to this process that may read
the type. Everything else (misses, unknown or missing keys, any doubt) goes to the full app,
which applies every rule and fills the cache.
"""

from __future__ import annotations

from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send

from .delivery_cache import CachedResponse

PREFIX = "/api/v1/entries/"
_JSON = (b"content-type", b"application/json")


def _wanted(if_none_match: bytes | None, etag: str) -> bool:
    """True when If-None-Match matches: the client already has these bytes."""
    if not if_none_match:
        return False
    text = if_none_match.decode("latin-1").strip()
    return text == "*" or any(t.strip().removeprefix("W/").strip('"') == etag for t in text.split(","))


class DeliveryFastPath:
    def __init__(self, app: Any, inner: ASGIApp) -> None:
        self.app = app  # the Litestar app: its state holds the cache, credentials and settings
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "GET" and scope["path"].startswith(PREFIX):
            state = self.app.state
            cache = getattr(state, "cache", None)
            if cache is not None:
                item = cache.peek(scope["path"] + "?" + scope["query_string"].decode("latin-1"))
                if item is not None and self._may_read(scope, state):
                    await self._answer(item, scope, send, state.settings.cache_control)
                    return
        await self.inner(scope, receive, send)

    def _may_read(self, scope: Scope, state: Any) -> bool:
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
        type_id = scope["path"][len(PREFIX):].split("/", 1)[0]
        return credential.may_use_type(type_id)

    async def _answer(self, item: CachedResponse, scope: Scope, send: Any, cache_control: str) -> None:
        headers = [
            (b"etag", f'"{item.etag}"'.encode()),
            (b"cache-control", cache_control.encode()),
            (b"surrogate-key", " ".join(item.tags).encode()),
            (b"cache-tag", ",".join(item.tags).encode()),
        ]
        if_none_match = next((v for k, v in scope["headers"] if k == b"if-none-match"), None)
        if _wanted(if_none_match, item.etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers += [_JSON, (b"content-length", str(len(item.body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": item.body})
