"""Step bookkeeping for the publish pipeline: PostgreSQL, not the broker, is the source of truth.

Every relayed outbox event gets one `outbox_steps` row per step it needs (`steps_for`). A Dramatiq
message only says "look at step S of event E"; the worker then *claims* the row with a lease
(`claim`), does the work, and either completes it (`complete`, fenced by the attempt number so a
worker that lost its lease cannot complete a step someone else now owns) or records the failure
(`fail`: back to `pending` with a backoff, or `failed` after `max_attempts`). The sweeper
(`due_steps`) finds steps that need a message again: pending steps whose retry is due and whose
message was lost, and running steps whose lease ran out (their worker died). Duplicated messages
are harmless: a claim that matches no row is acknowledged and skipped.

Tunables come from the environment (`PipelineConfig.from_env`), so tests and operators can shorten
the lease and sweep intervals without touching code.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from cms.app.config import ConfigError

log = logging.getLogger("cms.pipeline")

DELIVER = "deliver"
ENTRY_EVENTS = ("entry.published", "entry.unpublished", "entry.deleted")

# Schema changes re-render documents in the database; their files follow through the same step.
SCHEMA_EVENTS = ("content_type.saved", "locale.saved", "locale.deleted")

# Which steps an outbox event needs. Events not listed need none: the relay only marks them relayed.
STEPS: dict[str, tuple[str, ...]] = {event: (DELIVER,) for event in (*ENTRY_EVENTS, *SCHEMA_EVENTS)}


def steps_for(event_type: str) -> tuple[str, ...]:
    return STEPS.get(event_type, ())


# ---------------------------------------------------------------------------------------------
# configuration


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r}: expected {low:g}..{high:g}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    return int(_float(env, name, default, low, high))


@dataclass(frozen=True)
class PipelineConfig:
    """Lease, retry and polling settings of the worker process (CMS_* environment variables)."""

    lease_seconds: float = 30.0  # CMS_STEP_LEASE_SECONDS: a running step's lease (renewed while it runs)
    max_attempts: int = 8  # CMS_STEP_MAX_ATTEMPTS: then the step is `failed` (visible, not retried)
    backoff: tuple[float, ...] = (1, 2, 5, 15, 30, 60)  # CMS_STEP_BACKOFF: seconds before attempt n+1
    time_limit_seconds: float = 600.0  # CMS_STEP_TIME_LIMIT_SECONDS: Dramatiq's time limit per message
    sweep_interval: float = 5.0  # CMS_SWEEP_INTERVAL_SECONDS
    reenqueue_after: float = 10.0  # CMS_REENQUEUE_AFTER_SECONDS: a message older than this may be lost...
    reenqueue_busy_after: float = 60.0  # CMS_REENQUEUE_BUSY_SECONDS: ...even while the queue has a backlog
    relay_interval: float = 1.0  # CMS_RELAY_INTERVAL_SECONDS: periodic sweep of unrelayed events
    relay_batch: int = 200  # CMS_RELAY_BATCH
    worker_threads: int = 8  # CMS_WORKER_THREADS: concurrent steps per worker process
    poll_ms: int = 100  # CMS_WORKER_POLL_MS: Dramatiq's idle poll of the queue (latency when idle)
    namespace: str = "cms"  # CMS_BROKER_NAMESPACE: prefix of the broker's Redis keys
    sweep_batch: int = 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> PipelineConfig:
        env = os.environ if env is None else env
        kw: dict[str, Any] = {
            "lease_seconds": _float(env, "CMS_STEP_LEASE_SECONDS", cls.lease_seconds, 1, 3600),
            "max_attempts": _int(env, "CMS_STEP_MAX_ATTEMPTS", cls.max_attempts, 1, 1000),
            "time_limit_seconds": _float(env, "CMS_STEP_TIME_LIMIT_SECONDS", cls.time_limit_seconds, 1, 86400),
            "sweep_interval": _float(env, "CMS_SWEEP_INTERVAL_SECONDS", cls.sweep_interval, 0.05, 3600),
            "reenqueue_after": _float(env, "CMS_REENQUEUE_AFTER_SECONDS", cls.reenqueue_after, 0.1, 86400),
            "reenqueue_busy_after": _float(env, "CMS_REENQUEUE_BUSY_SECONDS", cls.reenqueue_busy_after, 0.1, 86400),
            "relay_interval": _float(env, "CMS_RELAY_INTERVAL_SECONDS", cls.relay_interval, 0.05, 60),
            "relay_batch": _int(env, "CMS_RELAY_BATCH", cls.relay_batch, 1, 10000),
            "worker_threads": _int(env, "CMS_WORKER_THREADS", cls.worker_threads, 1, 256),
            "poll_ms": _int(env, "CMS_WORKER_POLL_MS", cls.poll_ms, 10, 60000),
        }
        if raw := env.get("CMS_STEP_BACKOFF"):
            try:
                backoff = tuple(float(part) for part in raw.split(","))
            except ValueError:
                raise ConfigError(f"CMS_STEP_BACKOFF={raw!r}: expected comma-separated seconds") from None
            if not backoff or any(b < 0 for b in backoff):
                raise ConfigError(f"CMS_STEP_BACKOFF={raw!r}: expected non-negative seconds")
            kw["backoff"] = backoff
        if namespace := env.get("CMS_BROKER_NAMESPACE"):
            kw["namespace"] = namespace
        kw.update(overrides)
        return cls(**kw)

    def backoff_for(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        return self.backoff[min(max(attempts, 1), len(self.backoff)) - 1]


# ---------------------------------------------------------------------------------------------
# advisory locks (two-level keys would collide with nothing else; one bigint keeps it simple)


def lock_key(namespace: str, name: str) -> int:
    """A stable signed 64-bit advisory lock key for `namespace:name`."""
    digest = hashlib.blake2b(f"cms:{namespace}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def xact_locks(conn: asyncpg.Connection, namespace: str, names: list[str]) -> None:
    """Take transaction-scoped advisory locks in key order (so two takers never deadlock)."""
    for key in sorted({lock_key(namespace, name) for name in names}):
        await conn.execute("SELECT pg_advisory_xact_lock($1)", key)


async def lock_timeouts(conn: asyncpg.Connection, seconds: float) -> None:
    """Inside a transaction: wait up to `seconds` for locks (the pool's defaults are 10 s / 30 s)."""
    ms = str(int(seconds * 1000))
    await conn.execute(f"SET LOCAL lock_timeout = {ms}; SET LOCAL statement_timeout = {ms}")


# ---------------------------------------------------------------------------------------------
# the step lifecycle


@dataclass(frozen=True)
class Event:
    id: str
    seq: int
    type: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Claim:
    event: Event
    step: str
    attempt: int


class LostLease(Exception):
    """The step was taken over by another worker (our lease expired); our result is discarded."""


_CLAIM = """
UPDATE outbox_steps
   SET status = 'running', attempts = attempts + 1, lease_until = now() + make_interval(secs => $3)
 WHERE event_id = $1 AND step = $2 AND attempts < $4
   AND ((status = 'pending' AND next_attempt_at <= now()) OR (status = 'running' AND lease_until < now()))
RETURNING attempts
"""


async def claim(pool: Any, event_id: str, step: str, config: PipelineConfig) -> Claim | None:
    """Take the step for `lease_seconds`; None when it is done, failed, not due or someone else's."""
    async with pool.acquire() as conn:
        attempt = await conn.fetchval(_CLAIM, event_id, step, config.lease_seconds, config.max_attempts)
        if attempt is None:
            return None
        row = await conn.fetchrow("SELECT id, seq, type, payload FROM outbox_events WHERE id = $1", event_id)
    assert row is not None  # outbox_steps references outbox_events
    return Claim(Event(row["id"], row["seq"], row["type"], row["payload"]), step, attempt)


async def renew(pool: Any, c: Claim, config: PipelineConfig) -> bool:
    return (
        await pool.fetchval(
            "UPDATE outbox_steps SET lease_until = now() + make_interval(secs => $4) "
            "WHERE event_id = $1 AND step = $2 AND status = 'running' AND attempts = $3 RETURNING true",
            c.event.id, c.step, c.attempt, config.lease_seconds,
        )
        is True
    )


async def complete(conn: asyncpg.Connection, c: Claim) -> None:
    """Mark the step done (call inside the transaction that records its outcome); LostLease if not ours."""
    done = await conn.fetchval(
        "UPDATE outbox_steps SET status = 'done', done_at = now(), lease_until = NULL, last_error = NULL "
        "WHERE event_id = $1 AND step = $2 AND status = 'running' AND attempts = $3 RETURNING true",
        c.event.id, c.step, c.attempt,
    )
    if done is not True:
        raise LostLease(f"{c.step} of {c.event.id}: attempt {c.attempt} no longer holds the lease")


async def fail(pool: Any, c: Claim, error: str, config: PipelineConfig) -> str | None:
    """Back to pending with a backoff (or `failed` after max attempts); returns the new status."""
    return await pool.fetchval(
        """UPDATE outbox_steps
              SET status = CASE WHEN attempts >= $4 THEN 'failed' ELSE 'pending' END,
                  next_attempt_at = now() + make_interval(secs => $5),
                  lease_until = NULL, enqueued_at = NULL, last_error = $6
            WHERE event_id = $1 AND step = $2 AND status = 'running' AND attempts = $3
        RETURNING status""",
        c.event.id, c.step, c.attempt, config.max_attempts, config.backoff_for(c.attempt), error[:2000],
    )


StepWork = Callable[[Claim], Awaitable[Callable[[asyncpg.Connection], Awaitable[None]] | None]]


async def execute(pool: Any, event_id: str, step: str, config: PipelineConfig, work: StepWork) -> str:
    """Claim, run `work`, then complete or fail. Returns "skipped", "done", "retry", "failed" or "lost".

    `work` may return a coroutine function that runs in the completing transaction (e.g. emitting
    a follow-up event), so the follow-up is recorded exactly once, together with the completion.
    """
    c = await claim(pool, event_id, step, config)
    if c is None:
        return "skipped"
    renewer = asyncio.create_task(_keep_lease(pool, c, config), name=f"lease-{step}-{event_id}")
    try:
        on_complete = await work(c)
        async with pool.acquire() as conn, conn.transaction():
            await complete(conn, c)
            if on_complete is not None:
                await on_complete(conn)
        return "done"
    except LostLease as exc:
        log.warning("%s", exc)
        return "lost"
    except asyncio.CancelledError:
        # Dramatiq's time limit (or shutdown) interrupted us: record it if we can, quickly.
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(fail(pool, c, "interrupted (time limit or shutdown)", config)), 1)
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        status = await fail(pool, c, error, config)
        level = logging.ERROR if status == "failed" else logging.WARNING
        log.log(level, "%s of %s (%s) attempt %d failed, now %s: %s", step, event_id, c.event.type, c.attempt,
                status, error, exc_info=status == "failed")
        return status or "lost"
    finally:
        renewer.cancel()
        with contextlib.suppress(BaseException):
            await renewer


