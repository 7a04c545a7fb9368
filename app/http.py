"""HTTP plumbing shared by both apps: request ids, metrics, JSON bodies, envelopes, problem responses."""

from __future__ import annotations

import itertools
import logging
import re
import time
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    ClientException,
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Message,
    Receive,
    Scope,
    Send,
)
from prometheus_client import Counter, Histogram
from ulid import ULID

from .problems import (
    PROBLEM_JSON,
    STATUS_CODES,
    ProblemError,
    forbidden,
    malformed,
    problem_body,
    unauthorized,
)

log = logging.getLogger("cms.problems")

JSON = "application/json"
MAX_JSON_DEPTH = 64
# Every parameter that grows work has its own bound; this one caps what a request line can carry
# at all (a cursor is at most 16 KiB, 20 filters of 500 values fit well below).
MAX_QUERY_BYTES = 32 * 1024
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")

encode = msgspec.json.Encoder().encode

REQUESTS = Counter("cms_http_requests_total", "HTTP requests", ["app", "method", "status"])
LATENCY = Histogram(
    "cms_http_request_duration_seconds",
    "HTTP request duration",
    ["app"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def new_id() -> str:
    return str(ULID())


_ID_PREFIX = new_id()[10:]  # 16 random characters per process
_id_counter = itertools.count(1)


def make_request_id() -> str:
    """A unique 26-character request id: per-process random prefix + a counter (no syscalls)."""
    return f"{_ID_PREFIX}{next(_id_counter):010x}"


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestContextMiddleware:
    """Pure ASGI: assigns X-Request-Id (echoing a well-formed incoming one) and records metrics."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name
        self.latency = LATENCY.labels(name)
        self._counters: dict[tuple[str, int], Any] = {}  # (method, status) -> its REQUESTS child

    def _count(self, method: str, status: int) -> None:
        # Any token is a method to the server: others count as OTHER, so a client cannot grow the
        # metric's label sets (and this dict) without bound.
        key = (method if method in _METHODS else "OTHER", status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = REQUESTS.labels(self.name, key[0], str(status))
        counter.inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A fresh per-request state: ASGI servers may hand every request the same lifespan dict.
        scope["state"] = dict(scope.get("state") or {})
        incoming = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                incoming = value
                break
        request_id = incoming.decode() if incoming and _REQUEST_ID.fullmatch(incoming) else make_request_id()
        scope["state"]["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        started = time.perf_counter()
        status_holder = [500]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                scope["state"]["response_started"] = True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            if len(scope.get("query_string", b"")) > MAX_QUERY_BYTES:
                await _send_problem(send_with_id, ProblemError(
                    400, "malformed", f"the query string is longer than {MAX_QUERY_BYTES} bytes"
                ), request_id)
                return
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Raised outside Litestar's handlers (a middleware: the credential lookup of the rate
            # limiter during a database outage): the same problem a route would have answered.
            if scope["state"].get("response_started"):
                raise
            scope["state"]["response_started"] = True
            await _send_problem(send_with_id, escaped_problem(exc, str(scope.get("method", ""))), request_id)
        finally:
            self.latency.observe(time.perf_counter() - started)
            self._count(str(scope.get("method", "")), status_holder[0])


async def _send_problem(send: Send, problem: ProblemError, request_id: str) -> None:
    headers = [(b"content-type", PROBLEM_JSON.encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in (problem.headers or {}).items()]
    start: HTTPResponseStartEvent = {"type": "http.response.start", "status": problem.status, "headers": headers}
    await send(start)
    body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": problem_body(problem, request_id), "more_body": False}
    await send(body)


def json_depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in item)
    return True


def _media_type(request: Request[Any, Any, Any]) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_json(
    request: Request[Any, Any, Any], *, merge_patch: bool = False, limit: int | None = None
) -> Any:
    """The request's JSON body, or a problem: 415 wrong type, 413 too large, 400 unreadable."""
    media = _media_type(request)
    allowed = {JSON, "application/merge-patch+json"} if merge_patch else {JSON}
    if media not in allowed:
        raise ProblemError(415, "unsupported-media-type", f"send the body as {' or '.join(sorted(allowed))}")
    max_bytes = limit or request.app.state.settings.max_body_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise ProblemError(413, "payload-too-large", f"the body is larger than {max_bytes} bytes")
    try:
        body = await request.body()
    except ClientException as exc:
        if exc.status_code == 413:
            raise ProblemError(413, "payload-too-large", f"the body is larger than {max_bytes} bytes") from None
        raise
    if len(body) > max_bytes:
        raise ProblemError(413, "payload-too-large", f"the body is larger than {max_bytes} bytes")
    if not body:
        raise ProblemError(400, "malformed", "the request body is empty")
    try:
        value = msgspec.json.decode(body)
    except RecursionError:
        raise ProblemError(400, "malformed", f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except msgspec.DecodeError as exc:
        raise ProblemError(400, "malformed", f"invalid JSON: {exc}") from None
    if not json_depth_ok(value):
        raise ProblemError(400, "malformed", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


async def read_optional_json(request: Request[Any, Any, Any]) -> Any:
    """`read_json` for a body that may be left out (no Content-Type and no bytes): None then."""
    if "content-type" not in request.headers and request.headers.get("content-length", "0") == "0":
        return None
    return await read_json(request)


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None, media_type: str = JSON
) -> Response[bytes]:
    body = content if isinstance(content, bytes) else encode(content)
    return Response(content=body, status_code=status, media_type=media_type, headers=headers)


def one(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return json_response({"data": data}, status, headers)


def many(data: list[Any], meta: dict[str, Any], headers: dict[str, str] | None = None) -> Response[bytes]:
    return json_response({"data": data, "meta": meta}, 200, headers)


def query_int(request: Request[Any, Any, Any], name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"-?\d{1,20}", raw):
        raise malformed(name, "must be an integer")
    value = int(raw)
    if not low <= value <= high:
        raise malformed(name, f"must be between {low} and {high}")
    return value


DEFAULT_LIMIT, MAX_LIMIT = 20, 100


def page_params(request: Request[Any, Any, Any], cursor_pattern: re.Pattern[str]) -> tuple[int, str | None]:
    """`limit` (1..100, default 20) and `cursor` of a list whose cursors match `cursor_pattern` (else 400)."""
    limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    cursor = request.query_params.get("cursor")
    if cursor is not None and not cursor_pattern.fullmatch(cursor):
        raise malformed("cursor", "is not a cursor from meta.next_cursor")
    return limit, cursor


# ---------------------------------------------------------------------------------------------
# problem responses


def problem_response(problem: ProblemError, request_id: str | None) -> Response[bytes]:
    return Response(
        content=problem_body(problem, request_id),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def _request_id(request: Request[Any, Any, Any]) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def _from_litestar(exc: HTTPException) -> ProblemError:
    status = exc.status_code
    if isinstance(exc, NotFoundException):
        return ProblemError(404, "not-found", "no such route or resource")
    if isinstance(exc, MethodNotAllowedException):
        return ProblemError(405, "method-not-allowed", "method not allowed on this route", headers=dict(exc.headers or {}))
    if isinstance(exc, NotAuthorizedException):
        return unauthorized()
    if isinstance(exc, PermissionDeniedException):
        return forbidden(exc.detail or "forbidden")
    if isinstance(exc, ValidationException):
        errors = []
        for item in exc.extra or []:
            if isinstance(item, dict) and item.get("source") == "query":
                errors.append({"parameter": str(item.get("key")), "detail": str(item.get("message"))})
            elif isinstance(item, dict):
                errors.append({"pointer": "/" + str(item.get("key") or ""), "detail": str(item.get("message"))})
        return ProblemError(400, "malformed", "the request could not be read", errors=errors or None)
    if status == 413:
        return ProblemError(413, "payload-too-large", "the request body is too large")
    if status == 415:
        return ProblemError(415, "unsupported-media-type", exc.detail)
    code = STATUS_CODES.get(status)
    if code is None or status >= 500:
        return ProblemError(500, "internal", "an internal error occurred")
    return ProblemError(status, code, exc.detail)


def problem_handler(request: Request[Any, Any, Any], exc: ProblemError) -> Response[bytes]:
    return problem_response(exc, _request_id(request))


def litestar_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    return problem_response(_from_litestar(exc), _request_id(request))


def internal_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(ProblemError(500, "internal", "an internal error occurred"), _request_id(request))


def database_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Contention and outages are the client's to retry, not server bugs."""
    return problem_response(_database_problem(exc, request.method), _request_id(request))


def escaped_problem(exc: Exception, method: str) -> ProblemError:
    """The problem for an exception that escaped the app before any answer started."""
    if isinstance(exc, tuple(_database_exceptions())):
        return _database_problem(exc, method)
    log.error("unhandled error on %s", method, exc_info=exc)
    return ProblemError(500, "internal", "an internal error occurred")


def _database_problem(exc: Exception, method: str) -> ProblemError:
    import asyncpg

    reading = method in ("GET", "HEAD")
    if isinstance(exc, asyncpg.SerializationError | asyncpg.DeadlockDetectedError) and (
        reading or "conflict with recovery" in str(exc)
    ):
        # A read replica cancelled the query to replay the primary's changes (a read-only GET meets
        # no other serialization failure or deadlock, whatever the server's message language): no
        # conflict of the client's, the replica was busy
        problem = ProblemError(503, "unavailable", "the read replica was replaying changes; retry the request",
                               headers={"Retry-After": "1"})
    elif isinstance(exc, asyncpg.DeadlockDetectedError | asyncpg.SerializationError | asyncpg.LockNotAvailableError):
        problem = ProblemError(409, "conflict", "a concurrent write touched the same data; retry the request")
    elif isinstance(exc, asyncpg.QueryCanceledError):
        problem = ProblemError(503, "unavailable", "the database took too long; retry later", headers={"Retry-After": "1"})
    else:
        log.warning("database unavailable on %s: %s", method, exc)
        problem = ProblemError(503, "unavailable", "the database is unavailable; retry later", headers={"Retry-After": "1"})
    return problem


def _database_exceptions() -> dict[Any, Any]:
    import asyncpg

    kinds = (
        asyncpg.DeadlockDetectedError, asyncpg.SerializationError, asyncpg.LockNotAvailableError,
        asyncpg.QueryCanceledError, asyncpg.PostgresConnectionError, asyncpg.TooManyConnectionsError,
        asyncpg.OperatorInterventionError, asyncpg.ConnectionDoesNotExistError,
        asyncpg.ObjectNotInPrerequisiteStateError, asyncpg.InternalClientError, ConnectionError,
    )
    return dict.fromkeys(kinds, database_handler)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    **_database_exceptions(),
    ProblemError: problem_handler,
    HTTPException: litestar_handler,
    Exception: internal_handler,
}
