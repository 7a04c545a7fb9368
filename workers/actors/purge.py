"""Purging after the prerendered files change: delivery caches (Redis pub/sub), then the CDN.

Delivery processes first, so a CDN that refetches from the delivery app never gets a stale cached
copy back. Both are idempotent; a failure raises and the whole step is retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable
from typing import Any

from cms.app.delivery.purge import PURGE_CHANNEL
from cms.storage.cdn import CdnPurger, NoPurger

log = logging.getLogger("cms.workers.purge")

MAX_MESSAGE_TAGS = 1000  # tags per pub/sub message


class PurgeSender:
    def __init__(self, redis: Any | None, purger: CdnPurger | None, *, path_prefix: str = "") -> None:
        self.redis = redis  # redis.asyncio client, or None (no delivery processes to tell)
        self.purger = purger or NoPurger()
        self.path_prefix = path_prefix

    @classmethod
    def for_settings(cls, redis: Any | None, purger: CdnPurger | None, settings: Any) -> PurgeSender:
        # A bucket serves keys under CMS_S3_PREFIX; the embedded store is served by delivery at /cdn/.
        return cls(redis, purger, path_prefix=settings.s3_prefix if settings.s3_bucket else "cdn/")

    def path_of(self, key: str) -> str:
        """The URL path of an object as the bucket (and the CDN in front of it) serves it."""
        return "/" + self.path_prefix + key

    async def send(self, tags: Iterable[str], keys: Iterable[str], reference: str) -> None:
        unique_tags = list(dict.fromkeys(t for t in tags if t))
        paths = list(dict.fromkeys(self.path_of(k) for k in keys))
        if self.redis is not None and unique_tags:
            for start in range(0, len(unique_tags), MAX_MESSAGE_TAGS):
                await self.redis.publish(PURGE_CHANNEL, " ".join(unique_tags[start : start + MAX_MESSAGE_TAGS]))
        if (unique_tags or paths) and not isinstance(self.purger, NoPurger):
            # CloudFront keys invalidations by reference: a retry with the same paths reuses the
            # invalidation, a retry with other paths (the state changed meanwhile) must not collide.
            digest = hashlib.blake2b("\n".join(sorted(paths)).encode(), digest_size=4).hexdigest()
            await asyncio.to_thread(self.purger.purge, unique_tags, paths, f"{reference}-{digest}")
        log.debug("purged %d tags, %d paths (%s)", len(unique_tags), len(paths), reference)
