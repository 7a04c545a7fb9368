"""asyncpg pools with JSON codecs, one place to create them."""

from __future__ import annotations

import os
from contextvars import ContextVar
from typing import Any

import asyncpg
import msgspec

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


# Binary format: the bytes go as they are (no str round trip), and arrays of json/jsonb (the bulk
# writes' unnest($n::jsonb[])) travel in the binary array format instead of a text array literal
# that both sides must escape and unescape character by character.
def _encode_jsonb(value: Any) -> bytes:
    return b"\x01" + _encode(value)  # jsonb's binary format: a version byte, then the JSON text


def _decode_jsonb(data: bytes) -> Any:
    return _decode(memoryview(data)[1:])


# Tests count the SQL statements a request runs (CMS_COUNT_QUERIES=1): a request sets a list
# here and every query on any pool connection appends to it.
QUERY_LOG: ContextVar[list[str] | None] = ContextVar("cms_query_log", default=None)


def _log_query(record: Any) -> None:
    log = QUERY_LOG.get()
    if log is not None:
        log.append(record.query)


async def _init_connection(conn: asyncpg.Connection) -> None:
    if os.environ.get("CMS_COUNT_QUERIES") == "1":
        conn.add_query_logger(_log_query)
    await conn.set_type_codec("json", encoder=_encode, decoder=_decode, schema="pg_catalog", format="binary")
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool connections never LISTEN, SET or hold session locks, so skip the reset round trip."""


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, statement_timeout_ms: int = 30_000,
    parallel_query: bool = True,
) -> asyncpg.Pool:
    # Statement timeout guards the server from a runaway query; lock timeout from pile-ups.
    settings = {"statement_timeout": str(statement_timeout_ms), "lock_timeout": "10000", "timezone": "UTC"}
    if not parallel_query:
        # Many small reads at once: parallel workers' start (5-10 ms) costs more than they save
        # (1M bench: a capped count of 10,001 index entries 17 ms with 3 workers, 5 ms without).
        settings["max_parallel_workers_per_gather"] = "0"
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        server_settings=settings,
    )
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
    await _init_connection(conn)
    return conn
