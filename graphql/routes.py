"""`/graphql` and `/preview/graphql` (POST, and GET for persisted queries and CDNs), the SDL at
`/graphql/schema.graphql`, and GraphiQL for a browser.

Thin: authenticate as the REST delivery routes do (delivery_guard), read the request, let
execution.py answer. GET answers of published content go through the delivery cache with the REST
rules: ETag and 304, Cache-Control, surrogate keys of every entry and type in the answer, purged by
the same tags. POST answers are kept there too, under the body's canonical JSON, but answered
`no-store` (for this process only, not for HTTP caches); preview answers never are.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response, Router, get, post
from strawberry.http.ides import get_graphql_ide_html

from cms.app import render
from cms.app.credentials.guards import current, delivery_guard
from cms.app.db.replica import ReplicaRouting
from cms.app.delivery.cache import answer_headers, etag_matches, graphql_key
from cms.app.delivery.documents import DraftDocuments, IncludeLimit, PublishedDocuments
from cms.app.problems import ProblemError

from . import execution, limits
from .persisted import PersistedQueries
from .schema import SchemaHolder

log = logging.getLogger("cms.graphql")

Req = Request[Any, Any, Any]
JSON = "application/json"
_decode = msgspec.json.decode
PUBLISHED = PublishedDocuments()


class GraphQLService:
    """One delivery process's GraphQL state: the schemas (published and preview), parsed documents
    and persisted queries."""

    def __init__(self, registry: Any, redis: Any, *, introspection: bool) -> None:
        self.registry = registry
        self.introspection = introspection
        self.published = SchemaHolder(registry)
        self.preview = SchemaHolder(registry, preview=True)
        self.documents = execution.Documents(introspection)
        self.persisted = PersistedQueries(redis)


def _service(request: Req) -> GraphQLService:
    return request.app.state.graphql  # type: ignore[no-any-return]


def _bad(message: str) -> execution.Request:
    raise _BadRequest(message)


class _BadRequest(Exception):
    pass


def _json_param(request: Req, name: str) -> Any:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        return _decode(raw)
    except msgspec.DecodeError:
        return _bad(f"`{name}` is not JSON")


def _from_params(request: Req) -> execution.Request:
    params = request.query_params
    variables, extensions = _json_param(request, "variables"), _json_param(request, "extensions")
    return _checked(params.get("query") or None, variables, params.get("operationName") or None, extensions)


async def _from_body(request: Req) -> execution.Request:
    body = await request.body()
    if len(body) > limits.MAX_BODY_BYTES:
        raise ProblemError(413, "too-large", f"a GraphQL request body is at most {limits.MAX_BODY_BYTES} bytes")
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/graphql"):
        return execution.Request(body.decode("utf-8", "replace"))
    try:
        payload = _decode(body)
    except msgspec.DecodeError:
        return _bad("the body is not JSON")
    if not isinstance(payload, dict):
        return _bad("the body is not a JSON object")
    return _checked(payload.get("query"), payload.get("variables"), payload.get("operationName"),
                    payload.get("extensions"))


def _checked(query: Any, variables: Any, operation_name: Any, extensions: Any) -> execution.Request:
    if query is not None and not isinstance(query, str):
        _bad("`query` must be a string")
    if variables is not None and not isinstance(variables, dict):
        _bad("`variables` must be an object")
    if operation_name is not None and not isinstance(operation_name, str):
        _bad("`operationName` must be a string")
    if extensions is not None and not isinstance(extensions, dict):
        _bad("`extensions` must be an object")
    if isinstance(query, str) and len(query.encode()) > limits.MAX_BODY_BYTES:
        raise ProblemError(413, "too-large", f"a GraphQL query is at most {limits.MAX_BODY_BYTES} bytes")
    return execution.Request(query, variables, operation_name, extensions)


def _error_body(message: str, code: str) -> bytes:
    return msgspec.json.encode({"errors": [{"message": message, "extensions": {"code": code}}]})


async def _answer(request: Req, parsed: execution.Request, *, preview: bool, cacheable: bool) -> Response[bytes]:
    service = _service(request)
    state = request.app.state
    credential = current(request)
    holder = service.preview if preview else service.published
    built = await holder.current()
    if preview:
        reader: Any = DraftDocuments(built.types, await state.types.locales(), state.settings.assets_url)
    else:
        reader = PUBLISHED
    # Published answers are kept in the delivery cache, purged by the same tags as REST: a GET's
    # under its parameters as sent (the fast path finds it there), a POST's under its canonical
    # JSON (only this process uses it: a POST stays `no-store` for HTTP caches).
    cache = state.cache if not preview else None
    key = None
    if cache is not None:
        parameters = dict(request.query_params) if cacheable else _canonical(parsed)
        key = graphql_key(parameters, credential.content_types)
        item = cache.get(key)
        if item is not None and item.stale_since is None:
            if not cacheable:
                return Response(content=item.body, media_type=JSON, headers={"Cache-Control": "no-store"})
            return _respond(request, item.body, item.etag, item.tags, preview)
    since = cache.seq if cache is not None else 0
    # Previews read drafts, which announce no purge: never from a replica (app/db/replica.py). A
    # published answer reads one pool in all its batches.
    read_pool = state.read_pool.pinned() if isinstance(state.read_pool, ReplicaRouting) else state.read_pool
    context = execution.new_context(built, state.types, credential, state.pool if preview else read_pool, reader,
                                    IncludeLimit.of(state.settings))
    answer = await execution.run(parsed, built, service.documents, service.persisted, context)
    etag = render.answer_etag(answer.body)
    tags = tuple(sorted(answer.tags | {"schema"}))
    if cache is not None and key is not None and answer.ok:
        cache.put(key, answer.body, etag, tags, since)
    if not cacheable or preview:
        return Response(content=answer.body, media_type=JSON, headers={"Cache-Control": "no-store"})
    return _respond(request, answer.body, etag, tags if answer.ok else (), preview)


def _canonical(parsed: execution.Request) -> dict[str, str]:
    """A POST's request as cache-key parameters: its JSON with sorted keys (another spelling of
    the same variables is the same entry), apart from every GET's."""
    def text(value: Any) -> str:
        return msgspec.json.encode(value, order="sorted").decode() if value is not None else ""

    return {"query": "POST\x00" + (parsed.query or ""), "variables": text(parsed.variables),
            "operationName": parsed.operation_name or "", "extensions": text(parsed.extensions)}


