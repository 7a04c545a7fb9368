"""Database errors answer the client's problem, not a 500: contention is 409 (retry), a read replica
that cancelled a read to replay changes is 503 with Retry-After (nothing of the client's conflicted)."""

from __future__ import annotations

import asyncpg
import httpx
from litestar import Litestar, get, post

from cms.app.http import EXCEPTION_HANDLERS


def _app(exc: Exception) -> Litestar:
    @get("/read")
    async def read() -> None:
        raise exc

    @post("/write")
    async def write() -> None:
        raise exc

    return Litestar([read, write], exception_handlers=EXCEPTION_HANDLERS)


async def _answer(exc: Exception, method: str = "GET") -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(_app(exc)), base_url="http://t") as client:
        return await client.get("/read") if method == "GET" else await client.post("/write")


async def test_a_replica_recovery_conflict_is_503_with_retry_after() -> None:
    r = await _answer(asyncpg.SerializationError("canceling statement due to conflict with recovery"))
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.headers["content-type"].startswith("application/problem+json") and "replica" in r.json()["detail"]


    # in another language, or the startup process's deadlock: a read-only GET meets no other
    r = await _answer(asyncpg.DeadlockDetectedError("Abbruch der Anweisung wegen Konflikt mit der Wiederherstellung"))
    assert r.status_code == 503
    r = await _answer(asyncpg.SerializationError("canceling statement due to conflict with recovery"), "POST")
    assert r.status_code == 503  # (a GraphQL POST reads too)


async def test_a_serialization_failure_of_a_write_is_409() -> None:
    r = await _answer(asyncpg.SerializationError("could not serialize access due to concurrent update"), "POST")
    assert r.status_code == 409 and r.json()["type"].endswith("conflict")
    r = await _answer(asyncpg.DeadlockDetectedError("deadlock detected"), "POST")
    assert r.status_code == 409
