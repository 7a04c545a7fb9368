"""The Dramatiq broker (Redis) and what the actors run with.

- `make_broker`: a RedisBroker with explicit socket timeouts (redis-py's defaults block forever),
  the AsyncIO middleware (async actors run on Dramatiq's one event-loop thread) and Dramatiq's
  default middleware.
- `WorkerRuntime`: the actors' resources (asyncpg pool, object store, CDN purger, Redis client),
  created by `RuntimeMiddleware` *on Dramatiq's event loop* after the worker boots: an asyncpg pool
  is bound to the loop it was made on.
- `StepQueue`: hands out "run step S of event E": to this process's own step loop when it has room
  (`LocalSteps`, no broker round trip), else as a Dramatiq message; the relay and the sweeper use it.
- A schema change's re-render runs its batches one after another on that loop too
  (`LocalSteps.try_rerender`), else one message per batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import dramatiq
import redis
import redis.asyncio as aioredis
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO, Middleware

from cms.app.config import PipelineConfig, Settings
from cms.app.db.pool import create_pool
from cms.app.publishing.files import Publisher
from cms.app.schema.rerenders import PARTS
from cms.storage.cdn import CdnPurger
from cms.storage.objects import ObjectStore
from cms.workers.actors import deliver, rerender, webhooks
from cms.workers.actors.purge import PurgeSender
from cms.workers.outputs import object_store_from_settings, purger_from_settings
from cms.workers.pipeline import DELIVER, RERENDER, WEBHOOK

log = logging.getLogger("cms.workers.broker")
T = TypeVar("T")

REDIS_TIMEOUT = 5.0
# Types whose re-render runs here at a time, batch after batch (others by message, on any worker).
LOCAL_RERENDERS = 2
CLOSE_INTERRUPT_S = 3.0  # at shutdown, how long an interrupted re-render batch gets to release its lease


def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(
        redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT, health_check_interval=30,
    )


def make_broker(redis_url: str, namespace: str = "cms") -> RedisBroker:
    broker = RedisBroker(client=redis_client(redis_url), namespace=namespace)
    broker.add_middleware(AsyncIO())
    return broker


def local_rerenders(config: PipelineConfig) -> int:
    """Types whose re-render a worker runs itself at once (CMS_WORKER_LOCAL_STEPS=0: all by message)."""
    return LOCAL_RERENDERS if config.local_steps > 0 else 0


async def _nowhere(type_id: str) -> None:
    return None


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
        self.loop: asyncio.AbstractEventLoop | None = None  # Dramatiq's event loop, while open
        # Start (or continue) a type's re-render: here when LocalSteps has room, else by message.
        self.send_rerender: Callable[[str], Awaitable[None]] = _nowhere  # declare_actors binds it
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        # Object-store and CDN calls run in threads: enough of them for every concurrent step.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=(self.config.worker_threads + self.config.local_steps) * 2 + 4, thread_name_prefix="cms-io"
        )
        loop.set_default_executor(self._executor)
        self.pool = await create_pool(
            self.database_url, min_size=1,
            # (a re-render batch: its parts' connections and its lease renewal's)
            max_size=self.config.worker_threads + self.config.local_steps + local_rerenders(self.config) * (PARTS + 1) + 4,
        )
        self.redis = aioredis.from_url(
            self.redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        self.purge.redis = self.redis
        self.loop = loop

    async def close(self) -> None:
        self.loop = None
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


StepRun = Callable[[Any, list[str]], Awaitable[dict[str, str]]]
RerenderRun = Callable[[Any, str], Awaitable[bool]]  # one batch of a type's re-render; True while more is left


class LocalSteps:
    """Runs steps on this worker process's own step loop (Dramatiq's event-loop thread, where the
    runtime's pool lives) without a broker message.

    A message costs more than the step it carries at a few publishes per second: Redis's enqueue,
    Dramatiq's fetch and ack scripts and a thread hand-off were ~45% of the worker's CPU at 10
    publishes/s. PostgreSQL's `outbox_steps` stays the record either way (claim, lease, complete),
    so a step lost with this process is found by the sweeper like one whose message was lost. At
    most `limit` runs at a time; beyond that the steps go through the broker, where any worker
    process can take them.
    """

    def __init__(
        self, runtime: Any, runs: dict[str, StepRun], limit: int, rerender: RerenderRun | None = None,
        rerenders: int = LOCAL_RERENDERS,
    ) -> None:
        self.runtime = runtime
        self.runs = runs
        self.limit = limit
        self.rerender = rerender
        self.rerenders = rerenders
        self.ran = 0  # steps run here (tests)
        self.batches = 0  # re-render batch runs here, whether they found work or not (tests)
        self.closed = False
        self._running: set[concurrent.futures.Future[None]] = set()
        self._chains: dict[str, concurrent.futures.Future[None]] = {}  # type id -> its re-render here
        self._again: set[str] = set()  # types sent again while their chain ran a batch
        # Every re-render running on the step loop, chained or from a message: its task -> the type.
        self._tasks: dict[asyncio.Task[Any], str] = {}
        self._interrupting = False  # close() is cancelling them (a cancellation from then on is ours)
        self._lock = threading.Lock()

    def _room_locked(self) -> bool:
        # A future wakes its waiters before its done-callbacks run: count only unfinished ones.
        self._running = {f for f in self._running if not f.done()}
        return not self.closed and len(self._running) < self.limit

    def has_room(self) -> bool:
        with self._lock:
            return self._room_locked()

    def try_run(self, step: str, event_ids: list[str]) -> bool:
        """Start `step` for `event_ids` here; False when it cannot (no room, closed or not running
        yet, a step no local run is declared for)."""
        run, loop = self.runs.get(step), self.runtime.loop
        if run is None or loop is None or loop.is_closed():
            return False
        with self._lock:
            if not self._room_locked():
                return False
            try:
                future = asyncio.run_coroutine_threadsafe(self._run(run, list(event_ids)), loop)
            except RuntimeError:  # the loop closed meanwhile: a message then
                return False
            self._running.add(future)
            self.ran += len(event_ids)
        future.add_done_callback(self._finished)
        return True

    async def _run(self, run: StepRun, event_ids: list[str]) -> None:
        # Dramatiq's time limit does not reach a step run here: the same limit, as a cancellation
        # (pipeline.execute records it as a failed attempt, retried while attempts are left).
        await _within_limit(run(self.runtime, event_ids), self.runtime.config.time_limit_seconds, f"step of {event_ids}")

    def _finished(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._running.discard(future)

    def try_rerender(self, type_id: str) -> bool:
        """Run the type's re-render here, batch after batch until none is left: no message and no
        broker poll between two batches (with Dramatiq's idle poll between chained messages, a 1M
        re-render ran at ~620 entries/s with a 1 s poll, ~780 with 100 ms). True when it runs here
        (or already did: its chain looks once more before it stops); False when it cannot (closed,
        not running yet, `rerenders` types running here already)."""
        loop = self.runtime.loop
        if self.rerender is None or loop is None or loop.is_closed() or not loop.is_running():
            return False
        with self._lock:
            if self.closed:
                return False
            if type_id in self._chains:
                self._again.add(type_id)
                return True
            if len(self._chains) >= self.rerenders:
                return False
            try:
                future = asyncio.run_coroutine_threadsafe(self._chain(type_id), loop)
            except RuntimeError:  # the loop closed meanwhile: a message then
                return False
            self._chains[type_id] = future
        future.add_done_callback(functools.partial(self._chain_ended, type_id))
        return True

    async def _chain(self, type_id: str) -> None:
        # The type's entry in _chains is this chain's until it removes it (under the lock, as it
        # decides to stop) or, should it end otherwise (cancelled), until _chain_ended does.
        # Stopped at shutdown with more left, it sends no message: this worker's Dramatiq threads,
        # still running, would take it and be stopped in its batch. The lease is free: the sweeper
        # of any worker sends it on once it has been idle `CMS_REENQUEUE_AFTER_SECONDS`.
        task = asyncio.current_task()
        assert task is not None
        self._tasks[task] = type_id
        try:
            while True:
                with self._lock:
                    self._again.discard(type_id)
                more = await self._rerender_batch(type_id)
                with self._lock:
                    more = more or type_id in self._again  # sent again while the batch ran
                    if self.closed or not more:  # from now on a send starts a new chain (or a message)
                        del self._chains[type_id]
                        self._again.discard(type_id)
                        break
        finally:
            self._tasks.pop(task, None)

    def _chain_ended(self, type_id: str, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            if self._chains.get(type_id) is future:  # it never ran, or was cancelled
                del self._chains[type_id]

    async def _rerender_batch(self, type_id: str) -> bool:
        assert self.rerender is not None
        # (run_batch records its own failures; one here is the runtime's, e.g. the pool closed)
        more = await _within_limit(
            self.rerender(self.runtime, type_id), rerender.time_limit_seconds(self.runtime.config),
            f"re-render of {type_id}",
        )
        if more is None:
            return False
        self.batches += 1
        return more

    async def rerender_by_message(self, type_id: str) -> bool:
        """One batch of the type's re-render from a `cms.rerender` message (a Dramatiq thread waits
        on it; the coroutine runs on the step loop): True while more is left. Tracked so that a
        stop interrupts it as it does a chain's batch; started while stopping, it does nothing."""
        assert self.rerender is not None
        task = asyncio.current_task()
        assert task is not None
        with self._lock:
            if self.closed:
                return False  # the sweeper sends it on
            self._tasks[task] = type_id
        try:
            return await self.rerender(self.runtime, type_id)
        except asyncio.CancelledError:
            if not self._interrupting:  # (Dramatiq's time limit, say)
                raise
            task.uncancel()
            return False  # interrupted by close(): its lease is released, the sweeper sends the rest on
        finally:
            self._tasks.pop(task, None)

    def close(self, timeout: float) -> None:
        """Start nothing more here; wait up to `timeout` s for the steps and re-render batches
        running (at shutdown). A re-render batch still running then (the finish's index build takes
        minutes at 1M), whether chained here or from a message, is interrupted, so that it releases
        its lease while the pool is open (else the re-render would wait for the lease to run out);
        a step's lease covers it."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self.closed = True
            running = [*self._running, *self._chains.values()]
        if running:
            concurrent.futures.wait(running, timeout)
        loop = self.runtime.loop
        if self._tasks and loop is not None and loop.is_running():
            grace = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._interrupt(grace), loop).result(grace + CLOSE_INTERRUPT_S + 1)

    async def _interrupt(self, grace: float) -> None:
        # (what is left of the stop's deadline: the chains were waited for already, message batches not)
        if grace > 0:
            await asyncio.wait(list(self._tasks), timeout=grace)
        left = {task: type_id for task, type_id in self._tasks.items() if not task.done()}
        if not left:
            return
        log.info("interrupting the re-render batch of %s (the sweeper sends the rest on)", ", ".join(left.values()))
        self._interrupting = True
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=CLOSE_INTERRUPT_S)


async def _within_limit(work: Awaitable[T], limit: float, what: str) -> T | None:
    """`work`'s result, or None (logged) when it failed or ran past `limit` seconds (interrupted)."""
    try:
        async with asyncio.timeout(limit) as deadline:
            return await work
    except TimeoutError:
        if not deadline.expired():
            log.exception("%s failed", what)
        else:
            log.warning("%s passed its time limit (%.0f s) and was interrupted", what, limit)
    except Exception:
        log.exception("%s failed", what)
    return None


