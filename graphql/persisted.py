"""Automatic persisted queries (Apollo's protocol): a client sends `extensions.persistedQuery.sha256Hash`
alone; an unknown hash answers PERSISTED_QUERY_NOT_FOUND, and the client sends the query with the
hash once, which registers it. Then the hash alone works, over GET too, so a CDN can cache it.

Queries live in Redis (shared by every delivery process, kept 7 days after their last use) with a
small in-process LRU in front. Only queries that parse and validate are registered, and each is at
most 100 KB, so registering costs a client what running the query would.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from typing import Any

from graphql import GraphQLError

log = logging.getLogger("cms.graphql")

KEY_PREFIX = "cms:apq:"
KEEP_SECONDS = 7 * 86400
LOCAL_ENTRIES = 1000
_HASH = re.compile(r"[0-9a-f]{64}")


def not_found() -> GraphQLError:
    return GraphQLError("PersistedQueryNotFound", extensions={"code": "PERSISTED_QUERY_NOT_FOUND"})


def requested_hash(extensions: Any) -> str | None:
    """The hash an `extensions` object asks for (None: no persisted query); a malformed one is an error."""
    if not isinstance(extensions, dict) or "persistedQuery" not in extensions:
        return None
    persisted = extensions["persistedQuery"]
    digest = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
    if not isinstance(digest, str) or not _HASH.fullmatch(digest.lower()) or persisted.get("version", 1) != 1:
        raise GraphQLError("extensions.persistedQuery needs version 1 and a sha256Hash of 64 hex digits",
                           extensions={"code": "BAD_USER_INPUT"})
    return digest.lower()


def hash_of(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


class PersistedQueries:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._local: OrderedDict[str, str] = OrderedDict()

    async def get(self, digest: str) -> str | None:
        query = self._local.get(digest)
        if query is not None:
            self._local.move_to_end(digest)
            return query
        try:
            raw = await self.redis.getex(KEY_PREFIX + digest, ex=KEEP_SECONDS)
        except Exception as exc:  # Redis away: as if unknown; the client sends the query again
            log.warning("persisted queries: %s", exc)
            return None
        if raw is None:
            return None
        query = raw.decode() if isinstance(raw, bytes) else str(raw)
        if hash_of(query) != digest:  # never trust what comes back under a hash
            return None
        self._remember(digest, query)
        return query

    async def put(self, digest: str, query: str) -> None:
        self._remember(digest, query)
        try:
            await self.redis.set(KEY_PREFIX + digest, query.encode(), ex=KEEP_SECONDS)
        except Exception as exc:
            log.warning("persisted queries: %s", exc)

    def _remember(self, digest: str, query: str) -> None:
        self._local[digest] = query
        self._local.move_to_end(digest)
        while len(self._local) > LOCAL_ENTRIES:
            self._local.popitem(last=False)
