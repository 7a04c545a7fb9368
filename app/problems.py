"""RFC 9457 problem+json: the one error shape of both apps. Anything may raise a `ProblemError`;
`http.py` turns it (and Litestar's own failures) into the response."""

from __future__ import annotations

from typing import Any

import msgspec

PROBLEM_JSON = "application/problem+json"

TITLES = {
    "validation": "Validation failed",
    "malformed": "Malformed request",
    "include-too-large": "Include too large",
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
