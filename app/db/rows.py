"""Small helpers every repository shares."""

from __future__ import annotations

import asyncpg

# A repository function runs on a connection (inside the caller's transaction) or on a pool.
Conn = asyncpg.Connection | asyncpg.Pool


def returned(row: asyncpg.Record | None) -> asyncpg.Record:
    """INSERT/UPDATE … RETURNING on a row that exists always returns it."""
    assert row is not None
    return row
