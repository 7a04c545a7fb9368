"""Delivery reads from a streaming replica (CMS_DATABASE_READ_URL) without stale answers.

A purge reaches a delivery process once a change has committed on the primary (NOTIFY at commit,
then the workers' purge once the files are written). An answer computed from a replica that has
not replayed that commit yet would be the old content, and would be cached as if it were new. So
every purge this process receives raises the WAL position the replica must have replayed before it
is read again: the primary's `pg_current_wal_lsn()` asked after the purge arrived (the commit record
is at or before it). Until the replica has replayed that far, reads go to the primary; while a purge's
position is being asked, too. While the replica is behind, one task asks its replay position every
20 ms; reads only look at what it found, so no read ever pays an extra query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

log = logging.getLogger("cms.replica")

_LSN = "SELECT ({fn}() - '0/0'::pg_lsn)::bigint"


class ReplicaRouting:
    """Chooses the pool of each delivery read: the replica once it has what the purges announced."""

    POLL_SECONDS = 0.02  # how often the replay position is asked while the replica is behind

    def __init__(self, primary: asyncpg.Pool, replica: asyncpg.Pool) -> None:
        self.primary = primary
        self.replica = replica
        self.required = 0  # WAL position (bytes) the replica must have replayed
        self.replayed = 0  # the replica's replay position when last asked
        self._asking = 0  # purges whose primary position is being asked (reads go to the primary)
        self._again = False
        self._task: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self.replica_reads = 0
        self.primary_reads = 0

    def purged(self, _tags: list[str] | None = None) -> None:
        """A purge arrived (an InvalidationListener / purge subscriber callback, on the event loop)."""
        self._asking += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._ask_primary())
        else:
            self._again = True  # the position asked now may predate this purge's commit: ask once more

    async def _ask_primary(self) -> None:
        while True:
            self._again = False
            pending = self._asking
            try:
                # The insert position: at or after the commit record even with synchronous_commit off.
                position = await self.primary.fetchval(_LSN.format(fn="pg_current_wal_insert_lsn"))
                self.required = max(self.required, int(position))
            except Exception as exc:  # the primary is away: keep reading it (it fails loudly there)
                log.warning("could not read the primary's WAL position: %s", exc)
                await asyncio.sleep(0.1)
                continue
            self._asking -= pending
            if not self._again:
                break
        self._watch()

    def _watch(self) -> None:
        """While the replica is behind, one task asks how far it has replayed (reads never wait for it)."""
        if self.replayed < self.required and (self._poller is None or self._poller.done()):
            self._poller = asyncio.get_running_loop().create_task(self._poll_replica())

    async def _poll_replica(self) -> None:
        while self.replayed < self.required:
            try:
                position = await self.replica.fetchval(_LSN.format(fn="pg_last_wal_replay_lsn"))
            except Exception as exc:
                log.warning("could not read the replica's replay position: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if position is None:  # not a standby (a read URL naming a primary): always up to date
                self.replayed = self.required = 1 << 62
                return
            self.replayed = max(self.replayed, int(position))
            if self.replayed < self.required:
                await asyncio.sleep(self.POLL_SECONDS)

    def _replica_has_it(self) -> bool:
        return not self._asking and self.replayed >= self.required

    def pinned(self) -> asyncpg.Pool:
        """The pool for every read of one response that takes several connections (GraphQL's
        batches): all from the replica or all from the primary, never a mix of the two states.
        (A purge that arrives meanwhile does not move it: the delivery cache keeps no answer
        computed before a purge.)"""
        if self._replica_has_it():
            self.replica_reads += 1
            return self.replica
        self.primary_reads += 1
        return self.primary

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        """`async with routing.acquire() as conn`, as with a pool."""
        async with self.pinned().acquire() as conn:
            yield conn

    async def close(self) -> None:
        for task in (self._task, self._poller):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.replica.close()

    def terminate(self) -> None:
        self.replica.terminate()
