"""The delivery hot path: answer a GET of an entry or a list under /api/v1/entries/ before
Litestar's routing, guards and response layers, when the credential is already known to this
process and may read the type.

A cache hit (or a purged list another request is recomputing, see reads.py) is answered from
memory; a miss is computed by the same `DeliveryReads` the routes call (the same key, the same
bytes, the same problems). Everything else (unknown or missing keys, other routes, any doubt) goes
to the full app, which applies every rule.
"""

from __future__ import annotations

import functools
from typing import Any

from litestar._parsers import parse_query_string
from litestar.types import ASGIApp, Receive, Scope, Send

from ..credentials.keys import presented_in
from ..credentials.schemas import ANONYMOUS, Credential
from ..problems import PROBLEM_JSON, ProblemError, problem_body
from .cache import etag_matches, graphql_key, raw_answer_headers
from .reads import Read, for_credential, make_read

PREFIX = "/api/v1/entries/"
GRAPHQL = "/graphql"
_JSON = (b"content-type", b"application/json")


# Reads repeat (the same few URLs take most of the traffic): their parsing is remembered for short
# URLs (at most _MEMO_SIZE of them, so at most ~2 MB).
_MEMO_URL_BYTES = 512
_MEMO_SIZE = 4096


def read_of(path: str, query_string: bytes) -> Read | None:
    """The delivery read a path under PREFIX asks for, as the routes would see it (None: not one).
    A Read is never changed once made, so the memo's are shared."""
    if len(path) + len(query_string) > _MEMO_URL_BYTES:
        return _read_of(path, query_string)
    return _remembered_read_of(path, query_string)


def _read_of(path: str, query_string: bytes) -> Read | None:
    parts = path[len(PREFIX):].split("/")
    if not all(parts) or len(parts) > 3 or (len(parts) == 3 and parts[1] != "by-slug"):
        return None
    pairs = parse_query_string(query_string)
    if len(parts) == 1:
        return make_read(path, pairs, parts[0])
    if len(parts) == 2:
        return make_read(path, pairs, parts[0], entry_id=parts[1])
    return make_read(path, pairs, parts[0], slug=parts[2])


_remembered_read_of = functools.lru_cache(maxsize=_MEMO_SIZE)(_read_of)


class DeliveryFastPath:
    # The rate limits (the layer before) leave their headers in scope["state"]["rate_headers"]:
    # this layer adds them to what it answers and to what the full app answers.
    adds_rate_headers = True

    def __init__(self, app: Any, inner: ASGIApp) -> None:
        self.app = app  # the Litestar app: its state holds the cache, credentials and settings
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "GET":
            state = self.app.state
            path = scope["path"]
            if path.startswith(PREFIX):
                read = read_of(path, scope["query_string"])
                credential = self._credential(scope, state) if read is not None else None
                if (
                    read is not None and credential is not None and credential.may_use_type(read.type_id)
                    and await self._answered(for_credential(read, credential.content_types), scope, send, state)
                ):
                    return
            elif path == GRAPHQL and await self._graphql_hit(scope, send, state):
                return
        rate_headers = scope["state"].get("rate_headers")
        if rate_headers is None:
            await self.inner(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *rate_headers]
            await send(message)

        await self.inner(scope, receive, send_with_headers)

    async def _graphql_hit(self, scope: Scope, send: Send, state: Any) -> bool:
        """A GraphQL GET already in the cache (graphql/routes.py computes and stores the others)."""
        cache = getattr(state, "cache", None)
        if cache is None:
            return False
        parameters = dict(parse_query_string(scope["query_string"]))
        if not parameters.get("query") and not parameters.get("extensions"):
            return False  # GraphiQL, or a mistake the route answers
        credential = self._credential(scope, state)
        if credential is None:
            return False
        item = cache.peek(graphql_key(parameters, credential.content_types))
        if item is None or item.stale_since is not None:
            return False
        await self._answer(item.body, item.etag, item.raw_headers, scope, send)
        return True

    async def _answered(self, read: Read, scope: Scope, send: Send, state: Any) -> bool:
        """Answer from the cache, or compute the answer (reads.py: single flight, cached) without
        Litestar's routing and response layers. A problem (400, 404) is answered here too; anything
        else unexpected (the database away) is left to the full app, which maps it (503)."""
        cache = getattr(state, "cache", None)
        item = cache.peek(read.key) if cache is not None else None
        if item is not None and (item.stale_since is None or state.reads.serves_stale(read.key, item.stale_since)):
            await self._answer(item.body, item.etag, item.raw_headers, scope, send)
            return True
        try:
            result = await state.reads.answer(read)
        except ProblemError as problem:
            await self._problem(problem, scope, send)
            return True
        except Exception:
            return False
        await self._answer(
            result.body, result.etag, raw_answer_headers(result.etag, result.tags, state.settings.cache_control), scope,
            send,
        )
        return True

    def _credential(self, scope: Scope, state: Any) -> Credential | None:
        """The delivery credential of the request when this process already knows it (None: let the
        full app decide)."""
        known = scope["state"].get("presented")
        if known is not None:  # the rate limits (the layer before this one) have read it already
            presented, credential = known
        else:
            presented = presented_in(scope["headers"])
            credential = state.credentials.cached(presented) if presented else None
        if presented is None:
            return ANONYMOUS if state.settings.public_delivery else None
        if not presented:
            return None
        if credential is None or credential.kind not in ("delivery", "preview"):
            return None
        return credential

    async def _answer(
        self, body: bytes, etag: str, raw_headers: list[tuple[bytes, bytes]], scope: Scope, send: Any
    ) -> None:
        if_none_match = next((v for k, v in scope["headers"] if k == b"if-none-match"), None)
        if if_none_match is not None and etag_matches(if_none_match.decode("latin-1"), etag):
            await send({"type": "http.response.start", "status": 304,
                        "headers": [*raw_headers, *scope["state"].get("rate_headers", ())]})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [*raw_headers, _JSON, (b"content-length", str(len(body)).encode()),
                   *scope["state"].get("rate_headers", ())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _problem(self, problem: ProblemError, scope: Scope, send: Any) -> None:
        body = problem_body(problem, scope["state"].get("request_id"))
        headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in problem.headers.items()]
        headers += scope["state"].get("rate_headers", ())
        await send({"type": "http.response.start", "status": problem.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