async def _keep_lease(pool: Any, c: Claim, config: PipelineConfig) -> None:
    while True:
        await asyncio.sleep(config.lease_seconds / 3)
        try:
            if not await renew(pool, c, config):
                log.warning("%s of %s: lease lost (attempt %d)", c.step, c.event.id, c.attempt)
                return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next renewal may work; the lease has room for two misses
            log.warning("%s of %s: lease renewal failed: %s", c.step, c.event.id, exc)


# ---------------------------------------------------------------------------------------------
# sweeping


@dataclass
class SweepResult:
    due: list[tuple[str, str]] = field(default_factory=list)  # (event_id, step) to enqueue now
    failed: int = 0  # running steps whose lease ran out on their last attempt


async def expire_exhausted(conn: asyncpg.Connection, config: PipelineConfig) -> int:
    """Running steps whose lease ran out on the last allowed attempt become `failed`."""
    result = await conn.execute(
        "UPDATE outbox_steps SET status = 'failed', lease_until = NULL, "
        "last_error = coalesce(last_error || '; ', '') || 'lease expired on the last attempt (worker died?)' "
        "WHERE status = 'running' AND lease_until < now() AND attempts >= $1",
        config.max_attempts,
    )
    return int(result.split()[-1])


_DUE = """
WITH due AS (
    SELECT event_id, step FROM outbox_steps
     WHERE ((status = 'pending' AND next_attempt_at <= now()) OR (status = 'running' AND lease_until < now()))
       AND (enqueued_at IS NULL
            OR (status = 'running' AND enqueued_at < lease_until)
            OR enqueued_at < now() - make_interval(secs => CASE WHEN $1::boolean THEN $2::float8 ELSE $4::float8 END))
     ORDER BY next_attempt_at
     LIMIT $3
       FOR UPDATE SKIP LOCKED
)
UPDATE outbox_steps s SET enqueued_at = now()
  FROM due WHERE s.event_id = due.event_id AND s.step = due.step
RETURNING s.event_id, s.step
"""


