"""The schema as the rest of the code reads it: content types and locales, cached per process.

`ContentTypeRegistry` keeps them until the `schema` invalidation (sent at commit by every content
type or locale change) drops them; `load_types` / `load_locales` read them fresh inside a
transaction, for writes.
"""

from __future__ import annotations

import time

import asyncpg

from ..problems import malformed
from . import repository as repo
from .model import (
    ContentType,
    Locales,
    content_type_from_row,
)


def locales_from_rows(rows: list[asyncpg.Record]) -> Locales:
    data = {r["code"]: dict(r) for r in rows}
    default = next((r["code"] for r in rows if r["is_default"]), rows[0]["code"] if rows else "en")
    return Locales(data, default)


class ContentTypeRegistry:
    """Per-process cache of content types and locales; dropped on the `schema` invalidation tag."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._types: dict[str, ContentType] | None = None
        self._locales: Locales | None = None
        self.generation = 0
        self._last_recheck = 0.0

    def invalidate(self, tags: list[str] | None) -> None:
        if tags is None or "schema" in tags:
            self._types = None
            self._locales = None
            self.generation += 1

    def _may_recheck(self) -> bool:
        """At most a few re-reads a second, however many unknown names clients send."""
        now = time.monotonic()
        if now - self._last_recheck < 0.2:
            return False
        self._last_recheck = now
        return True

    async def types(self) -> dict[str, ContentType]:
        if self._types is None:
            generation = self.generation
            rows = await repo.all_types(self.pool)
            types = {r["id"]: content_type_from_row(r) for r in rows}
            if generation == self.generation:
                self._types = types
            return types
        return self._types

    async def get(self, type_id: str) -> ContentType | None:
        types = await self.types()
        found = types.get(type_id)
        if found is None and self._types is not None and self._may_recheck():
            # A type created a moment ago may not have reached us yet: look once more.
            self._types = None
            found = (await self.types()).get(type_id)
        return found

    async def locales(self, expect: str | None = None) -> Locales:
        """All locales; `expect`: a code a client asked for, worth one fresh look if unknown."""
        if self._locales is not None and expect and expect not in self._locales.rows and self._may_recheck():
            self._locales = None
        if self._locales is None:
            generation = self.generation
            locales = locales_from_rows(await repo.all_locales(self.pool))
            if generation == self.generation:
                self._locales = locales
            return locales
        return self._locales


async def load_types(conn: asyncpg.Connection) -> dict[str, ContentType]:
    return {r["id"]: content_type_from_row(r) for r in await repo.all_types(conn)}


async def load_locales(conn: asyncpg.Connection) -> Locales:
    return locales_from_rows(await repo.all_locales(conn))


def resolve_locale(locales: Locales, requested: str | None) -> str:
    if requested is None or requested == "":
        return locales.default
    if requested not in locales.rows:
        raise malformed("locale", f"unknown locale {requested!r}")
    return requested
