"""The outbox relay and the step sweeper (both run in every worker process).

Relay: reads unrelayed `outbox_events` in batches (`FOR UPDATE SKIP LOCKED`, so any number of
relays can run at once without sharing an event), inserts the steps each event needs and marks it
relayed in one transaction, commits, and only then hands the steps out (to this worker's own step
loop while it has room, else as messages: broker.StepQueue). It wakes on
`LISTEN cms_outbox` (a dedicated connection; `emit` NOTIFYs at commit) and also every
`relay_interval` seconds, so a lost notification (or a lost LISTEN connection) delays nothing for
long. Under a stream of events it makes at most one pass per `relay_min_gap` (100 ms), so a busy
relay handles many events per transaction and per message. If the broker refuses a message, the
step is left for the sweeper.

Sweeper: every `sweep_interval` seconds hands out again (the same way) every step that is due and has
none (see `pipeline.due_steps`), e.g. after a worker was killed while holding steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from cms.app.config import PipelineConfig
from cms.app.db.listen import Listener
from cms.app.db.pool import create_pool
from cms.app.events import feed
from cms.app.events.outbox import OUTBOX_CHANNEL
from cms.app.schema import repository as schema_repo
from cms.app.webhooks import repository as webhooks_repo
from cms.workers import pipeline
from cms.workers.broker import StepQueue

log = logging.getLogger("cms.workers.relay")

PRUNE_BATCH = 5000


class _Loop:
    """A background task with start/stop; `pool` is shared or owned."""

    name = "loop"

    def __init__(self, database_url: str, queue: StepQueue, config: PipelineConfig, pool: Any = None):
        self.database_url = database_url
        self.queue = queue
        self.config = config
        self.pool = pool
        self._owns_pool = pool is None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self.pool is None:
            self.pool = await create_pool(self.database_url, min_size=1, max_size=2)
        self._tasks = [asyncio.create_task(coro, name=f"cms-{self.name}") for coro in self._coroutines()]

    def _coroutines(self) -> list[Any]:
        raise NotImplementedError

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._owns_pool and self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), 5)
            except Exception:
                self.pool.terminate()
            self.pool = None

    async def _send(self, steps: list[tuple[str, str]]) -> None:
        if not steps:
            return
        failed = await asyncio.to_thread(self.queue.send_many, steps)
        if failed:
            await pipeline.mark_unsent(self.pool, failed)


class Relay(_Loop):
    name = "relay"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake = asyncio.Event()
        self.relayed = 0
        self.passes = 0  # passes that relayed at least one event
        self._last_pass = 0.0
        # Woken at every commit of an event; on (re)connect, catch up on whatever was committed
        # while nobody listened.
        self._listener = Listener(
            self.database_url, {OUTBOX_CHANNEL: lambda _payload: self._wake.set()}, name="relay-listener",
            keepalive=5, on_connect=self._wake.set,
        )
        self.listening = self._listener.ready

    async def start(self) -> None:
        await super().start()
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()
        await super().stop()

    def _coroutines(self) -> list[Any]:
        return [self._run()]

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.relay_interval)
            # The first event after a quiet spell goes at once; while events keep coming, one
            # pass per `relay_min_gap` takes all of them (one transaction, one message). Only a
            # pass that found events counts: the periodic pass of an idle relay holds nothing back.
            loop = asyncio.get_running_loop()
            since = loop.time() - self._last_pass
            if since < self.config.relay_min_gap:
                await asyncio.sleep(self.config.relay_min_gap - since)
            self._wake.clear()
            try:
                started = loop.time()
                relayed = await self.relay_batch()
                if relayed:
                    self.passes += 1
                    self._last_pass = started
                while relayed >= self.config.relay_batch:
                    relayed = await self.relay_batch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("relay pass failed: %s", exc)
                await asyncio.sleep(min(self.config.relay_interval, 1))

    async def relay_batch(self) -> int:
        """Relay up to `relay_batch` events; returns how many were relayed."""
        # One statement (its own transaction): lock a batch of unrelayed events, mark them relayed
        # and insert the steps their types need. Four round trips fewer than doing it step by step,
        # which matters at one pass per `relay_min_gap`.
        row = await self.pool.fetchrow(_RELAY, self.config.relay_batch, *_STEP_TABLE)
        # Committed: the steps exist whatever happens next. Now (and only now) tell the workers.
        await self._send(list(zip(row["event_ids"], row["steps"], strict=True)))
        self.relayed += row["relayed"]
        return int(row["relayed"])


# (event type, step) pairs of every event type that needs a step, as two parallel arrays.
_STEP_TABLE = (
    [event_type for event_type, steps in pipeline.STEPS.items() for _ in steps],
    [step for steps in pipeline.STEPS.values() for step in steps],
)

_RELAY = """
WITH picked AS (
    SELECT id FROM outbox_events WHERE relayed_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE outbox_events e SET relayed_at = now() FROM picked p WHERE e.id = p.id RETURNING e.id, e.type, e.seq
), inserted AS (
    INSERT INTO outbox_steps (event_id, step, enqueued_at)
    SELECT m.id, s.step, now()
      FROM marked m JOIN unnest($2::text[], $3::text[]) AS s(event_type, step) ON s.event_type = m.type
     WHERE s.step <> 'webhook' OR EXISTS (SELECT 1 FROM webhooks w WHERE w.active)
     ORDER BY m.seq
    ON CONFLICT DO NOTHING
    RETURNING event_id, step
)
SELECT (SELECT count(*) FROM marked) AS relayed,
       coalesce((SELECT array_agg(event_id ORDER BY event_id, step) FROM inserted), '{}') AS event_ids,
       coalesce((SELECT array_agg(step ORDER BY event_id, step) FROM inserted), '{}') AS steps