async def due_steps(conn: asyncpg.Connection, config: PipelineConfig, *, queue_idle: bool) -> SweepResult:
    """Steps that need a (new) message, marked as enqueued now.

    A step needs one when it is due and no message for it can still be waiting: `enqueued_at` is
    NULL (never sent, or its last attempt failed), or it was running and its lease ran out after
    the message was consumed; or its message is older than `reenqueue_after` while the broker queue
    is idle (`queue_idle`), or older than `reenqueue_busy_after` at all: it was lost with a dead
    worker's prefetch (Dramatiq's Redis broker gives those back only after a heartbeat timeout and
    a random maintenance pass). While the queue has a backlog, a message may simply still be
    waiting in it, so we wait longer before sending a duplicate (duplicates are harmless, but a
    deep backlog re-sent every few seconds would snowball).
    """
    result = SweepResult(failed=await expire_exhausted(conn, config))
    busy_after = max(config.reenqueue_busy_after, config.reenqueue_after)
    rows = await conn.fetch(_DUE, queue_idle, config.reenqueue_after, config.sweep_batch, busy_after)
    result.due = [(r["event_id"], r["step"]) for r in rows]
    return result


async def mark_unsent(conn: Any, steps: list[tuple[str, str]]) -> None:
    """The broker refused these messages: let the next sweep send them again."""
    if steps:
        await conn.execute(
            "UPDATE outbox_steps s SET enqueued_at = NULL FROM unnest($1::text[], $2::text[]) AS u(event_id, step) "
            "WHERE s.event_id = u.event_id AND s.step = u.step AND s.status IN ('pending', 'running')",
            [e for e, _ in steps], [s for _, s in steps],
        )


async def other_step_pending(conn: asyncpg.Connection, step: str, event_id: str, type_id: str) -> bool:
    """Is another `step` for an entry event of content type `type_id` still waiting to run (soon)?

    Used to coalesce index rewrites: a pending step has not read anything yet, so it will see every
    change committed before it runs, including ours. Running steps do not count: one may already
    have rendered the index before our change was committed.
    """
    return bool(
        await conn.fetchval(
            """SELECT EXISTS (
                 SELECT 1 FROM outbox_steps s JOIN outbox_events e ON e.id = s.event_id
                  WHERE s.status = 'pending' AND s.step = $1 AND s.event_id <> $2
                    AND s.next_attempt_at <= now() + interval '5 seconds'
                    AND e.type = ANY($3::text[]) AND e.payload->>'type' = $4)""",
            step, event_id, list(ENTRY_EVENTS), type_id,
        )
    )


async def step_counts(conn: Any) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM outbox_steps GROUP BY status")
    return {r["status"]: r["n"] for r in rows}