class StepQueue:
    """Hands out steps: to `local` when it has room, else as messages (one actor per step name; a
    message names up to `batch` events)."""

    def __init__(
        self, broker: RedisBroker, actors: dict[str, dramatiq.Actor[Any, Any]], batch: int = 1,
        local: LocalSteps | None = None,
    ) -> None:
        self.broker = broker
        self.actors = actors
        self.batch = max(1, batch)
        self.local = local
        self.sent = 0  # steps handed out (tests check that nothing is sent twice)
        self._count_lock = threading.Lock()  # the relay's and the sweeper's threads both hand out

    def send(self, event_ids: list[str], step: str) -> None:
        self.actors[step].send(event_ids)
        self._count(len(event_ids))

    def _count(self, steps: int) -> None:
        with self._count_lock:
            self.sent += steps

    def send_many(self, steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Hand out each (event_id, step), `batch` events per run or message; returns those the
        broker refused (e.g. Redis is down)."""
        by_step: dict[str, list[str]] = {}
        for event_id, step in steps:
            by_step.setdefault(step, []).append(event_id)
        chunks = [
            (step, ids[start : start + self.batch]) for step, ids in by_step.items()
            for start in range(0, len(ids), self.batch)
        ]
        failed: list[tuple[str, str]] = []
        local = self.local if self.local is not None and chunks and self.local.has_room() else None
        if local is not None and not self._reachable():
            # A step run here needs Redis as much as a message does (its purges go through it):
            # while Redis is away, the steps wait in PostgreSQL for the sweeper, attempts untouched.
            log.warning("broker unavailable, %d step(s) left for the sweeper", len(steps))
            return list(steps)
        for index, (step, ids) in enumerate(chunks):
            if local is not None and local.try_run(step, ids):
                self._count(len(ids))
                continue
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

    def _reachable(self) -> bool:
        try:
            return bool(self.broker.client.ping())
        except redis.RedisError:
            return False

    def waiting(self) -> int:
        """Messages waiting in the broker's queues, not yet fetched by any worker."""
        names = {actor.queue_name for actor in self.actors.values()}
        return sum(int(self.broker.client.llen(f"{self.broker.namespace}:{name}")) for name in names)


# The steps the relay hands out, and what runs them (by a message's actor or by LocalSteps).
STEP_RUNS: dict[str, StepRun] = {DELIVER: deliver.deliver_step, WEBHOOK: webhooks.webhook_step}


def declare_actors(
    broker: RedisBroker, runtime: WorkerRuntime | None, local: LocalSteps | None = None,
) -> dict[str, dramatiq.Actor[Any, Any]]:
    """Declare every step's actor on `broker`. `runtime` None: a sender only (it never runs them).
    With `local`, the runtime's re-renders run there while it has room."""
    bound = runtime if runtime is not None else _SenderOnly()
    actors = {
        DELIVER: _step_actor(broker, bound, "cms.deliver", STEP_RUNS[DELIVER]),
        WEBHOOK: _step_actor(broker, bound, "cms.webhook", STEP_RUNS[WEBHOOK]),
        RERENDER: _rerender_actor(broker, bound, local),
    }
    if runtime is not None:
        by_message = actors[RERENDER].send

        async def send_rerender(type_id: str) -> None:
            if local is not None and local.try_rerender(type_id):
                return
            try:
                await asyncio.to_thread(by_message, type_id)  # (not on the step loop: Redis may stall)
            except Exception as exc:  # the sweeper sends it once the broker is back
                log.warning("could not send the re-render of %s: %s", type_id, exc)

        runtime.send_rerender = send_rerender
    return actors


def _rerender_actor(broker: RedisBroker, runtime: Any, local: LocalSteps | None) -> dramatiq.Actor[Any, Any]:
    """One batch of a schema change's background work per message (on its own queue, so entry
    deliveries never wait behind a big type's re-render); the rest goes on as `send_rerender` says."""

    async def run(type_id: str) -> None:
        more = await (
            local.rerender_by_message(type_id) if local is not None and local.rerender is not None
            else rerender.rerender_step(runtime, type_id)
        )
        # (stopping: nothing sent, as a chain sends nothing; the sweeper sends the rest on)
        if more and not (local is not None and local.closed):
            await runtime.send_rerender(type_id)

    run.__name__ = "rerender"
    return dramatiq.actor(
        broker=broker, actor_name="cms.rerender", queue_name="cms_rerender", max_retries=0,
        time_limit=int(rerender.time_limit_seconds(runtime.config) * 1000),
    )(run)


def _step_actor(
    broker: RedisBroker, runtime: Any, name: str, step: StepRun,
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
