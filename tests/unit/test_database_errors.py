"""Database errors answer the client's problem, not a 500: contention is 409 (retry), a read replica
that cancelled a read to replay changes is 503 with Retry-After (nothing of the client's conflicted)."""

from __future__ import annotations

import asyncpg
import httpx
from litestar import Litestar, get

from cms.app.http import EXCEPTION_HANDLERS


def _app(exc: Exception) -> Litestar:
    @get("/read")
    async def read() -> None:
        raise exc

    return Litestar([read], exception_handlers=EXCEPTION_HANDLERS)


async def _answer(exc: Exception) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(_app(exc)), base_url="http://t") as client:
        return await client.get("/read")


async def test_a_replica_recovery_conflict_is_503_with_retry_after() -> None:
    r = await _answer(asyncpg.SerializationError("canceling statement due to conflict with recovery"))
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.headers["content-type"].startswith("application/problem+json") and "replica" in r.json()["detail"]


async def test_a_serialization_failure_of_a_write_is_409() -> None:
    r = await _answer(asyncpg.SerializationError("could not serialize access due to concurrent update"))
    assert r.status_code == 409 and r.json()["type"].endswith("conflict")
    r = await _answer(asyncpg.DeadlockDetectedError("deadlock detected"))
    assert r.status_code == 409
