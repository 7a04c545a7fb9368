"""Append-only audit log of every management write and every denied request."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ..credentials.schemas import Credential
from ..tasks import stop_task


async def record(
    conn: asyncpg.Connection | asyncpg.Pool, *, actor: dict[str, Any], action: str, target: str | None,
    request_id: str | None, ip: str | None, outcome: str = "success",
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor, action, target, request_id, ip, outcome) VALUES ($1, $2, $3, $4, $5, $6)",
        actor, action, target, request_id, ip, outcome,
    )


async def record_many(
    conn: asyncpg.Connection, *, actor: dict[str, Any], writes: list[tuple[str, str]], request_id: str | None,
    ip: str | None,
) -> None:
    """`record` for many successful writes (action, target) by one actor, in one statement."""
    if writes:
        await conn.execute(
            "INSERT INTO audit_log (actor, action, target, request_id, ip, outcome) "
            "SELECT $1::jsonb, u.action, u.target, $4, $5, 'success' FROM unnest($2::text[], $3::text[]) AS u(action, target)",
            actor, [w[0] for w in writes], [w[1] for w in writes], request_id, ip,
        )


@dataclass
class WriteContext:
    """Who makes a write, for its audit row: the credential, the request id and the client address."""

    actor: Credential
    request_id: str | None
    ip: str | None

    async def audit(self, conn: asyncpg.Connection, action: str, target: str) -> None:
        await record(conn, actor=self.actor.actor(), action=action, target=target, request_id=self.request_id, ip=self.ip)


log = logging.getLogger("cms.audit")


class DeniedRequests:
    """Denied requests (401, 403) for the audit log, written in batches: one INSERT per `interval`
    at most, of at most `max_rows` rows, each with the time of its request. Past that, requests are
    only counted, and one `auth.denied.unrecorded` row says how many, so a flood of bad tokens
    cannot turn into a flood of database writes (or of memory)."""

    def __init__(self, pool: Any, *, interval: float = 1.0, max_rows: int = 1000) -> None:
        self.pool = pool
        self.interval = interval
        self.max_rows = max_rows
        # (time, actor, action, target, request id, ip)
        self._rows: list[tuple[datetime, dict[str, Any], str, str | None, str | None, str | None]] = []
        self._unrecorded = 0
        self._task: asyncio.Task[None] | None = None

    def note(self, actor: dict[str, Any], target: str | None, request_id: str | None, ip: str | None) -> None:
        if len(self._rows) < self.max_rows:
            self._rows.append((datetime.now(UTC), actor, "auth.denied", target, request_id, ip))
        else:
            self._unrecorded += 1
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.flush()
            except Exception:  # the database away: these rows are lost, later ones are tried
                log.exception("could not write denied requests to the audit log")
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def flush(self) -> None:
        rows, self._rows = self._rows, []
        unrecorded, self._unrecorded = self._unrecorded, 0
        if unrecorded:
            system = {"kind": "system", "id": "system", "name": "system"}
            rows.append((datetime.now(UTC), system, "auth.denied.unrecorded", f"{unrecorded} requests", None, None))
        if not rows:
            return
        columns = list(zip(*rows, strict=True))
        await self.pool.execute(
            "INSERT INTO audit_log (at, actor, action, target, request_id, ip, outcome) "
            "SELECT u.at, u.actor, u.action, u.target, u.request_id, u.ip, 'denied' "
            "FROM unnest($1::timestamptz[], $2::jsonb[], $3::text[], $4::text[], $5::text[], $6::text[]) "
            "AS u(at, actor, action, target, request_id, ip)",
            *(list(column) for column in columns),
        )

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        try:
            await self.flush()
        except Exception:
            log.exception("could not write denied requests to the audit log")