"""


class Sweeper(_Loop):
    name = "sweeper"

    def _coroutines(self) -> list[Any]:
        return [self._run(), self._prune_loop()]

    async def _prune_loop(self) -> None:
        while True:
            try:
                pruned = await self.prune_once()
                if pruned:
                    log.info("pruned %d outbox event(s) older than %g days", pruned, self.config.retention_days)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox pruning failed: %s", exc)
            await asyncio.sleep(self.config.prune_interval)

    async def prune_once(self) -> int:
        """Delete the events (and steps) older than the retention, a batch per transaction; returns
        how many. Several workers may run this: one prunes at a time (an advisory lock), the others
        skip the round."""
        total = 0
        retention = self.config.retention_days * 86400
        while retention > 0:  # (0: events are kept for good)
            async with self.pool.acquire() as conn:
                n = await feed.prune(conn, retention, PRUNE_BATCH)
            total += n
            if n < PRUNE_BATCH:
                break
            await asyncio.sleep(0.05)  # let the write path in between batches
        # Finished webhook deliveries (and their attempts) are kept as long as the events.
        while retention > 0:
            async with self.pool.acquire() as conn:
                n = await webhooks_repo.prune_finished(conn, retention, PRUNE_BATCH)
            if n < PRUNE_BATCH:
                break
            await asyncio.sleep(0.05)
        # Kept counts of values no longer published (whatever the retention).
        while True:
            async with self.pool.acquire() as conn:
                n = await schema_repo.prune_value_counts(conn, PRUNE_BATCH)
            if n < PRUNE_BATCH:
                return total
            await asyncio.sleep(0.05)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("sweep failed: %s", exc)

    async def sweep_once(self) -> int:
        """Send messages for the steps that need one; returns how many were sent."""
        try:
            idle = await asyncio.to_thread(self.queue.waiting) == 0
        except Exception as exc:  # the broker is away: sending would fail too
            log.debug("broker unavailable for the sweep: %s", exc)
            return 0
        async with self.pool.acquire() as conn, conn.transaction():
            result = await pipeline.due_steps(conn, self.config, queue_idle=idle)
        if result.failed:
            log.error("%d step(s) failed for good: their lease ran out on the last attempt", result.failed)
        if result.due:
            log.info("re-enqueueing %d step(s)", len(result.due))
            await self._send(result.due)
        # Schema changes' re-renders that nobody has touched for a while (a lost message, a worker
        # killed in a batch: its lease ran out; a failed batch whose retry is due).
        # (While the queues have a backlog, a message may just be waiting its turn: wait longer.)
        after = self.config.reenqueue_after if idle else self.config.reenqueue_busy_after
        async with self.pool.acquire() as conn:
            stalled = await schema_repo.unfinished_rerenders(conn, idle_seconds=after)
        for type_id in stalled:
            log.info("re-enqueueing the re-render of %s", type_id)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.queue.actors[pipeline.RERENDER].send, type_id)
        return len(result.due) + len(stalled)
