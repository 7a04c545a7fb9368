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
from collections import deque
from types import TracebackType
from typing import Any

import asyncpg


class ConnectionLender:
    """`async with lender.acquire() as conn`, as with the pool it lends from; at most `size`
    connections out of that pool at once (the rest stay for the pool's other users)."""

    RETURN_EVERY = 1024

    def __init__(self, pool: asyncpg.Pool, size: int) -> None:
        self.pool = pool
        self.size = max(1, size)
        self._idle: list[Any] = []
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._out = 0  # connections taken from the pool (idle here or lent)
        self._lends = 0
        self._closed = False

    def acquire(self) -> _Lend:
        return _Lend(self)

    async def _done(self, conn: Any, failed: bool) -> None:
        if failed or self._closed or conn.is_closed() or conn.is_in_transaction() or self._lends % self.RETURN_EVERY == 0:
            await self._give_back(conn)
        else:
            self._hand_on(conn)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def _take(self) -> Any:
        self._lends += 1
        if self._idle:
            return self._idle.pop()
        if self._out < self.size:
            self._out += 1
            try:
                return await self.pool.acquire()
            except BaseException:
                self._out -= 1
                raise
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            conn = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed over just as we were cancelled
                handed = waiter.result()
                if handed is not None:
                    self._hand_on(handed)
                elif not self._wake_one(None):
                    self._out -= 1
            raise
        if conn is None:  # a connection went back to the pool: its place is ours
            try:
                return await self.pool.acquire()
            except BaseException:
                self._out -= 1
                self._wake_one(None)
                raise
        return conn

    def _hand_on(self, conn: Any) -> None:
        """A healthy connection to the next waiting read, or idle."""
        if not self._wake_one(conn):
            self._idle.append(conn)

    def _wake_one(self, conn: Any) -> bool:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    async def _give_back(self, conn: Any) -> None:
        try:
            await self.pool.release(conn)
        finally:
            # Its place goes to a waiting read, which takes a connection from the pool (None).
            if not self._wake_one(None):
                self._out -= 1

    def terminate(self) -> None:
        """Nothing of its own: the pool's terminate ends every connection."""

    async def close(self) -> None:
        """Give every idle connection back to the pool (before the pool closes)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._out -= 1
            await self.pool.release(conn)


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
