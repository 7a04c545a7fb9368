"""The delivery response cache and the HTTP caching rules of delivery answers.

Everything the fast path (fast_path.py) and the routes share lives here, so the two can never
answer the same request differently: the cache key, the validator and surrogate-key headers, and
`If-None-Match` matching.

The cache is in-process, purged by tag. Invalidations arrive after commit through PostgreSQL NOTIFY
and Redis pub/sub (every delivery process listens). A response computed while an invalidation
happened is not stored: the generation counter moves on every purge, and put() refuses values read
under an older generation.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import NamedTuple


def cache_key(path: str, query_string: bytes) -> str:
    return path + "?" + query_string.decode("latin-1")


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """True when If-None-Match names this ETag (or is `*`): the client already has these bytes."""
    if not if_none_match:
        return False
    text = if_none_match.strip()
    return text == "*" or any(t.strip().removeprefix("W/").strip('"') == etag for t in text.split(","))


def answer_headers(etag: str, tags: tuple[str, ...], cache_control: str | None) -> dict[str, str]:
    """ETag, Cache-Control and the surrogate keys of a delivery answer (a 200 or its 304).

    cache_control None: a preview answer, `no-store` and no surrogate keys.
    """
    if cache_control is None:
        return {"ETag": f'"{etag}"', "Cache-Control": "no-store"}
    return {
        "ETag": f'"{etag}"', "Cache-Control": cache_control,
        "Surrogate-Key": " ".join(tags), "Cache-Tag": ",".join(tags),
    }


class CachedResponse(NamedTuple):
    body: bytes
    etag: str
    tags: tuple[str, ...]
    stored_at: float
    raw_headers: list[tuple[bytes, bytes]]  # answer_headers(), encoded once for the fast path


class DeliveryCache:
    MAX_AGE = 300.0

    def __init__(self, max_entries: int, cache_control: str) -> None:
        self.max_entries = max_entries
        self.cache_control = cache_control
        self._items: OrderedDict[str, CachedResponse] = OrderedDict()
        self._by_tag: dict[str, set[str]] = {}
        self.generation = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> CachedResponse | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        if time.monotonic() - item.stored_at > self.MAX_AGE:
            self._drop(key)
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def peek(self, key: str) -> CachedResponse | None:
        """get() for the hot path: no LRU reordering, no counters; expired entries count as absent."""
        item = self._items.get(key)
        if item is None or time.monotonic() - item.stored_at > self.MAX_AGE:
            return None
        return item

    def put(self, key: str, body: bytes, etag: str, tags: tuple[str, ...], generation: int) -> None:
        if generation != self.generation:
            return
        if key in self._items:
            self._drop(key)
        headers = [(k.lower().encode(), v.encode()) for k, v in answer_headers(etag, tags, self.cache_control).items()]
        self._items[key] = CachedResponse(body, etag, tags, time.monotonic(), headers)
        for tag in tags:
            self._by_tag.setdefault(tag, set()).add(key)
        while len(self._items) > self.max_entries:
            self._drop(next(iter(self._items)))

    def _drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is None:
            return
        for tag in item.tags:
            keys = self._by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tag[tag]

    def invalidate(self, tags: list[str] | None) -> None:
        self.generation += 1
        if tags is None or "schema" in tags:
            self._items.clear()
            self._by_tag.clear()
            return
        for tag in tags:
            for key in list(self._by_tag.get(tag, ())):
                self._drop(key)

    def __len__(self) -> int:
        return len(self._items)
