"""`cms scheduler`: fires due scheduled actions.

Leadership: a PostgreSQL session advisory lock taken on the scheduler's own connection. Only the
holder fires actions; a standby retries every second, so when the leader dies (its connection
closes and the lock with it) another scheduler takes over within a couple of seconds.

Every action fires in its own transaction: the row is claimed with FOR UPDATE SKIP LOCKED and the
action's effect (publish/unpublish/release publish, their audit rows and outbox events) commits
together with its status change. Even two schedulers firing at once can never apply an action twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import UTC, datetime
from typing import Any

import asyncpg

from cms.app.audit.service import WriteContext
from cms.app.credentials.schemas import SYSTEM
from cms.app.db import locks
from cms.app.db.listen import reconnecting
from cms.app.db.pool import connect
from cms.app.problems import ProblemError
from cms.app.schedules import repository as schedules_repo
from cms.app.schedules import service as schedules

log = logging.getLogger("cms.scheduler")

POLL_SECONDS = 0.5
STANDBY_RETRY_SECONDS = 1.0
BATCH = 100

_CONNECTION_ERRORS = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)
# Contention, not a broken action: the transaction rolls back and the action stays pending.
_TRANSIENT_ERRORS = (
    asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError, asyncpg.SerializationError,
    asyncpg.QueryCanceledError,
)


async def run_due(conn: asyncpg.Connection, assets_url: str | None = None, *, limit: int = BATCH) -> int:
    """Fire due pending actions, each in its own transaction; returns how many were handled.

    Safe to run on several connections at once: a claimed row is skipped by the others, and an
    action no longer pending when claimed is not there to claim.
    """
    if assets_url is None:
        from cms.app.config import load_settings

        assets_url = load_settings().assets_url
    ctx = WriteContext(SYSTEM, None, None)
    handled = 0
    while handled < limit:
        async with conn.transaction():
            row = await schedules_repo.claim_due(conn)
            if row is None:
                break
            status, error = "done", None
            try:
                async with conn.transaction():  # a savepoint: a failed action leaves nothing behind
                    await schedules.execute(conn, row, ctx, assets_url)
            except ProblemError as exc:
                status, error = "failed", schedules.error_text(exc)
            except _CONNECTION_ERRORS + _TRANSIENT_ERRORS:
                raise
            except Exception as exc:  # a bug must not make the action fire again every poll
                log.exception("scheduled action %s failed unexpectedly", row["id"])
                status, error = "failed", f"internal error: {type(exc).__name__}"
            await schedules_repo.finish(conn, row["id"], status, error)
        handled += 1
        log.info("scheduled action %s (%s) %s%s", row["id"], row["action"], status, f": {error}" if error else "")
    return handled


class Scheduler:
    """One scheduler: standby until it holds the leader lock, then fires due actions until stopped."""

    def __init__(
        self, database_url: str, assets_url: str, *, poll: float = POLL_SECONDS, retry: float = STANDBY_RETRY_SECONDS,
    ) -> None:
        self.database_url = database_url
        self.assets_url = assets_url
        self.poll = poll
        self.retry = retry
        self.is_leader = False
        self.conn: asyncpg.Connection | None = None
        self._wake = asyncio.Event()

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def _sleep(self, stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> None:
        waiters = [asyncio.ensure_future(stop.wait())]
        if wake is not None:
            waiters.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=max(seconds, 0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def run(self, stop: asyncio.Event) -> None:
        await reconnecting(lambda: self._session(stop), name="scheduler", first_delay=self.retry, max_delay=self.retry,
                           stop=stop)

    async def _session(self, stop: asyncio.Event) -> None:
        conn = await connect(self.database_url)
        self.conn = conn
        try:
            await conn.execute("SET lock_timeout = '10s'")
            while not stop.is_set():
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", locks.SCHEDULER_LEADER):
                    break
                await self._sleep(stop, self.retry)
            if stop.is_set():
                return
            self.is_leader = True
            log.info("scheduler is the leader")
            await conn.add_listener(schedules_repo.SCHEDULE_CHANNEL, self._notified)
            while not stop.is_set():
                self._wake.clear()
                while await run_due(conn, self.assets_url) >= BATCH:
                    pass
                delay = self.poll
                upcoming = await schedules_repo.next_due(conn)
                if upcoming is not None:
                    delay = max(0.05, min(delay, (upcoming - datetime.now(UTC)).total_seconds()))
                await self._sleep(stop, delay, self._wake)
        finally:
            self.is_leader = False
            self.conn = None
            try:
                await asyncio.wait_for(conn.close(), 5)
            except Exception:  # already broken: drop it
                conn.terminate()


async def serve(database_url: str, assets_url: str, stop: asyncio.Event) -> None:
    await Scheduler(database_url, assets_url).run(stop)


def run_scheduler(settings: Any) -> int:
    """The `cms scheduler` process: runs until SIGINT/SIGTERM."""
    from cms.app.runtime import resolve_services

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        services = await resolve_services(settings)
        try:
            log.info("scheduler started")
            await serve(services.database_url, settings.assets_url, stop)
        finally:
            services.stop()
            log.info("scheduler stopped")

    asyncio.run(main())
    return 0
