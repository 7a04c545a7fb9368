"""Sending webhook deliveries: claim due ones in PostgreSQL, post each, record every attempt.

One attempt: check the URL again (DNS may have changed since the subscription was saved) and pin
the connection to the address just checked (Host and TLS name stay the URL's); sign with the
current secret (and the previous one during a rotation); POST the stored body with a 15 s limit
for the whole exchange, redirects not followed. Then, in one transaction with the attempt row:
2xx → succeeded; 410 → failed and the endpoint disabled; anything else → pending again after the
next delay of the retry schedule, or failed when the schedule is used up (and the endpoint is
disabled once it has failed for 5 days without a success).

Many deliveries are in flight at once (asyncio, one shared connection pool); the claim lets at
most `per_endpoint` of one endpoint fly, so a slow endpoint never holds back the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client import Counter, Histogram

from . import repository as repo
from .signing import SecretBox, signature_headers
from .ssrf import Resolver, UnsafeUrl, check_url, default_resolver

log = logging.getLogger("cms.webhooks")

ATTEMPTS = Counter("cms_webhook_attempts_total", "Webhook delivery attempts", ["outcome"])  # succeeded|retry|failed
ATTEMPT_SECONDS = Histogram(
    "cms_webhook_attempt_duration_seconds", "Webhook delivery attempts, from the claim to the answer",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)

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
        lease_seconds: float = 60.0, timeout: float = SEND_TIMEOUT,
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
        self.client = httpx.AsyncClient(
            follow_redirects=False, timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._in_flight: set[asyncio.Task[None]] = set()
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
            task.add_done_callback(self._in_flight.discard)
        return len(rows)

    async def drain(self) -> None:
        """Wait for the deliveries in flight (tests; shutdown gives them a moment)."""
        if self._in_flight:
            await asyncio.wait(list(self._in_flight))

    async def close(self) -> None:
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        await self.client.aclose()

    async def _deliver(self, row: Any) -> None:
        try:
            outcome = await self._attempt(row)
            await self._record(row, outcome)
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
        host = f"[{address}]" if ":" in address else address
        headers = {
            **dict(row["headers"]), "content-type": "application/json", "user-agent": USER_AGENT,
            "host": target.host_header,
            **signature_headers(row["event_id"], int(time.time()), body, secrets),
        }
        url = f"{target.scheme}://{host}:{target.port}{target.path_and_query}"
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            async with asyncio.timeout(self.timeout):
                async with self.client.stream(
                    "POST", url, content=body, headers=headers, extensions=extensions
                ) as response:
                    kept = b""
                    async for chunk in response.aiter_raw():
                        kept += chunk
                        if len(kept) >= RESPONSE_KEPT:
                            break
            text = kept[:RESPONSE_KEPT].decode("utf-8", "replace")
            if 300 <= response.status_code < 400:
                return outcome(response.status_code, "redirect not followed", text)
            return outcome(response.status_code, None, text)
        except TimeoutError:
            return outcome(None, f"timeout: no complete answer within {self.timeout:g} s")
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
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

    async def _record(self, row: Any, outcome: Outcome) -> None:
        status, retry_in = self._next(row, outcome)
        ATTEMPTS.labels("retry" if status == "pending" else status).inc()
        ATTEMPT_SECONDS.observe(outcome.duration_ms / 1000)
        async with self.pool.acquire() as conn, conn.transaction():
            await repo.record_attempt(
                conn, row["id"], row["attempts"], outcome.status_code, outcome.error, outcome.duration_ms,
                outcome.response,
            )
            if not await repo.finish_delivery(conn, row["id"], row["attempts"], status, retry_in):
                return  # taken over by another worker after our lease ran out: theirs counts
            if outcome.succeeded:
                await repo.endpoint_succeeded(conn, row["webhook_id"])
            elif outcome.status_code == 410:
                await repo.disable(conn, row["webhook_id"], "the endpoint answered 410 Gone")
            elif await repo.endpoint_failed(conn, row["webhook_id"], DISABLE_AFTER):
                log.warning("webhook %s disabled: failing for 5 days", row["webhook_id"])
        level = logging.DEBUG if outcome.succeeded else logging.INFO
        log.log(level, "webhook delivery %s attempt %d: %s %s → %s", row["id"], row["attempts"],
                outcome.status_code, outcome.error or "", status)
