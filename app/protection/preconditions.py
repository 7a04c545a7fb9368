"""Optimistic concurrency: `If-Match` against a resource's version."""

from __future__ import annotations

from ..problems import ProblemError


def check_precondition(if_match: str | None, version: int | None) -> None:
    """If-Match with a version ETag: a stale one → 412 and nothing changes."""
    if if_match is None:
        return
    candidates = [c.strip() for c in if_match.split(",")]
    if "*" in candidates and version is not None:
        return
    wanted = {c.removeprefix("W/").strip('"') for c in candidates}
    if version is None or str(version) not in wanted:
        raise ProblemError(
            412, "precondition-failed",
            f"If-Match {if_match} does not match the current version {version if version is not None else '(none)'}",
        )
