"""Step bookkeeping for the publish pipeline: PostgreSQL, not the broker, is the source of truth.

Every relayed outbox event gets one `outbox_steps` row per step it needs (`steps_for`). A Dramatiq
message only says "look at step S of event E"; the worker then *claims* the row with a lease
(`claim`), does the work, and either completes it (`complete`, fenced by the attempt number so a
worker that lost its lease cannot complete a step someone else now owns) or records the failure
(`fail`: back to `pending` with a backoff, or `failed` after `max_attempts`). The sweeper
(`due_steps`) finds steps that need a message again: pending steps whose retry is due and whose
message was lost, and running steps whose lease ran out (their worker died). Duplicated messages
are harmless: a claim that matches no row is acknowledged and skipped.

Tunables are `Settings.pipeline` (app/config.py, CMS_STEP_* and friends), so tests and operators
can shorten the lease and sweep intervals without touching code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from cms.app.config import PipelineConfig
from cms.app.events import types as events

log = logging.getLogger("cms.pipeline")

DELIVER = "deliver"
WEBHOOK = "webhook"
RERENDER = "rerender"  # not an outbox step: a schema change's batches (app/schema/rerenders.py)

# Which steps an outbox event needs. Events not listed need none: the relay only marks them relayed.
# Schema changes re-render documents in the database; their files follow through the same step
# (a deleted type's files, i.e. its index.json, are removed the same way). Every event can go to
# webhooks: the relay adds that step only while some webhook is active.
STEPS: dict[str, tuple[str, ...]] = {
    event: ((DELIVER,) if event in (*events.ENTRY_CHANGES, *events.SCHEMA_CHANGES) else ()) + (WEBHOOK,)
    for event in events.EVENT_TYPES
}


def steps_for(event_type: str) -> tuple[str, ...]:
    return STEPS.get(event_type, ())


# ---------------------------------------------------------------------------------------------
# the step lifecycle


@dataclass(frozen=True)
class Event:
    id: str
    seq: int
    type: str
    payload: dict[str, Any]
    created_at: datetime | None = None


@dataclass(frozen=True)
class Claim:
    event: Event
    step: str
    attempt: int


class LostLease(Exception):
    """The step was taken over by another worker (our lease expired); our result is discarded."""


# The requested steps (when due), plus up to $5 other due pending steps: a worker that finds a
# backlog takes a batch of it, so one step run (one set of round trips) serves many events.
_CLAIM = """
WITH asked AS (
    SELECT event_id FROM outbox_steps
     WHERE event_id = ANY($1::text[]) AND step = $2 AND attempts < $4
       AND ((status = 'pending' AND next_attempt_at <= now()) OR (status = 'running' AND lease_until < now()))
       FOR UPDATE SKIP LOCKED
), more AS (
    SELECT event_id FROM outbox_steps
     WHERE status = 'pending' AND step = $2 AND next_attempt_at <= now() AND attempts < $4
       AND NOT (event_id = ANY($1::text[]))
     ORDER BY next_attempt_at
     LIMIT $5
       FOR UPDATE SKIP LOCKED
), picked AS (SELECT event_id FROM asked UNION ALL SELECT event_id FROM more)
UPDATE outbox_steps s
   SET status = 'running', attempts = s.attempts + 1, lease_until = now() + make_interval(secs => $3)
  FROM picked p JOIN outbox_events e ON e.id = p.event_id
 WHERE s.event_id = p.event_id AND s.step = $2
RETURNING s.event_id, s.attempts, e.seq, e.type, e.payload, e.created_at
"""


async def claim_batch(pool: Any, event_ids: list[str], step: str, config: PipelineConfig, more: int = 0) -> list[Claim]:
    """Take the due ones of `event_ids`' steps, and up to `more` other due steps, for `lease_seconds`.

    Steps that are done, failed, not due or someone else's are left alone (a duplicate message
    claims nothing). The claims come back in event order.
    """
    rows = await pool.fetch(_CLAIM, event_ids, step, config.lease_seconds, config.max_attempts, more)
    claims = [
        Claim(Event(r["event_id"], r["seq"], r["type"], r["payload"], r["created_at"]), step, r["attempts"]) for r in rows
    ]
    return sorted(claims, key=lambda c: c.event.seq)


async def claim(pool: Any, event_id: str, step: str, config: PipelineConfig) -> Claim | None:
    """Take one step for `lease_seconds`; None when it is done, failed, not due or someone else's."""
    claims = await claim_batch(pool, [event_id], step, config)
    return claims[0] if claims else None


def _fence(claims: list[Claim]) -> tuple[list[str], list[str], list[int]]:
    return [c.event.id for c in claims], [c.step for c in claims], [c.attempt for c in claims]


async def renew(pool: Any, claims: list[Claim], config: PipelineConfig) -> set[str]:
    """Extend the leases still ours; returns the event ids renewed."""
    rows = await pool.fetch(
        "UPDATE outbox_steps s SET lease_until = now() + make_interval(secs => $4) "
        "FROM unnest($1::text[], $2::text[], $3::int[]) AS u(event_id, step, attempts) "
        "WHERE s.event_id = u.event_id AND s.step = u.step AND s.status = 'running' AND s.attempts = u.attempts "
        "RETURNING s.event_id",
        *_fence(claims), config.lease_seconds,
    )
    return {r["event_id"] for r in rows}


