"""Every PostgreSQL advisory lock the project takes: the fixed keys, and keys derived from names.

Fixed keys are small integers in one numbering (7_261_xxx) so two features never share one by
accident; named locks (`xact_locks`) hash `namespace:name` into the whole signed 64-bit range.
"""

from __future__ import annotations

import hashlib

import asyncpg

MIGRATIONS = 7_261_001  # session lock: one process applies migrations at a time
# Content types and locales against entry writes: a schema change takes it exclusively, every
# entry write (and a release publish) shared, so the two never interleave.
SCHEMA = 7_261_002
SCHEDULER_LEADER = 7_261_003  # session lock held by the scheduler that fires actions
OUTBOX_PRUNE = 7_261_101  # try-lock: one worker prunes the outbox at a time
OAUTH_SIGNING_KEYS = 7_261_005  # one process at a time creates or rotates the token signing key
BOOTSTRAP_KEY = 7_261_004  # processes starting at once ensure CMS_BOOTSTRAP_KEY one after the other


async def lock_schema(conn: asyncpg.Connection) -> None:
    """Inside a transaction: hold off entry writes and other schema changes until commit."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA)


async def lock_schema_shared(conn: asyncpg.Connection) -> None:
    """Inside a transaction: hold off schema changes (not other entry writes) until commit."""
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", SCHEMA)


def named_key(namespace: str, name: str) -> int:
    """A stable signed 64-bit advisory lock key for `namespace:name`."""
    digest = hashlib.blake2b(f"cms:{namespace}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def xact_locks(conn: asyncpg.Connection, namespace: str, names: list[str]) -> None:
    """Take transaction-scoped named locks in key order (so two takers never deadlock)."""
    keys = sorted({named_key(namespace, name) for name in names})
    if keys:
        # One round trip; the sorted subquery (never flattened: it has ORDER BY) fixes the order.
        await conn.execute("SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest($1::bigint[]) AS k ORDER BY 1) AS s", keys)


async def lock_timeouts(conn: asyncpg.Connection, seconds: float) -> None:
    """Inside a transaction: wait up to `seconds` for locks (the pool's defaults are 10 s / 30 s)."""
    ms = str(int(seconds * 1000))
    await conn.execute(f"SET LOCAL lock_timeout = {ms}; SET LOCAL statement_timeout = {ms}")
