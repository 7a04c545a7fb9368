"""The delivery response cache and the HTTP caching rules of delivery answers.

Everything the fast path (fast_path.py) and the routes share lives here, so the two can never
answer the same request differently: the canonical cache key, the validator and surrogate-key
headers, and `If-None-Match` matching.

The cache is in-process, bounded in bytes (`CMS_DELIVERY_CACHE_MB`), least recently used out first,
and purged by tag. Invalidations arrive after commit through PostgreSQL NOTIFY and Redis pub/sub
(every delivery process listens). A purge drops single-entry answers; list answers (they carry a
`type:` tag) are only marked stale, so readers can be served the previous list for a moment while
one of them recomputes it (reads.py): at 50 publishes a second to one type, lists stay cached and
fresh within `max_stale` instead of every read going to the database.

An answer computed while a purge of one of its tags happened is not stored as fresh: `put` gets the
invalidation sequence number seen when the computation started and checks the purges since.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from urllib.parse import urlencode

# The parameters each kind of delivery read takes; anything else changes neither the answer nor the key.
LIST_PARAMETERS = frozenset({"locale", "sort", "limit", "cursor", "fields", "include", "depth", "q"})
ENTRY_PARAMETERS = frozenset({"locale", "fields", "include", "depth"})
ENTRY_OVERHEAD = 256  # bytes an item costs beyond its body, key and tags (object headers, dict slots)


def known_parameters(kind: str, pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The parameters a read of this kind ("list" or "entry") uses, the last of repeated ones winning
    (as the query parser reads them)."""
    names = LIST_PARAMETERS if kind == "list" else ENTRY_PARAMETERS
    return {
        name: value for name, value in pairs
        if name in names or (kind == "list" and (name == "filter" or name.startswith("filter[")))
    }


def cache_key(path: str, parameters: dict[str, str]) -> str:
    """The canonical key of a read: its path and its known parameters in name order, so
    `?a=1&b=2` and `?b=2&a=1` are one entry and unknown parameters make none."""
    if not parameters:
        return path
    return path + "?" + urlencode(sorted(parameters.items()))


def type_scoped_key(key: str, parameters: dict[str, str], allowed: frozenset[str] | None) -> str:
    """A read's key for a credential limited to `allowed` content types. Its answer differs from
    everyone else's only where the parameters reach other types (`include`, a filter through a
    reference), so only such reads are cached apart."""
    if allowed is None or not any(name == "include" or "." in name for name in parameters):
        return key
    return key + "\x00types=" + ",".join(sorted(allowed))


GRAPHQL_PARAMETERS = ("query", "variables", "operationName", "extensions")


def graphql_key(parameters: dict[str, str], type_scope: Iterable[str] | None) -> str:
    """The key of a GraphQL GET: its four parameters as sent (another spelling of the same JSON is
    only another entry) and the content types the credential may read (None: all), since a key
    limited to some types gets other answers."""
    scope = "*" if type_scope is None else ",".join(sorted(type_scope))
    canonical = "\x00".join([*(parameters.get(name, "") for name in GRAPHQL_PARAMETERS), scope])
    return "graphql:" + hashlib.sha256(canonical.encode()).hexdigest()


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


def raw_answer_headers(etag: str, tags: tuple[str, ...], cache_control: str | None) -> list[tuple[bytes, bytes]]:
    """`answer_headers` as ASGI header pairs, built directly: the fast path sends these for every
    computed answer (tests/unit check that the two agree)."""
    quoted = f'"{etag}"'.encode()
    if cache_control is None:
        return [(b"etag", quoted), (b"cache-control", b"no-store")]
    return [
        (b"etag", quoted), (b"cache-control", cache_control.encode()), (b"surrogate-key", " ".join(tags).encode()),
        (b"cache-tag", ",".join(tags).encode()),
    ]


class CachedResponse:
    __slots__ = ("body", "etag", "tags", "stored_at", "raw_headers", "size", "stale_since", "since")

    def __init__(self, body: bytes, etag: str, tags: tuple[str, ...], raw_headers: list[tuple[bytes, bytes]],
                 size: int, stale_since: float | None, since: int) -> None:
        self.body = body
        self.etag = etag
        self.tags = tags
        self.stored_at = time.monotonic()
        self.raw_headers = raw_headers  # answer_headers(), encoded once for the fast path
        self.size = size
        self.stale_since = stale_since  # when a purge first made it out of date (lists only)
        self.since = since  # the purge count when its computation started

    @property
    def is_list(self) -> bool:
        return any(tag.startswith("type:") for tag in self.tags)


