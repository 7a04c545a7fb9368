"""Credentials as the rest of the app sees them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from ..problems import forbidden


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
