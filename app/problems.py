"""RFC 9457 problem+json: the one error shape of both apps, including Litestar's own failures."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)

log = logging.getLogger("cms.problems")

PROBLEM_JSON = "application/problem+json"

TITLES = {
    "validation": "Validation failed",
    "malformed": "Malformed request",
    "unauthorized": "Unauthorized",
    "forbidden": "Forbidden",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "conflict": "Conflict",
    "gone": "Gone",
    "precondition-failed": "Precondition failed",
    "payload-too-large": "Payload too large",
    "unsupported-media-type": "Unsupported media type",
    "idempotency-key-reused": "Idempotency key reused",
    "idempotency-in-progress": "Idempotency key in progress",
    "rate-limited": "Rate limited",
    "unavailable": "Service unavailable",
    "internal": "Internal server error",
}

STATUS_CODES = {
    400: "malformed",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    410: "gone",
    412: "precondition-failed",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation",
    429: "rate-limited",
    503: "unavailable",
}


class ProblemError(Exception):
    """Raise anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        code: str | None = None,
        detail: str | None = None,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.code = code or STATUS_CODES.get(status, "internal")
        self.detail = detail or TITLES.get(self.code, "")
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}
        super().__init__(f"{status} {self.code}: {self.detail}")


def malformed(parameter: str, detail: str) -> ProblemError:
    return ProblemError(400, "malformed", f"{parameter}: {detail}", errors=[{"parameter": parameter, "detail": detail}])


def invalid(pointer: str, detail: str, status: int = 422, code: str = "validation") -> ProblemError:
    return ProblemError(status, code, f"{pointer}: {detail}", errors=[{"pointer": pointer, "detail": detail}])


def gone(detail: str) -> ProblemError:
    return ProblemError(410, "gone", detail)


def not_found(what: str = "resource") -> ProblemError:
    return ProblemError(404, "not-found", f"{what} not found")


def conflict(detail: str, errors: list[dict[str, Any]] | None = None, **extra: Any) -> ProblemError:
    return ProblemError(409, "conflict", detail, errors=errors, extra=extra)


def unauthorized(detail: str = "a valid credential is required") -> ProblemError:
    return ProblemError(401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="cms"'})


def forbidden(detail: str) -> ProblemError:
    return ProblemError(403, "forbidden", detail)


_encode = msgspec.json.Encoder().encode


def problem_body(problem: ProblemError, request_id: str | None) -> bytes:
    body: dict[str, Any] = {
        "type": f"urn:cms:problem:{problem.code}",
        "title": TITLES.get(problem.code, problem.code),
        "status": problem.status,
        "detail": problem.detail,
        "request_id": request_id,
    }
    if problem.errors:
        body["errors"] = problem.errors
    body.update(problem.extra)
    return _encode(body)


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
    import asyncpg

    if isinstance(exc, asyncpg.DeadlockDetectedError | asyncpg.SerializationError | asyncpg.LockNotAvailableError):
        problem = ProblemError(409, "conflict", "a concurrent write touched the same data; retry the request")
    elif isinstance(exc, asyncpg.QueryCanceledError):
        problem = ProblemError(503, "unavailable", "the database took too long; retry later", headers={"Retry-After": "1"})
    else:
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        problem = ProblemError(503, "unavailable", "the database is unavailable; retry later", headers={"Retry-After": "1"})
    return problem_response(problem, _request_id(request))


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


class FieldErrorsProblem:
    """Collects JSON-pointer errors; raise_if_any() answers 422 validation with all of them."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, pointer: str, detail: str) -> None:
        self.items.append({"pointer": pointer, "detail": detail})

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, status: int = 422, code: str = "validation", **extra: Any) -> None:
        if self.items:
            first = self.items[0]
            detail = f"{first['pointer'] or '/'}: {first['detail']}"
            if len(self.items) > 1:
                detail += f" (and {len(self.items) - 1} more)"
            raise ProblemError(status, code, detail, errors=self.items, extra=extra)
