"""Purges for the delivery processes' caches, arriving by Redis pub/sub from the workers.

The worker publishes space-separated tags (`entry:{id} type:{type} …`) on `cms:purge` once the
prerendered files are written; every delivery process subscribes with `RedisPurgeSubscriber` and
hands the tags to its cache (`DeliveryCache.invalidate`). Pub/sub is fire-and-forget: a message sent
while we were disconnected is lost, so after every reconnect the callback gets None ("drop
everything").
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from ..db.listen import ReconnectingSession

log = logging.getLogger("cms.delivery.purge")

PURGE_CHANNEL = "cms:purge"

PurgeCallback = Callable[[list[str] | None], Awaitable[None] | None]


class RedisPurgeSubscriber(ReconnectingSession):
    """Subscribes to `cms:purge` and calls `callback(tags)`; `callback(None)` after a reconnect."""

    name = "purge-subscriber"
    PING_EVERY = 5.0  # seconds between PINGs on the subscription connection
    DEAD_AFTER = 15.0  # no PONG (or message) for this long: the connection is gone, reconnect

    def __init__(
        self, redis_url: str, callback: PurgeCallback, *, channel: str = PURGE_CHANNEL,
        socket_timeout: float = 5.0,
    ) -> None:
        super().__init__()
        self.redis_url = redis_url
        self.callback = callback
        self.channel = channel
        self.socket_timeout = socket_timeout
        self.reconnects = 0
        self._subscribed_before = False

    async def start(self, wait: float = 2.0) -> None:
        """Start listening; waits up to `wait` seconds for the first subscription (never fails)."""
        await super().start(wait)

    @property
    def connected(self) -> bool:
        return self.ready.is_set()

    async def _dispatch(self, tags: list[str] | None) -> None:
        try:
            result = self.callback(tags)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("purge callback failed")

    async def _session(self) -> None:
        client = aioredis.from_url(
            self.redis_url, socket_timeout=self.socket_timeout, socket_connect_timeout=self.socket_timeout,
        )
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            if self._subscribed_before:
                self.reconnects += 1
                await self._dispatch(None)  # anything published while we were away is lost
            self._subscribed_before = True
            self.ready.set()
            await self._listen(pubsub)
        finally:
            for closing in (pubsub, client):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(closing.aclose(), 2)

    async def _listen(self, pubsub: Any) -> None:
        loop = asyncio.get_running_loop()
        last_seen = last_ping = loop.time()
        while True:
            message = await pubsub.get_message(timeout=1.0)
            now = loop.time()
            if message is not None:
                last_seen = now
                kind = message.get("type")
                if kind == "message":
                    data = message.get("data")
                    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
                    tags = text.split()
                    if tags:
                        await self._dispatch(tags)
            if now - last_seen > self.DEAD_AFTER:
                raise ConnectionError(f"no answer from Redis for {self.DEAD_AFTER:.0f} s")
            if now - last_ping >= self.PING_EVERY:
                last_ping = now
                await pubsub.ping()
