"""How bulk requests report failures: pointers into the request body, `/actions/{i}/…`."""

from __future__ import annotations

from typing import Any

from ..problems import TITLES, ProblemError


def prefixed_errors(problem: ProblemError, index: int) -> list[dict[str, Any]]:
    """The problem's errors with pointers into the bulk body; one error at /actions/{i} if it has none."""
    base = f"/actions/{index}"
    if not problem.errors:
        return [{"pointer": base, "detail": problem.detail}]
    out = []
    for item in problem.errors:
        if "pointer" in item:
            where = item["pointer"]
        else:
            # A query parameter of the single-entry routes (e.g. locale) is a property of the action.
            where = "/" + str(item.get("parameter", "")) if item.get("parameter") else ""
        out.append({"pointer": base + where, "detail": item["detail"]})
    return out


def atomic_failure(errors: list[dict[str, Any]], failed: int, total: int) -> ProblemError:
    """The 422 of an atomic request in which `failed` of `total` actions failed (nothing applied)."""
    first = errors[0]
    return ProblemError(
        422, "validation",
        f"{failed} of {total} actions failed (first: {first['pointer']}: {first['detail']}); nothing was applied",
        errors=errors,
    )


def problem_object(problem: ProblemError, index: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"urn:cms:problem:{problem.code}", "title": TITLES.get(problem.code, problem.code),
        "status": problem.status, "detail": problem.detail, "errors": prefixed_errors(problem, index),
    }
    body.update(problem.extra)
    return body
