"""The Dramatiq broker (Redis) and what the actors run with.

- `make_broker`: a RedisBroker with explicit socket timeouts (redis-py's defaults block forever),
  the AsyncIO middleware (async actors run on Dramatiq's one event-loop thread) and Dramatiq's
  default middleware.
- `WorkerRuntime`: the actors' resources (asyncpg pool, object store, CDN purger, Redis client),
  created by `RuntimeMiddleware` *on Dramatiq's event loop* after the worker boots: an asyncpg pool
  is bound to the loop it was made on.
- `StepQueue`: sends "run step S of event E" messages; the relay and the sweeper use it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq
import redis
import redis.asyncio as aioredis
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO, Middleware

from cms.app.config import PipelineConfig, Settings
from cms.app.db.pool import create_pool
from cms.app.publishing.files import Publisher
from cms.storage.cdn import CdnPurger
from cms.storage.objects import ObjectStore
from cms.workers.actors import deliver, rerender, webhooks
from cms.workers.actors.purge import PurgeSender
from cms.workers.outputs import object_store_from_settings, purger_from_settings
from cms.workers.pipeline import DELIVER, RERENDER, WEBHOOK

log = logging.getLogger("cms.workers.broker")

REDIS_TIMEOUT = 5.0


def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(
        redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT, health_check_interval=30,
    )


def make_broker(redis_url: str, namespace: str = "cms") -> RedisBroker:
    broker = RedisBroker(client=redis_client(redis_url), namespace=namespace)
    broker.add_middleware(AsyncIO())
    return broker


class WorkerRuntime:
    """The actors' resources; `open()`/`close()` run on Dramatiq's event loop (RuntimeMiddleware)."""

    def __init__(
        self, settings: Settings, database_url: str, redis_url: str, config: PipelineConfig, *,
        store: ObjectStore | None = None, purger: CdnPurger | None = None,
    ) -> None:
        self.settings = settings
        self.database_url = database_url
        self.redis_url = redis_url
        self.config = config
        self.store = store if store is not None else object_store_from_settings(settings)
        self.purger = purger if purger is not None else purger_from_settings(settings)
        self.publisher = Publisher(self.store, settings)
        self.pool: Any = None
        self.redis: Any = None
        self.purge: PurgeSender = PurgeSender.for_settings(None, self.purger, settings)
        self.error: BaseException | None = None
        self.send_rerender: Callable[[str], Any] = lambda type_id: None  # declare_actors binds it
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        # Object-store and CDN calls run in threads: enough of them for every concurrent step.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.worker_threads * 2 + 4, thread_name_prefix="cms-io"
        )
        loop.set_default_executor(self._executor)
        self.pool = await create_pool(self.database_url, min_size=1, max_size=self.config.worker_threads + 4)
        self.redis = aioredis.from_url(
            self.redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        self.purge.redis = self.redis

    async def close(self) -> None:
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), 5)
            except Exception:
                self.pool.terminate()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


class RuntimeMiddleware(Middleware):
    """Opens the runtime on Dramatiq's event loop as the worker boots; closes it at shutdown.

    `before_worker_boot`, not `after_worker_boot`: Dramatiq starts consuming (and running actors)
    before it emits `after_worker_boot`. Middleware run in order, so AsyncIO (added first) has
    created the event loop by the time this runs.
    """

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime

    def _run(self, coro: Any) -> None:
        thread = get_event_loop_thread()
        if thread is None:
            raise RuntimeError("the AsyncIO middleware must come before RuntimeMiddleware")
        thread.run_coroutine(coro)

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        try:
            self._run(self.runtime.open())
        except BaseException as exc:  # Dramatiq only logs middleware errors; the host checks this
            self.runtime.error = exc
            raise

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        # Runs before AsyncIO's after_worker_shutdown (reverse order), so the loop is still up.
        self._run(self.runtime.close())


class StepQueue:
    """Sends step messages: one actor per step name; a message names up to `batch` events."""

    def __init__(self, broker: RedisBroker, actors: dict[str, dramatiq.Actor[Any, Any]], batch: int = 1) -> None:
        self.broker = broker
        self.actors = actors
        self.batch = max(1, batch)
        self.sent = 0  # steps sent (tests check that nothing is sent twice)

    def send(self, event_ids: list[str], step: str) -> None:
        self.actors[step].send(event_ids)
        self.sent += len(event_ids)

    def send_many(self, steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Send each (event_id, step), `batch` events per message; returns those the broker refused
        (e.g. Redis is down)."""
        by_step: dict[str, list[str]] = {}
        for event_id, step in steps:
            by_step.setdefault(step, []).append(event_id)
        chunks = [
            (step, ids[start : start + self.batch]) for step, ids in by_step.items()
            for start in range(0, len(ids), self.batch)
        ]
        failed: list[tuple[str, str]] = []
        for index, (step, ids) in enumerate(chunks):
            try:
                self.send(ids, step)
            except redis.RedisError as exc:
                left = [(e, s) for s, chunk in chunks[index:] for e in chunk]
                log.warning("broker unavailable, %d step message(s) left for the sweeper: %s", len(left), exc)
                failed.extend(left)
                break
            except Exception:
                log.exception("could not send %s of %s", step, ids)
                failed.extend((e, step) for e in ids)
        return failed

    def waiting(self) -> int:
        """Messages waiting in the broker's queues, not yet fetched by any worker."""
        names = {actor.queue_name for actor in self.actors.values()}
        return sum(int(self.broker.client.llen(f"{self.broker.namespace}:{name}")) for name in names)


