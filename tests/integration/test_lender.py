"""ConnectionLender: delivery reads borrow pool connections without asyncpg's per-release work, never
hold more than their share, and give a connection back to the pool after anything unusual."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from cms.app.db.lender import ConnectionLender


async def _backend(lender: ConnectionLender, hold: float = 0.0) -> int:
    async with lender.acquire() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        if hold:
            await asyncio.sleep(hold)
        return int(pid)


async def test_reads_share_at_most_size_connections_and_leave_the_rest_to_the_pool(db: asyncpg.Pool) -> None:
    lender = ConnectionLender(db, 3)  # db: max 5 connections
    pids = await asyncio.gather(*(_backend(lender, 0.01) for _ in range(60)))
    assert 1 <= len(set(pids)) <= 3
    assert lender._out <= 3 and len(lender._idle) == lender._out
    # the pool's other users still get connections while the lender keeps its own
    async with db.acquire() as a, db.acquire() as b:
        assert await a.fetchval("SELECT 1") == await b.fetchval("SELECT 1") == 1
    # the same connections serve the next reads (no new backend)
    assert set(await asyncio.gather(*(_backend(lender) for _ in range(10)))) <= set(pids)
    await lender.close()
    assert lender._out == 0


async def test_an_error_or_an_open_transaction_gives_the_connection_back_to_the_pool(db: asyncpg.Pool) -> None:
    lender = ConnectionLender(db, 2)
    with pytest.raises(asyncpg.PostgresError):
        async with lender.acquire() as conn:
            await conn.execute("SELECT 1/0")
    assert lender._out == 0 and not lender._idle
    async with lender.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()  # left open (not through an exception)
    assert lender._out == 0 and not lender._idle  # the pool's release rolled it back
    async with lender.acquire() as conn:
        assert not conn.is_in_transaction() and await conn.fetchval("SELECT 2") == 2
    await lender.close()


async def test_cancelled_reads_lose_no_connection(db: asyncpg.Pool) -> None:
    lender = ConnectionLender(db, 2)
    slow = [asyncio.ensure_future(_backend(lender, 0.2)) for _ in range(2)]
    waiting = [asyncio.ensure_future(_backend(lender)) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert len(lender._waiting) == 5
    for task in waiting[:3]:
        task.cancel()
    slow[0].cancel()  # one holder cancelled in its query's sleep: back to the pool
    results = await asyncio.gather(*slow, *waiting, return_exceptions=True)
    assert sum(isinstance(r, int) for r in results) == 3  # slow[1] and the two waiters not cancelled
    assert lender._out <= 2
    # every place is still usable: two reads at once get two connections
    assert len(set(await asyncio.gather(*(_backend(lender, 0.05) for _ in range(2))))) == 2
    await lender.close()
    assert lender._out == 0


async def test_reads_fail_cleanly_while_the_database_cannot_be_reached() -> None:
    """Every read gets the error (none waits forever) and no place is counted twice (review: a
    failed acquire freed its place and also handed it on)."""
    unreachable = await asyncpg.create_pool("postgresql://nobody@127.0.0.1:9/none", min_size=0, max_size=4)
    lender = ConnectionLender(unreachable, 2)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(_backend(lender) for _ in range(12)), return_exceptions=True), 20,
        )
        assert all(isinstance(r, OSError | asyncpg.PostgresError) for r in results), results
        assert lender._out == 0 and not lender._waiting
    finally:
        unreachable.terminate()


async def test_a_connection_the_server_ended_is_replaced_not_lent(db: asyncpg.Pool) -> None:
    lender = ConnectionLender(db, 2)
    before = set(await asyncio.gather(*(_backend(lender, 0.02) for _ in range(2))))
    assert len(before) == 2 and len(lender._idle) == 2
    async with db.acquire() as admin:  # a restart or failover, as the idle connections see it
        await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", list(before))
    await asyncio.sleep(0.2)
    after = await asyncio.gather(*(_backend(lender, 0.02) for _ in range(4)))
    assert not before & set(after)  # every read answered, from new connections
    assert lender._out <= 2
    await lender.close()
    assert lender._out == 0