class DeliveryCache:
    MAX_AGE = 300.0  # seconds an answer is kept at most, purged or not
    LOG_SECONDS = 60.0  # purges remembered for computations in flight; a longer one is not stored
    LOG_ENTRIES = 10_000
    MAX_ITEM_SHARE = 8  # an answer larger than max_bytes / this is not stored

    def __init__(self, max_bytes: int, cache_control: str) -> None:
        self.max_bytes = max_bytes
        self.cache_control = cache_control
        self._items: OrderedDict[str, CachedResponse] = OrderedDict()
        self._by_tag: dict[str, set[str]] = {}
        self.bytes = 0
        self.seq = 0  # purges so far
        self._log: deque[tuple[int, float, frozenset[str] | None]] = deque()  # (seq, when, tags; None: all)
        self.hits = 0
        self.misses = 0
        self.fast_hits = 0  # answered by the fast path (peek)
        self._committed: OrderedDict[str, int] = OrderedDict()  # tag -> purge count of its last commit purge

    def get(self, key: str) -> CachedResponse | None:
        """The cached answer (perhaps stale: see `stale_since`), moved to the young end."""
        item = self._items.get(key)
        if item is None or time.monotonic() - item.stored_at > self.MAX_AGE:
            if item is not None:
                self._drop(key)
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def peek(self, key: str) -> CachedResponse | None:
        """get() for the fast path: counted apart, and a miss is not counted (the full app counts it)."""
        item = self._items.get(key)
        if item is None or time.monotonic() - item.stored_at > self.MAX_AGE:
            return None
        self._items.move_to_end(key)
        self.fast_hits += 1
        return item

    def put(self, key: str, body: bytes, etag: str, tags: tuple[str, ...], since: int) -> None:
        """Store an answer computed from what the database held when the purge count was `since`."""
        size = len(body) + 2 * len(key) + sum(len(t) for t in tags) + ENTRY_OVERHEAD
        if size > self.max_bytes // self.MAX_ITEM_SHARE:
            return
        stale_since = self._missed_purge(tags, since)
        if stale_since is not None:
            current = self._items.get(key)
            # A list newer than the stale one it replaces is still worth serving (and still stale);
            # anything else computed across a purge of its tags is not stored.
            if not (current is not None and current.stale_since is not None and current.is_list):
                return
        if key in self._items:
            self._drop(key)
        headers = raw_answer_headers(etag, tags, self.cache_control)
        self._items[key] = CachedResponse(body, etag, tags, headers, size, stale_since, since)
        self.bytes += size
        for tag in tags:
            self._by_tag.setdefault(tag, set()).add(key)
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._items)))

    def _missed_purge(self, tags: tuple[str, ...], since: int) -> float | None:
        """When the first purge of one of `tags` after purge number `since` happened, or None.

        Walks the log from the newest purge back to `since`: the cost is the purges during the
        computation (a few), not the whole log (thousands under a stream of publishes).
        """
        if since == self.seq:
            return None
        if not self._log or self._log[0][0] > since + 1:
            return time.monotonic()  # the purges since are forgotten: assume the worst
        wanted = set(tags)
        first: float | None = None
        for seq, when, purged in reversed(self._log):
            if seq <= since:
                break
            if purged is None or not wanted.isdisjoint(purged):
                first = when
        return first

    def _drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is None:
            return
        self.bytes -= item.size
        for tag in item.tags:
            keys = self._by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tag[tag]

    def invalidate(self, tags: list[str] | None) -> None:
        """Purge at commit (PostgreSQL NOTIFY): drop the answers carrying these tags, mark lists among
        them stale; None or the `schema` tag: drop everything."""
        now = time.monotonic()
        self.seq += 1
        everything = tags is None or "schema" in tags
        self._log.append((self.seq, now, None if everything else frozenset(tags or ())))
        while self._log and (len(self._log) > self.LOG_ENTRIES or now - self._log[0][1] > self.LOG_SECONDS):
            self._log.popleft()
        if everything:
            self._items.clear()
            self._by_tag.clear()
            self._committed.clear()
            self.bytes = 0
            return
        for tag in tags or ():
            self._committed[tag] = self.seq
            self._committed.move_to_end(tag)
        while len(self._committed) > self.LOG_ENTRIES:
            self._committed.popitem(last=False)
        self._purge(tags or (), now, None)

    def confirm(self, tags: list[str] | None) -> None:
        """The worker's purge once the files are written (Redis): the same change the commit's purge
        already announced. Answers computed after that purge reached us already show it and stay;
        older ones go (the commit's purge may have been lost). None: drop everything."""
        if tags is None:
            self.invalidate(None)
            return
        self._purge(tags, time.monotonic(), self._committed)

    def _purge(self, tags: Iterable[str], now: float, fresh_after: dict[str, int] | None) -> None:
        for tag in tags:
            newest = fresh_after.get(tag) if fresh_after is not None else None
            for key in list(self._by_tag.get(tag, ())):
                item = self._items[key]
                if newest is not None and item.since >= newest:
                    continue
                if item.is_list:
                    if item.stale_since is None:
                        item.stale_since = now
                else:
                    self._drop(key)

    def __len__(self) -> int:
        return len(self._items)