def declare_actors(broker: RedisBroker, runtime: WorkerRuntime | None) -> dict[str, dramatiq.Actor[Any, Any]]:
    """Declare every step's actor on `broker`. `runtime` None: a sender only (it never runs them)."""
    bound = runtime if runtime is not None else _SenderOnly()
    actors = {
        DELIVER: _step_actor(broker, bound, "cms.deliver", deliver.deliver_step),
        WEBHOOK: _step_actor(broker, bound, "cms.webhook", webhooks.webhook_step),
        RERENDER: _rerender_actor(broker, bound),
    }
    if runtime is not None:
        runtime.send_rerender = actors[RERENDER].send
    return actors


def _rerender_actor(broker: RedisBroker, runtime: Any) -> dramatiq.Actor[Any, Any]:
    """One batch of a schema change's background work per message (on its own queue, so entry
    deliveries never wait behind a big type's re-render)."""

    async def run(type_id: str) -> None:
        await rerender.rerender_step(runtime, type_id, declared.send)

    run.__name__ = "rerender"
    declared: dramatiq.Actor[Any, Any] = dramatiq.actor(
        broker=broker, actor_name="cms.rerender", queue_name="cms_rerender", max_retries=0,
        # A batch is bounded by its size, but the last step builds indexes over the whole table
        # (minutes at millions of rows): the lease, renewed while it runs, guards it instead.
        time_limit=int(max(runtime.config.time_limit_seconds, 6 * 3600) * 1000),
    )(run)
    return declared


def _step_actor(
    broker: RedisBroker, runtime: Any, name: str, step: Callable[[Any, list[str]], Awaitable[dict[str, str]]],
) -> dramatiq.Actor[Any, Any]:
    """An actor that runs `step` for the event ids of a message (one id or a list), bound to `runtime`."""

    async def run(event_ids: list[str] | str) -> None:
        await step(runtime, [event_ids] if isinstance(event_ids, str) else list(event_ids))

    run.__name__ = name.rsplit(".", 1)[-1]
    declare = dramatiq.actor(
        broker=broker, actor_name=name, queue_name="cms_deliver",
        max_retries=0,  # PostgreSQL does the retrying (outbox_steps), not the broker
        min_backoff=1000, time_limit=int(runtime.config.time_limit_seconds * 1000),
    )
    return declare(run)


class _SenderOnly:
    config = PipelineConfig()
