"""Worker process entry points: `run_worker` (`cms worker`) and `republish` (`cms republish`).

One worker process runs the outbox relay and the step sweeper on its main event loop, and the
Dramatiq worker threads (whose async actors share Dramatiq's own event-loop thread and its asyncpg
pool). Any number of worker processes may run against the same database and Redis.

    python -m cms.workers.main            # the same as `cms worker`
    python -m cms.workers.main republish  # the same as `cms republish`

Settings come from CMS_* (app/config.py), the pipeline's tunables (lease, sweep interval, threads,
broker namespace, ...) included: `Settings.pipeline`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from dramatiq import Worker

from cms.app.config import PipelineConfig, Settings
from cms.app.db.pool import create_pool
from cms.app.publishing.files import Publisher, republish_all
from cms.workers.actors import rerender
from cms.workers.actors.purge import PurgeSender
from cms.workers.broker import (
    STEP_RUNS,
    LocalSteps,
    RuntimeMiddleware,
    StepQueue,
    WorkerRuntime,
    declare_actors,
    local_rerenders,
    make_broker,
)
from cms.workers.relay import Relay, Sweeper
from cms.workers.webhook_sender import WebhookLoop

log = logging.getLogger("cms.workers")

STOP_TIMEOUT_MS = 10_000  # how long running steps get to finish at shutdown (the lease covers the rest)


class WorkerHost:
    """Relay + sweeper (on the caller's event loop) + Dramatiq worker threads, started and stopped together."""

    def __init__(
        self, settings: Settings, database_url: str, redis_url: str, config: PipelineConfig | None = None, *,
        relay: bool = True, sweeper: bool = True, webhooks: bool = True, webhook_options: dict[str, Any] | None = None,
        **runtime_options: Any,
    ) -> None:
        self.config = config or settings.pipeline
        self.database_url = database_url
        self.broker = make_broker(redis_url, self.config.namespace)
        self.runtime = WorkerRuntime(settings, database_url, redis_url, self.config, **runtime_options)
        self.broker.add_middleware(RuntimeMiddleware(self.runtime))
        # Steps this process relays (or sweeps) run on its own step loop while it has room.
        self.local = LocalSteps(
            self.runtime, STEP_RUNS, self.config.local_steps, rerender.rerender_step, local_rerenders(self.config),
        )
        self.queue = StepQueue(
            self.broker, declare_actors(self.broker, self.runtime, self.local), self.config.deliver_batch, self.local,
        )
        self.worker: Worker | None = None
        self.pool: Any = None
        self.relay: Relay | None = None
        self.sweeper: Sweeper | None = None
        self._want_relay = relay
        self._want_sweeper = sweeper
        self.webhooks: WebhookLoop | None = (
            WebhookLoop(settings, database_url, **(webhook_options or {})) if webhooks else None
        )

    async def start(self) -> None:
        self.broker.emit_after("process_boot")  # starts the TimeLimit middleware's watchdog thread
        self.worker = Worker(self.broker, worker_threads=self.config.worker_threads, worker_timeout=self.config.poll_ms)
        await asyncio.to_thread(self.worker.start)
        if self.runtime.error is not None:
            await asyncio.to_thread(self.worker.stop, 1000)
            raise RuntimeError(f"worker runtime failed to start: {self.runtime.error}") from self.runtime.error
        self.pool = await create_pool(self.database_url, min_size=1, max_size=3)
        if self._want_relay:
            self.relay = Relay(self.database_url, self.queue, self.config, pool=self.pool)
            await self.relay.start()
        if self._want_sweeper:
            self.sweeper = Sweeper(self.database_url, self.queue, self.config, pool=self.pool)
            await self.sweeper.start()
        if self.webhooks is not None:
            await self.webhooks.start()
        log.info(
            "worker started: %d threads, lease %.0f s, sweep every %.1f s, namespace %r",
            self.config.worker_threads, self.config.lease_seconds, self.config.sweep_interval, self.config.namespace,
        )

    async def stop(self) -> None:
        for loop_ in (self.relay, self.sweeper, self.webhooks):
            if loop_ is not None:
                await loop_.stop()
        # One deadline for the steps running here and those from messages.
        started = time.monotonic()
        await asyncio.to_thread(self.local.close, STOP_TIMEOUT_MS / 1000)
        if self.worker is not None:
            left_ms = max(1000, STOP_TIMEOUT_MS - int((time.monotonic() - started) * 1000))
            await asyncio.to_thread(self.worker.stop, left_ms)
            self.worker = None
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), 5)
            except Exception:
                self.pool.terminate()
            self.pool = None
        with contextlib.suppress(Exception):
            self.broker.close()
            self.broker.client.close()
        log.info("worker stopped")


def run_worker(settings: Settings) -> int:
    """`cms worker`: run until SIGINT/SIGTERM, then stop cleanly. Returns the exit code."""
    return asyncio.run(_run_worker(settings))


async def _run_worker(settings: Settings) -> int:
    from cms.app.runtime import resolve_services, tune_gc

    services = await resolve_services(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host = WorkerHost(settings, services.database_url, services.redis_url)
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port, addr=settings.host)
        log.info("metrics on http://%s:%d/metrics", settings.host, settings.worker_metrics_port)
    try:
        await host.start()
        tune_gc()
        await stop.wait()
        log.info("stopping")
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await host.stop()
        services.stop()


def republish(settings: Settings, progress: Callable[[int, int], None] | None = None) -> int:
    """`cms republish`: re-render every published entry's files and every index; progress(done, total).

    Also removes files nothing published owns any more, and purges what changed. Returns the exit code.
    """
    return asyncio.run(_republish(settings, progress))


async def _republish(settings: Settings, progress: Callable[[int, int], None] | None) -> int:
    import redis.asyncio as aioredis

    from cms.app.runtime import resolve_services
    from cms.workers.outputs import object_store_from_settings, purger_from_settings

    services = await resolve_services(settings)
    pool = await create_pool(services.database_url, min_size=1, max_size=2)
    redis = aioredis.from_url(services.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        publisher = Publisher(object_store_from_settings(settings), settings, only_changed=True)
        result = await republish_all(pool, publisher, progress)
        changes = result.changes
        purge = PurgeSender.for_settings(redis, purger_from_settings(settings), settings)
        keys = changes.keys  # only what changed: unchanged files are neither rewritten nor purged
        reference = f"republish-{int(time.time())}"
        if keys:
            try:
                for start in range(0, len(keys), 3000):
                    await purge.send(changes.tags if start == 0 else [], keys[start : start + 3000], reference)
            except Exception as exc:
                log.error("files were rewritten but the purge failed: %s", exc)
                return 1
        log.info(
            "republished %d entries: %d files written, %d removed; %d documents got their links' places",
            result.entries, len(changes.written), len(changes.deleted), result.links,
        )
        return 0
    finally:
        await redis.aclose()
        await pool.close()
        services.stop()


def main(argv: list[str] | None = None) -> int:
    from cms.app.config import ConfigError, load_settings

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # else one line per webhook request
    if argv not in ([], ["republish"]):
        print("usage: python -m cms.workers.main [republish]", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
        if argv == ["republish"]:
            return republish(settings, lambda done, total: log.info("republish %d/%d", done, total) if done == total else None)
        return run_worker(settings)
    except ConfigError as exc:
        print(f"cms: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