def _respond(request: Req, body: bytes, etag: str, tags: tuple[str, ...], preview: bool) -> Response[bytes]:
    cache_control = None if preview or not tags else request.app.state.settings.cache_control
    headers = answer_headers(etag, tags, cache_control)
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(content=b"", status_code=304, headers=headers)
    return Response(content=body, media_type=JSON, headers=headers)


def _handlers(preview: bool) -> list[Any]:
    async def serve_post(request: Req) -> Response[bytes]:
        try:
            parsed = await _from_body(request)
        except _BadRequest as exc:
            return Response(_error_body(str(exc), "BAD_REQUEST"), media_type=JSON)
        return await _answer(request, parsed, preview=preview, cacheable=False)

    async def serve_get(request: Req) -> Response[Any]:
        params = request.query_params
        if "text/html" in request.headers.get("accept", "") and not params.get("query") and not params.get("extensions"):
            if not _service(request).introspection:
                raise ProblemError(404, "not-found", "GraphiQL is off (CMS_GRAPHQL_INTROSPECTION=0)")
            return Response(get_graphql_ide_html(), media_type="text/html")
        await delivery_guard(request, request.route_handler)  # GraphiQL's page is public, answers are not
        try:
            parsed = _from_params(request)
        except _BadRequest as exc:
            return Response(_error_body(str(exc), "BAD_REQUEST"), media_type=JSON)
        return await _answer(request, parsed, preview=preview, cacheable=True)

    opt = {"preview": preview, "public": True}
    return [
        post("/", opt={"preview": preview}, guards=[delivery_guard], request_max_body_size=limits.MAX_BODY_BYTES, status_code=200,
             include_in_schema=False, name=f"graphql-post-{preview}")(serve_post),
        get("/", opt=opt, include_in_schema=False, name=f"graphql-get-{preview}")(serve_get),
    ]


@get("/schema.graphql", guards=[delivery_guard], include_in_schema=False)
async def schema_sdl(request: Req) -> Response[bytes]:
    built = await _service(request).published.current()
    body = built.sdl.encode()
    etag = render.answer_etag(body)
    headers = answer_headers(etag, ("schema",), request.app.state.settings.cache_control)
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(content=b"", status_code=304, headers=headers)
    return Response(content=body, media_type="application/graphql; charset=utf-8", headers=headers)


GRAPHQL_ROUTES = [
    Router("/graphql", route_handlers=[*_handlers(False), schema_sdl]),
    Router("/preview/graphql", route_handlers=_handlers(True)),
]
