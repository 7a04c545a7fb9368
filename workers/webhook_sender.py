"""The webhook sender loop (in every worker process): sends the deliveries that are due.

It wakes on `LISTEN cms_webhooks` (new deliveries, a redelivery, a re-enabled endpoint), when a
send finishes, and at the next retry's due time (at most every `poll` seconds), claims as many due
deliveries as it has free slots (app/webhooks/sending.py), and sends them concurrently. Any number
of worker processes may run it: claims skip each other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Gauge

from cms.app.config import Settings
from cms.app.db.listen import Listener
from cms.app.db.pool import create_pool
from cms.app.webhooks import repository as repo
from cms.app.webhooks.sending import WebhookSender
from cms.app.webhooks.service import secret_box
from cms.app.webhooks.ssrf import Resolver, default_resolver

log = logging.getLogger("cms.workers.webhooks")

OLDEST_DUE = Gauge("cms_webhook_oldest_due_seconds", "How long the longest-waiting due webhook delivery has waited")


class WebhookLoop:
    def __init__(
        self, settings: Settings, database_url: str, *, poll: float = 1.0, resolver: Resolver = default_resolver,
        per_endpoint: int = 4, concurrency: int = 64,
    ) -> None:
        self.settings = settings
        self.database_url = database_url
        self.poll = poll
        self.resolver = resolver
        self.per_endpoint = per_endpoint
        self.concurrency = concurrency
        self.pool: Any = None
        self.sender: WebhookSender | None = None
        self._wake = asyncio.Event()
        self._listener = Listener(database_url, {repo.WEBHOOK_CHANNEL: lambda _: self._wake.set()},
                                  name="webhook-listener", keepalive=5, on_connect=self._wake.set)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.pool = await create_pool(self.database_url, min_size=1, max_size=4)
        self.sender = WebhookSender(
            self.pool, secret_box(self.settings), schedule=self.settings.webhook_retry_schedule,
            allow_private=self.settings.webhook_allow_private, resolver=self.resolver,
            per_endpoint=self.per_endpoint, concurrency=self.concurrency,
            lease_seconds=self.settings.pipeline.lease_seconds, timeout=self.settings.webhook_timeout_seconds,
            on_recorded=self._wake.set,
        )
        await self._listener.start()
        self._task = asyncio.create_task(self._run(), name="cms-webhook-sender")

    async def stop(self) -> None:
        await self._listener.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self.sender is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.sender.drain(), 5)  # a moment for sends in flight
            await self.sender.close()
        if self.pool is not None:
            await self.pool.close()

    async def _run(self) -> None:
        assert self.sender is not None
        while True:
            self._wake.clear()  # before looking: a wake-up while we look is kept for the wait below
            try:
                claimed = await self.sender.send_due()
                if claimed and self.sender.free > 0:
                    continue
                delay = await self._until_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook sender: %s", exc)
                delay = self.poll
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _until_due(self) -> float:
        """Seconds until the next delivery is due, capped at `poll`. Deliveries due now that could not
        be taken (their endpoint's slots are full, or they wait for an earlier delivery or fan-out of
        their entry) are woken for: a finished send (here: `on_recorded`; elsewhere: NOTIFY) or a
        fan-out frees them."""
        async with self.pool.acquire() as conn:
            due = await repo.next_due(conn)
            OLDEST_DUE.set(await repo.oldest_due_seconds(conn))
        if due is None:
            return self.poll
        wait = (due - datetime.now(UTC)).total_seconds()
        return self.poll if wait <= 0 else max(0.01, min(self.poll, wait))
