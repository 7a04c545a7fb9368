"""Cache invalidations after commit: one LISTEN connection per process, fanned out to subscribers."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..db.listen import Listener
from .outbox import INVALIDATE_CHANNEL

log = logging.getLogger("cms.listener")

TagsCallback = Callable[[list[str] | None], None]  # None: "drop everything" (the connection was lost)


class InvalidationListener:
    def __init__(self, dsn: str) -> None:
        self.callbacks: list[TagsCallback] = []
        # Anything cached while we were not listening may be stale: drop everything on (re)connect
        # and when the connection goes.
        self._listener = Listener(
            dsn, {INVALIDATE_CHANNEL: lambda payload: self._dispatch(payload.split())}, name="invalidation-listener",
            on_connect=lambda: self._dispatch(None), on_lost=lambda: self._dispatch(None),
        )

    def subscribe(self, callback: TagsCallback) -> None:
        self.callbacks.append(callback)

    def _dispatch(self, tags: list[str] | None) -> None:
        for callback in self.callbacks:
            try:
                callback(tags)
            except Exception:
                log.exception("invalidation callback failed")

    async def start(self) -> None:
        await self._listener.start(wait=10)

    async def stop(self) -> None:
        await self._listener.stop()
