"""Pool connections for short delivery reads, lent without asyncpg's per-release machinery.

asyncpg's `Pool.release` shields a new task and runs a timeout block for every release; with one
query per request that was 18% of a by-slug cache miss's CPU (py-spy, bench/mixed.sh). A
`ConnectionLender` keeps the connections it took from the pool after use and hands them to the next
read directly. A connection goes back to the pool (which then does its full housekeeping: resets,
recycles after `max_queries`, closes idle ones) whenever a read ended with an error (a cancelled
query, a broken connection, an open transaction), and once every `RETURN_EVERY` lends anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from types import TracebackType
from typing import Any

import asyncpg

log = logging.getLogger("cms.db.lender")


class ConnectionLender:
    """`async with lender.acquire() as conn`, as with the pool it lends from; at most `size`
    connections out of that pool at once (the rest stay for the pool's other users).

    A *place* is one connection taken from the pool (idle here, lent, or being acquired): `_out`
    counts them. A place freed goes to a waiting read (which then acquires from the pool) or is
    dropped; never both."""

    RETURN_EVERY = 1024
    IDLE_SECONDS = 300.0  # as asyncpg's max_inactive_connection_lifetime: older idle ones are closed

    def __init__(self, pool: asyncpg.Pool, size: int) -> None:
        self.pool = pool
        self.size = max(1, size)
        self._idle: list[tuple[Any, float]] = []  # (connection, idle since)
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._out = 0
        self._lends = 0
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()  # give-backs of connections handed on after close

    def acquire(self) -> _Lend:
        return _Lend(self)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def _take(self) -> Any:
        while self._idle:
            conn, since = self._idle.pop()
            if time.monotonic() - since < self.IDLE_SECONDS and _usable(conn):
                return conn
            # Dead (the server restarted: asyncpg gave its place back to the pool) or idle too long
            # (a firewall may have dropped it silently): closed, and the place takes a fresh one.
            _close(conn)
            return await self._fill()
        if self._out < self.size:
            self._out += 1
            return await self._fill()
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            conn = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed over just as we were cancelled
                handed = waiter.result()
                if handed is not None:
                    self._hand_on(handed)
                else:
                    self._free_place()
            raise
        if conn is None:  # a place was freed for us
            return await self._fill()
        return conn

    async def _fill(self) -> Any:
        """A connection from the pool for a place we hold (freed again if that fails)."""
        try:
            return await self.pool.acquire()
        except BaseException:
            self._free_place()
            raise

    async def _done(self, conn: Any, failed: bool) -> None:
        self._lends += 1
        try:
            keep = (
                not failed and not self._closed and self._lends % self.RETURN_EVERY != 0 and _usable(conn)
                and not conn.is_in_transaction()
            )
        except Exception:  # noqa: BLE001 - a connection asyncpg has taken back: the pool's again
            keep = False
        if keep:
            self._hand_on(conn)
        else:
            await self._give_back(conn)

    def _hand_on(self, conn: Any) -> None:
        """A healthy connection to the next waiting read, or idle (back to the pool once closed)."""
        if self._closed:
            task = asyncio.get_running_loop().create_task(self._give_back(conn))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        elif not self._wake_one(conn):
            self._idle.append((conn, time.monotonic()))

    def _wake_one(self, conn: Any) -> bool:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _free_place(self) -> None:
        if not self._wake_one(None):
            self._out -= 1

    async def _give_back(self, conn: Any) -> None:
        """To the pool (which resets, recycles or closes it); its place is freed once that is done,
        even when the caller is cancelled meanwhile (else a waiting read could take a connection
        more than `size` while the release still holds this one)."""
        await asyncio.shield(self._release(conn))

    async def _release(self, conn: Any) -> None:
        try:
            await self.pool.release(conn)
        except Exception as exc:  # noqa: BLE001 - the pool terminates what it cannot reset
            log.warning("a delivery connection could not go back to the pool: %s", exc)
        finally:
            self._free_place()

    def terminate(self) -> None:
        """Nothing of its own: the pool's terminate ends every connection."""

    async def close(self) -> None:
        """Give every idle connection back to the pool (before the pool closes)."""
        self._closed = True
        while self._idle:  # (one at a time: what a cancelled close leaves stays listed)
            conn, _ = self._idle.pop()
            await self._give_back(conn)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _usable(conn: Any) -> bool:
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:  # released: asyncpg took it back when it broke
        return False


def _close(conn: Any) -> None:
    """End a pool connection we hold; asyncpg then puts its pool place back (a released one: nothing)."""
    with contextlib.suppress(Exception):
        conn.terminate()


class _Lend:
    """One lend: `async with` (a class, not a generator: this runs for every delivery read)."""

    __slots__ = ("_conn", "_lender")

    def __init__(self, lender: ConnectionLender) -> None:
        self._lender = lender
        self._conn: Any = None

    async def __aenter__(self) -> Any:
        self._conn = await self._lender._take()
        return self._conn

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None,
    ) -> None:
        await self._lender._done(self._conn, kind is not None)
