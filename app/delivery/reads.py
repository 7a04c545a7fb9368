"""The read path of delivery: one answer per canonical request, from the cache when it can be.

- A miss is computed once however many requests want it at the same moment (single flight); the
  others wait for that computation.
- A list purged by a publish (stale, see cache.py) is recomputed by the first request that wants it
  (which waits for the fresh answer: a client reads its own writes); requests arriving while that
  computation runs get the stale list, for `max_stale` seconds at most. Under a stream of publishes
  a list is therefore computed once per purge and reflects a publish within milliseconds, while
  nearly every read stays a cache hit.
- Preview reads (drafts) are never cached.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from ..problems import not_found
from ..query.parse import parse_list_query
from ..schema.model import (
    RESOURCE_ID,
    ContentType,
    Locales,
)
from ..schema.registry import ContentTypeRegistry, resolve_locale
from . import documents
from .cache import DeliveryCache, cache_key, known_parameters, type_scoped_key
from .documents import Body, IncludeLimit

log = logging.getLogger("cms.delivery.reads")


@dataclass(frozen=True)
class Read:
    """One delivery read: a list (`entry_id` and `slug` None) or one entry, published or draft."""

    type_id: str
    parameters: dict[str, str]  # the known parameters (cache.known_parameters)
    key: str  # cache.cache_key
    entry_id: str | None = None
    slug: str | None = None
    preview: bool = False
    allowed: frozenset[str] | None = None  # the content types the credential may read (None: all)

    @property
    def kind(self) -> str:
        return "list" if self.entry_id is None and self.slug is None else "entry"


def make_read(
    path: str, pairs: tuple[tuple[str, str], ...], type_id: str, *, entry_id: str | None = None,
    slug: str | None = None, preview: bool = False,
) -> Read:
    kind = "list" if entry_id is None and slug is None else "entry"
    parameters = known_parameters(kind, pairs)
    return Read(type_id, parameters, cache_key(path, parameters), entry_id, slug, preview)


def for_credential(read: Read, allowed: frozenset[str] | None) -> Read:
    """The read as a credential limited to `allowed` content types makes it: included references of
    other types stay links, a filter through a reference into them is a 403 (API.md, "Credentials")."""
    if allowed is None:
        return read
    return replace(read, allowed=allowed, key=type_scoped_key(read.key, read.parameters, allowed))


class DeliveryReads:
    """Answers delivery reads: the cache, single flight, and the computation itself."""

    def __init__(
        self, registry: ContentTypeRegistry, pool: Any, cache: DeliveryCache | None, *, assets_url: str,
        limit: IncludeLimit, max_stale: float = 0.5, preview_pool: Any = None,
    ) -> None:
        self.registry = registry
        self.pool = pool
        # Previews read drafts, whose saves announce no purge: from the primary, never a replica.
        self.preview_pool = preview_pool if preview_pool is not None else pool
        self.cache = cache
        self.assets_url = assets_url
        self.limit = limit
        self.max_stale = max_stale
        self._in_flight: dict[tuple[str, int], asyncio.Future[Body]] = {}
        self._computing: Counter[str] = Counter()  # keys being computed now
        self.computed = 0  # computations run (tests count them)

    async def answer(self, read: Read) -> Body:
        """The answer to a read (404 when there is no such entry or type)."""
        if self.cache is None or read.preview:
            return await self._compute(read)
        item = self.cache.get(read.key)
        if item is not None and (item.stale_since is None or self.serves_stale(read.key, item.stale_since)):
            return Body(item.body, item.etag, item.tags)
        return await self._once(read)

    def serves_stale(self, key: str, stale_since: float) -> bool:
        """A stale list is answered while another request recomputes it, for `max_stale` at most."""
        return key in self._computing and time.monotonic() - stale_since <= self.max_stale

    async def _once(self, read: Read) -> Body:
        """Compute and cache the answer; requests for the same key meanwhile wait for this one.

        A computation is joined only while no purge has happened since it started, so a request
        never gets an answer older than the last purge it could have seen.
        """
        assert self.cache is not None
        flight = (read.key, self.cache.seq)
        running = self._in_flight.get(flight)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Body] = asyncio.get_running_loop().create_future()
        self._in_flight[flight] = future
        self._computing[read.key] += 1
        since = self.cache.seq
        try:
            result = await self._compute(read)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody waiting is fine
            raise
        else:
            future.set_result(result)
            self.cache.put(read.key, result.body, result.etag, result.tags, since)
            return result
        finally:
            del self._in_flight[flight]
            self._computing[read.key] -= 1
            if not self._computing[read.key]:
                del self._computing[read.key]

    async def _compute(self, read: Read) -> Body:
        self.computed += 1
        ct, types, locales, locale = await self._schema(read)
        # Parsed against every type (a filter into a hidden one is a 403, not an unknown field);
        # documents of the types the credential may read only (other references stay links).
        visible = types if read.allowed is None else {k: t for k, t in types.items() if k in read.allowed}
        if read.kind == "list":
            query = parse_list_query(
                read.parameters, ct, types, locale=locale, default_sort="-published_at", allowed=read.allowed
            )
            async with (self.preview_pool if read.preview else self.pool).acquire() as conn:
                if read.preview:
                    return await documents.draft_list(conn, visible, ct, locales, query, self.assets_url, self.limit)
                return await documents.published_list(conn, visible, ct, query, self.limit)
        if read.entry_id is not None and not RESOURCE_ID.fullmatch(read.entry_id):
            raise not_found("entry")
        if read.slug is not None and (len(read.slug) > 200 or "\x00" in read.slug):
            raise not_found("entry")
        options = None
        if read.parameters.keys() - {"locale"}:
            options = parse_list_query(
                {k: v for k, v in read.parameters.items() if k != "locale"}, ct, types, locale=locale,
                default_sort="-published_at", allowed=read.allowed,
            )
        include, depth, fields = (options.include, options.depth, options.fields) if options else ([], 1, None)
        async with (self.preview_pool if read.preview else self.pool).acquire() as conn:
            if read.preview:
                result = await documents.draft_entry(
                    conn, visible, ct, locales, locale, self.assets_url, entry_id=read.entry_id, slug=read.slug,
                    include=include, depth=depth, fields=fields, limit=self.limit,
                )
            else:
                result = await documents.published_entry(
                    conn, visible, ct, locale, entry_id=read.entry_id, slug=read.slug, include=include, depth=depth,
                    fields=fields, limit=self.limit,
                )
        if result is None:
            raise not_found("entry")
        return result

    async def _schema(self, read: Read) -> tuple[ContentType, dict[str, ContentType], Locales, str]:
        ct = await self.registry.get(read.type_id)
        if ct is None:
            raise not_found("content type")
        requested = read.parameters.get("locale")
        locales = await self.registry.locales(requested)
        return ct, await self.registry.types(), locales, resolve_locale(locales, requested)
