"""Credentials as the rest of the app sees them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from ..problems import FieldErrorsProblem, forbidden
from .keys import SCOPES


class Credential(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: str  # delivery | preview | management | oauth_client | anonymous
    name: str
    scopes: frozenset[str] = frozenset()
    content_types: frozenset[str] | None = None
    expires_at: datetime | None = None
    rate_limit: str | None = None

    def actor(self) -> dict[str, Any]:
        kind = "key" if self.kind in ("delivery", "preview", "management") else self.kind
        return {"kind": kind, "id": self.id, "name": self.name}

    def may_use_type(self, type_id: str) -> bool:
        return self.content_types is None or type_id in self.content_types

    def require_grants(self, scopes: list[str], content_types: list[str] | None) -> None:
        """Least privilege: 403 unless this credential holds every scope and content type it would
        grant (or obtain a working secret for)."""
        missing = set(scopes) - set(self.scopes)
        if missing:
            raise forbidden(f"you cannot grant scopes you do not hold: {', '.join(sorted(missing))}")
        if self.content_types is not None and (content_types is None or not set(content_types) <= self.content_types):
            raise forbidden("you cannot grant content types you do not hold")

    def require_type(self, type_id: str) -> None:
        """403 unless this credential may use the content type."""
        if not self.may_use_type(type_id):
            raise forbidden(f"this credential may not use the content type {type_id!r}")


ANONYMOUS = Credential(id="anonymous", kind="anonymous", name="anonymous")
SYSTEM = Credential(id="system", kind="system", name="system")


def parse_grant(
    body: Any, known: set[str], problems: FieldErrorsProblem, *, scopes_required: bool,
) -> tuple[str, list[str], list[str] | None]:
    """What a key or OAuth client is granted, from its JSON body: `name`, `scopes` (required and
    non-empty, or optional), `content_types` (None: every type). Problems are added, not raised
    (the caller adds its own fields' first); a body that is not an object is raised at once."""
    if not isinstance(body, dict):
        problems.add("", "must be a JSON object")
        problems.raise_if_any()
    for key in body:
        if key not in known:
            problems.add(f"/{key}", "unknown property")
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 200 or "\x00" in name:
        problems.add("/name", "is required: a string of 1 to 200 characters")
        name = ""
    scopes = body.get("scopes", None if scopes_required else [])
    if not isinstance(scopes, list) or (scopes_required and not scopes) or not all(isinstance(x, str) for x in scopes):
        problems.add("/scopes", "is required: a non-empty list of scopes" if scopes_required else "must be a list of scopes")
        scopes = []
    for index, scope in enumerate(scopes):
        if scope not in SCOPES:
            problems.add(f"/scopes/{index}", f"unknown scope; one of {', '.join(SCOPES)}")
    content_types = body.get("content_types")
    if content_types is not None and (
        not isinstance(content_types, list) or len(content_types) > 1000
        or not all(isinstance(t, str) for t in content_types)
    ):
        problems.add("/content_types", "must be a list of at most 1000 content type ids")
        content_types = None
    return name, scopes, content_types
