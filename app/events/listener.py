"""One dedicated connection per process LISTENing for cache invalidations after commits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from .outbox import INVALIDATE_CHANNEL

log = logging.getLogger("cms.listener")

TagsCallback = Callable[[list[str] | None], None]  # None: "drop everything" (connection was lost)


class InvalidationListener:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.callbacks: list[TagsCallback] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def subscribe(self, callback: TagsCallback) -> None:
        self.callbacks.append(callback)

    def _dispatch(self, tags: list[str] | None) -> None:
        for callback in self.callbacks:
            try:
                callback(tags)
            except Exception:
                log.exception("invalidation callback failed")

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self._dispatch(str(payload).split())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cms-invalidation-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 10)

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn)
                await conn.add_listener(INVALIDATE_CHANNEL, self._on_notify)  # type: ignore[arg-type]
                # Anything cached while we were not listening may be stale.
                self._dispatch(None)
                self._ready.set()
                backoff = 0.2
                while not conn.is_closed():
                    await asyncio.sleep(1)
                    await conn.execute("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("invalidation listener lost its connection: %s", exc)
                self._dispatch(None)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
