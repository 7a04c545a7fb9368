"""Sending webhook deliveries: claim due ones in PostgreSQL, post each, record every attempt.

One attempt: check the URL again (DNS may have changed since the subscription was saved) and pin
the connection to the address just checked (Host and TLS name stay the URL's); sign with the
current secret (and the previous one during a rotation); POST the stored body with a 15 s limit
for the whole exchange, redirects not followed. Then, in one transaction with the attempt row:
2xx → succeeded; 410 → failed and the endpoint disabled; anything else → pending again after the
next delay of the retry schedule, or failed when the schedule is used up (and the endpoint is
disabled once it has failed for 5 days without a success).

Many deliveries are in flight at once (asyncio); the claim lets at most `per_endpoint` of one
endpoint fly, so a slow endpoint never holds back the others. Connections are kept alive per
endpoint address (http.py: a small HTTP/1.1 client; httpx's layers were most of the sender's CPU).
Outcomes are recorded together: the attempts that finish while one batch is being written are
written next, in one statement (a group commit).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram

from . import repository as repo
from .http import ProtocolError, WebhookHttp
from .signing import SecretBox, signature_headers
from .ssrf import Resolver, UnsafeUrl, check_url, default_resolver

log = logging.getLogger("cms.webhooks")

ATTEMPTS = Counter("cms_webhook_attempts_total", "Webhook delivery attempts", ["outcome"])  # succeeded|retry|failed
ATTEMPT_SECONDS = Histogram(
    "cms_webhook_attempt_duration_seconds", "Webhook delivery attempts, from the claim to the answer",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)

MAX_TARGETS = 1024  # endpoint addresses whose idle connections are kept (up to per_endpoint each)
MAX_BATCH = 500  # outcomes recorded in one statement
SEND_TIMEOUT = 15.0  # seconds for the whole exchange (CMS_WEBHOOK_TIMEOUT_SECONDS)
DISABLE_AFTER = 5 * 86400.0  # seconds of failures without a success
RESPONSE_KEPT = 1024  # bytes of the answer kept with the attempt
USER_AGENT = "cms-webhooks/1"


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    response: str | None
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    def __init__(
        self, pool: Any, box: SecretBox, *, schedule: tuple[float, ...], allow_private: bool,
        resolver: Resolver = default_resolver, concurrency: int = 64, per_endpoint: int = 4,
        lease_seconds: float = 60.0, timeout: float = SEND_TIMEOUT, on_recorded: Callable[[], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.pool = pool
        self.box = box
        self.schedule = schedule
        self.allow_private = allow_private
        self.resolver = resolver
        self.concurrency = concurrency
        self.per_endpoint = per_endpoint
        self.timeout = timeout
        self.lease_seconds = max(lease_seconds, timeout * 2)  # never runs out while the send may still answer
        self.http = WebhookHttp(per_target=per_endpoint, max_targets=MAX_TARGETS, ssl_context=ssl_context)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._recording = GroupCommit(self._record_batch)
        self.on_recorded = on_recorded  # slots are free again (the sender loop may claim more)
        self.sent = 0  # attempts made (tests and metrics)

    @property
    def free(self) -> int:
        return self.concurrency - len(self._in_flight)

    async def send_due(self) -> int:
        """Claim as many due deliveries as there are free slots and start sending them; returns how many."""
        if self.free <= 0:
            return 0
        async with self.pool.acquire() as conn:
            rows = await repo.claim_due(conn, self.free, self.lease_seconds, self.per_endpoint)
        for row in rows:
            task = asyncio.get_running_loop().create_task(self._deliver(row), name=f"webhook-{row['id']}")
            self._in_flight.add(task)
            task.add_done_callback(self._finished)
        return len(rows)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self.on_recorded is not None:
            self.on_recorded()  # a slot is free

    async def drain(self) -> None:
        """Wait for the deliveries in flight (tests; shutdown gives them a moment)."""
        if self._in_flight:
            await asyncio.wait(list(self._in_flight))

    async def close(self) -> None:
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        await self.http.aclose()

    async def _deliver(self, row: Any) -> None:
        try:
            outcome = await self._attempt(row)
            await self._recording.add((row, outcome))
        except asyncio.CancelledError:
            raise  # the lease runs out and another worker sends it again
        except Exception:
            log.exception("webhook delivery %s: recording the attempt failed; it will be retried", row["id"])

    async def _attempt(self, row: Any) -> Outcome:
        started = time.monotonic()

        def outcome(status: int | None, error: str | None, response: str | None = None) -> Outcome:
            return Outcome(status, error, response, int((time.monotonic() - started) * 1000))

        try:
            target, address = await check_url(row["url"], allow_private=self.allow_private, resolver=self.resolver)
        except UnsafeUrl as exc:
            return outcome(None, f"refused: {exc}")
        secrets = [self.box.decrypt(row["secret"])]
        if row["old_secret"] is not None and row["old_secret_until"] is not None and row["old_secret_until"] > datetime.now(UTC):
            secrets.append(self.box.decrypt(row["old_secret"]))
        body = bytes(row["body"])
        # The subscription's own headers, then ours (which win: one value per name).
        merged = {name.lower(): value for name, value in dict(row["headers"]).items()}
        merged.update({"content-type": "application/json", "user-agent": USER_AGENT})
        merged.update(signature_headers(row["event_id"], int(time.time()), body, secrets))
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self.http.post(
                    target.scheme, address, target.port, target.host, target.host_header, target.path_and_query,
                    list(merged.items()), body, keep=RESPONSE_KEPT,
                )
            text = answer.body.decode("utf-8", "replace")
            if 300 <= answer.status < 400:
                return outcome(answer.status, "redirect not followed", text)
            return outcome(answer.status, None, text)
        except TimeoutError:
            return outcome(None, f"timeout: no complete answer within {self.timeout:g} s")
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ProtocolError, ValueError) as exc:
            return outcome(None, f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__)
        finally:
            self.sent += 1

    def _next(self, row: Any, outcome: Outcome) -> tuple[str, float | None]:
        """(status, seconds to the next attempt)."""
        if outcome.succeeded:
            return "succeeded", None
        if outcome.status_code == 410:
            return "failed", None
        done = row["attempts"] - row["run_start"]  # attempts of this run, this one included
        if done <= len(self.schedule):
            return "pending", self.schedule[done - 1]
        return "failed", None

    async def _record_batch(self, outcomes: list[tuple[Any, Outcome]]) -> None:
        """Record attempts' outcomes together: one transaction, a constant number of statements."""
        finished = []
        for row, outcome in outcomes:
            status, retry_in = self._next(row, outcome)
            ATTEMPTS.labels("retry" if status == "pending" else status).inc()
            ATTEMPT_SECONDS.observe(outcome.duration_ms / 1000)
            finished.append(repo.Finished(
                row["id"], row["attempts"], outcome.status_code, outcome.error, outcome.duration_ms, outcome.response,
                status, retry_in,
            ))
            level = logging.DEBUG if outcome.succeeded else logging.INFO
            log.log(level, "webhook delivery %s attempt %d: %s %s → %s", row["id"], row["attempts"],
                    outcome.status_code, outcome.error or "", status)
        async with self.pool.acquire() as conn, conn.transaction():
            ours = await repo.record_finished(conn, finished)  # taken over since: the new owner's outcome counts
            mine = [(row, outcome) for row, outcome in outcomes if row["id"] in ours]
            succeeded = sorted({row["webhook_id"] for row, outcome in mine if outcome.succeeded})
            if succeeded:
                await repo.endpoints_succeeded(conn, succeeded)
            for webhook_id in sorted({row["webhook_id"] for row, outcome in mine if outcome.status_code == 410}):
                await repo.disable(conn, webhook_id, "the endpoint answered 410 Gone")
            failing = {row["webhook_id"] for row, outcome in mine if not outcome.succeeded and outcome.status_code != 410}
            for webhook_id in sorted(failing - set(succeeded)):
                if await repo.endpoint_failed(conn, webhook_id, DISABLE_AFTER):
                    log.warning("webhook %s disabled: failing for 5 days", webhook_id)


class GroupCommit:
    """Items added while a batch is being written are written together next; `add` returns once
    its item is written (or raises what writing it raised)."""

    def __init__(self, write: Callable[[list[Any]], Awaitable[None]]) -> None:
        self.write = write
        self._waiting: list[tuple[Any, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def add(self, item: Any) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_all())
        await done

    async def _write_all(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            try:
                await self.write([item for item, _ in batch])
            except BaseException as exc:  # each waiter gets it (cancelled: the lease brings them back)
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("not recorded"))
                if not isinstance(exc, Exception):
                    raise
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