async def complete_many(conn: asyncpg.Connection, claims: list[Claim]) -> set[str]:
    """Mark the steps done (inside the transaction recording their outcome); returns the event ids
    completed. A step missing from the result was taken over by another worker (our lease ran out)."""
    rows = await conn.fetch(
        "UPDATE outbox_steps s SET status = 'done', done_at = now(), lease_until = NULL, last_error = NULL "
        "FROM unnest($1::text[], $2::text[], $3::int[]) AS u(event_id, step, attempts) "
        "WHERE s.event_id = u.event_id AND s.step = u.step AND s.status = 'running' AND s.attempts = u.attempts "
        "RETURNING s.event_id",
        *_fence(claims),
    )
    return {r["event_id"] for r in rows}


async def complete(conn: asyncpg.Connection, c: Claim) -> None:
    """Mark one step done; LostLease if it is no longer ours."""
    if not await complete_many(conn, [c]):
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


# What a step run returns: None, or a coroutine function that runs in the completing transaction
# with the claims that were completed (e.g. to emit a follow-up event for each).
OnComplete = Callable[[asyncpg.Connection, list[Claim]], Awaitable[None]]
StepWork = Callable[[list[Claim]], Awaitable[OnComplete | None]]


async def execute(
    pool: Any, event_ids: list[str], step: str, config: PipelineConfig, work: StepWork, *, more: int = 0,
) -> dict[str, str]:
    """Claim the steps (and up to `more` other due ones), run `work` on them together, then complete
    or fail them. Returns {event_id: "done" | "pending" (retried later) | "failed" | "lost"} for the
    steps claimed.

    A follow-up that `work` returns runs in the completing transaction, so it is recorded exactly
    once, together with the completion. When a batch fails, its steps run again one by one, so
    one bad event cannot hold back the others (nor use up their attempts).
    """
    claims = await claim_batch(pool, event_ids, step, config, more)
    if not claims:
        return {}
    renewer = asyncio.create_task(_keep_leases(pool, claims, config), name=f"lease-{step}-{claims[0].event.id}")
    try:
        if len(claims) == 1:
            return await _run(pool, claims, config, work)
        try:
            return await _attempt(pool, claims, work)
        except (asyncio.CancelledError, LostLease):
            raise
        except Exception as exc:
            log.warning("%s: a batch of %d failed (%s: %s); running its steps one by one", step, len(claims),
                        type(exc).__name__, exc)
        outcomes: dict[str, str] = {}
        for c in claims:
            outcomes.update(await _run(pool, [c], config, work))
        return outcomes
    except asyncio.CancelledError:
        # Dramatiq's time limit (or shutdown) interrupted us: record it if we can, quickly.
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(
                asyncio.shield(asyncio.gather(*(fail(pool, c, "interrupted (time limit or shutdown)", config)
                                                for c in claims))), 2)
        raise
    finally:
        renewer.cancel()
        with contextlib.suppress(BaseException):
            await renewer


async def _attempt(pool: Any, claims: list[Claim], work: StepWork) -> dict[str, str]:
    on_complete = await work(claims)
    async with pool.acquire() as conn, conn.transaction():
        done = await complete_many(conn, claims)
        ours = [c for c in claims if c.event.id in done]
        if on_complete is not None and ours:
            await on_complete(conn, ours)
    for c in claims:
        if c.event.id not in done:
            log.warning("%s of %s: attempt %d no longer holds the lease; its result is discarded",
                        c.step, c.event.id, c.attempt)
    return {c.event.id: "done" if c.event.id in done else "lost" for c in claims}


async def _run(pool: Any, claims: list[Claim], config: PipelineConfig, work: StepWork) -> dict[str, str]:
    """One attempt of a single step: done, or failed with a backoff (or for good)."""
    (c,) = claims
    try:
        return await _attempt(pool, claims, work)
    except LostLease as exc:
        log.warning("%s", exc)
        return {c.event.id: "lost"}
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        status = await fail(pool, c, error, config)
        level = logging.ERROR if status == "failed" else logging.WARNING
        log.log(level, "%s of %s (%s) attempt %d failed, now %s: %s", c.step, c.event.id, c.event.type, c.attempt,
                status, error, exc_info=status == "failed")
        return {c.event.id: status or "lost"}


async def _keep_leases(pool: Any, claims: list[Claim], config: PipelineConfig) -> None:
    while True:
        await asyncio.sleep(config.lease_seconds / 3)
        try:
            renewed = await renew(pool, claims, config)
            gone = [c for c in claims if c.event.id not in renewed]
            if gone:
                # Completed already (a failed batch runs its steps one by one), or taken over.
                log.debug("%s: %d step(s) no longer ours to renew, e.g. %s (attempt %d)", gone[0].step, len(gone),
                          gone[0].event.id, gone[0].attempt)
                claims = [c for c in claims if c.event.id in renewed]
                if not claims:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next renewal may work; the lease has room for two misses
            log.warning("%s of %s: lease renewal failed: %s", claims[0].step, claims[0].event.id, exc)


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


async def other_step_pending(conn: asyncpg.Connection, step: str, event_ids: list[str], type_id: str) -> bool:
    """Is another `step` for an entry event of content type `type_id` still waiting to run (soon)?

    Used to coalesce index rewrites: a pending step has not read anything yet, so it will see every
    change committed before it runs, including ours. Running steps do not count: one may already
    have rendered the index before our change was committed.
    """
    return bool(
        await conn.fetchval(
            """SELECT EXISTS (
                 SELECT 1 FROM outbox_steps s JOIN outbox_events e ON e.id = s.event_id
                  WHERE s.status = 'pending' AND s.step = $1 AND NOT (s.event_id = ANY($2::text[]))
                    AND s.next_attempt_at <= now() + interval '5 seconds'
                    AND e.type = ANY($3::text[]) AND e.payload->>'type' = $4)""",
            step, event_ids, list(events.ENTRY_CHANGES), type_id,
        )
    )
