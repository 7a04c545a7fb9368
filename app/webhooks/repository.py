"""SQL for webhook subscriptions, their deliveries and the attempts of each delivery."""

from __future__ import annotations

from typing import Any, NamedTuple

import asyncpg

from ..db.rows import Conn, returned

WEBHOOK_CHANNEL = "cms_webhooks"  # NOTIFY: deliveries are due (the senders wake up)
WEBHOOK_COLUMNS = (
    "id, url, events, types, headers, active, disabled_reason, secret, old_secret, old_secret_until, "
    "failing_since, version, created_by, created_at, updated_at"
)
DELIVERY_COLUMNS = (
    "id, webhook_id, event_id, event_type, seq, order_key, status, attempts, run_start, next_attempt_at, "
    "created_at, updated_at"
)

# --- subscriptions ------------------------------------------------------------------------------


async def insert_webhook(conn: Conn, values: dict[str, Any]) -> asyncpg.Record:
    return returned(await conn.fetchrow(
        f"""INSERT INTO webhooks (id, url, events, types, headers, active, secret, created_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {WEBHOOK_COLUMNS}""",
        values["id"], values["url"], values["events"], values["types"], values["headers"], values["active"],
        values["secret"], values["created_by"],
    ))


async def get_webhook(conn: Conn, webhook_id: str, *, for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1{lock}", webhook_id)


async def list_webhooks(conn: Conn, after: str | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2",
        after, limit,
    )


async def count_webhooks(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM webhooks"))


async def update_webhook(conn: Conn, webhook_id: str, values: dict[str, Any]) -> asyncpg.Record:
    """Set these columns (names from WEBHOOK_COLUMNS, never from input), version + 1."""
    columns = [name for name in values if name in WEBHOOK_COLUMNS.split(", ")]
    sets = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(columns))
    return returned(await conn.fetchrow(
        f"UPDATE webhooks SET {sets}, version = version + 1, updated_at = now() WHERE id = $1 "  # noqa: S608
        f"RETURNING {WEBHOOK_COLUMNS}",
        webhook_id, *[values[name] for name in columns],
    ))


async def delete_webhook(conn: Conn, webhook_id: str) -> None:
    await conn.execute("DELETE FROM webhooks WHERE id = $1", webhook_id)


async def active_webhooks(conn: Conn) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE active ORDER BY id")


# --- deliveries -----------------------------------------------------------------------------------


async def insert_deliveries(conn: Conn, rows: list[tuple[str, str, str, str, int, str | None, bytes]]) -> int:
    """rows: (id, webhook id, event id, event type, seq, order key, body); existing (webhook, event)
    pairs are kept as they are. Wakes the senders at commit. Returns how many were new."""
    if not rows:
        return 0
    columns = [list(c) for c in zip(*rows, strict=True)]
    inserted = await conn.fetchval(
        """WITH n AS (
               INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, seq, order_key, body)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                                    $7::bytea[])
               ON CONFLICT (webhook_id, event_id) DO NOTHING RETURNING 1)
           SELECT count(*) FROM n""",
        *columns,
    )
    if inserted:
        await notify_senders(conn)
    return int(inserted)


async def notify_senders(conn: Conn) -> None:
    """Wake every worker's sender at commit: deliveries may be due (new, redelivered, or no longer
    waiting for an earlier delivery or fan-out of their entry)."""
    await conn.execute("SELECT pg_notify($1, '')", WEBHOOK_CHANNEL)


async def get_delivery(conn: Conn, webhook_id: str, delivery_id: str, *, for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(
        f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1 AND webhook_id = $2{lock}",
        delivery_id, webhook_id,
    )


async def list_deliveries(
    conn: Conn, webhook_id: str, status: str | None, before: str | None, limit: int
) -> list[asyncpg.Record]:
    """Newest first; `status` pending also covers deliveries being sent right now."""
    statuses = None if status is None else (["pending", "sending"] if status == "pending" else [status])
    return await conn.fetch(
        f"""SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
             WHERE webhook_id = $1 AND ($2::text[] IS NULL OR status = ANY($2::text[]))
               AND ($3::text IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4""",
        webhook_id, statuses, before, limit,
    )


async def attempts_of(conn: Conn, delivery_ids: list[str]) -> dict[str, list[asyncpg.Record]]:
    rows = await conn.fetch(
        "SELECT delivery_id, n, at, status_code, error, duration_ms, response FROM webhook_attempts "
        "WHERE delivery_id = ANY($1::text[]) ORDER BY delivery_id, n",
        delivery_ids,
    )
    out: dict[str, list[asyncpg.Record]] = {d: [] for d in delivery_ids}
    for row in rows:
        out[row["delivery_id"]].append(row)
    return out


async def redeliver(conn: Conn, delivery_id: str) -> asyncpg.Record:
    """Send again now, as a new run of the retry schedule (attempts so far are kept)."""
    row = returned(await conn.fetchrow(
        f"""UPDATE webhook_deliveries SET status = 'pending', run_start = attempts, next_attempt_at = now(),
                   lease_until = NULL, updated_at = now()
             WHERE id = $1 RETURNING {DELIVERY_COLUMNS}""",
        delivery_id,
    ))
    await notify_senders(conn)
    return row


# --- sending ----------------------------------------------------------------------------------------

# Due deliveries of active endpoints, oldest first, for `lease` seconds: per endpoint, as many as it
# has free slots ($3 in flight at most), so one slow or backlogged endpoint never takes the slots
# of the others, and the scan never walks deliveries that could not be taken. Per endpoint and
# entry, a delivery waits while an earlier one (by event order) is not finished, so a receiver
# never sees a later event of an entry before an earlier one has succeeded or failed for good.
# Fan-out steps of one entry's events may run out of order (any worker takes any step), so an entry
# event's deliveries also wait while an earlier event of that entry is not fanned out yet (its
# `webhook` step is open): the earlier event's deliveries may not exist yet. A delivery whose lease
# ran out (its worker died mid-send) is taken again: at least once.
_CLAIM = """
WITH unfanned AS (
    SELECT o.payload->>'id' AS entry_id, min(o.seq) AS seq
      FROM outbox_steps s JOIN outbox_events o ON o.id = s.event_id
     WHERE s.step = 'webhook' AND s.status IN ('pending', 'running') AND o.type LIKE 'entry.%'
     GROUP BY 1
), endpoints AS (
    SELECT w.id, $3 - (SELECT count(*) FROM webhook_deliveries s
                        WHERE s.webhook_id = w.id AND s.status = 'sending' AND s.lease_until >= now()) AS free
      FROM webhooks w WHERE w.active
), due AS (
    SELECT picked.id FROM endpoints e CROSS JOIN LATERAL (
        SELECT d.id, d.next_attempt_at FROM webhook_deliveries d
         WHERE d.webhook_id = e.id AND d.status IN ('pending', 'sending')
           AND ((d.status = 'pending' AND d.next_attempt_at <= now()) OR (d.status = 'sending' AND d.lease_until < now()))
           AND (d.order_key IS NULL OR NOT EXISTS (
                 SELECT 1 FROM webhook_deliveries x
                  WHERE x.webhook_id = d.webhook_id AND x.order_key = d.order_key AND x.seq < d.seq
                    AND x.status IN ('pending', 'sending'))
                 AND NOT EXISTS (
                 SELECT 1 FROM unfanned u
                  WHERE u.entry_id = substr(d.order_key, strpos(d.order_key, '/') + 1) AND u.seq < d.seq))
         ORDER BY d.next_attempt_at
         LIMIT greatest(e.free, 0)
           FOR UPDATE OF d SKIP LOCKED
    ) picked
     WHERE e.free > 0
     ORDER BY picked.next_attempt_at
     LIMIT $1
)
UPDATE webhook_deliveries d
   SET status = 'sending', attempts = d.attempts + 1, lease_until = now() + make_interval(secs => $2),
       updated_at = now()
  FROM due, webhooks w
 WHERE d.id = due.id AND w.id = d.webhook_id
RETURNING d.id, d.webhook_id, d.event_id, d.body, d.attempts, d.run_start, w.url, w.headers, w.secret,
          w.old_secret, w.old_secret_until
"""


async def claim_due(conn: Conn, limit: int, lease_seconds: float, per_endpoint: int) -> list[asyncpg.Record]:
    return await conn.fetch(_CLAIM, limit, lease_seconds, per_endpoint)


async def oldest_due_seconds(conn: Conn) -> float:
    """How long the longest-waiting due delivery of an active endpoint has waited (0: none waits)."""
    value = await conn.fetchval(
        "SELECT extract(epoch FROM now() - min(d.next_attempt_at)) FROM webhook_deliveries d "
        "JOIN webhooks w ON w.id = d.webhook_id WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND w.active"
    )
    return float(value or 0.0)


async def next_due(conn: Conn) -> Any:
    """When the next pending delivery of an active endpoint is due (None: nothing waits)."""
    return await conn.fetchval(
        "SELECT min(d.next_attempt_at) FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id "
        "WHERE d.status = 'pending' AND w.active"
    )


class Finished(NamedTuple):
    """One attempt's outcome, to record: the attempt row and the delivery's next state."""

    delivery_id: str
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: int
    response: str | None
    status: str  # the delivery's status now: pending (retry in `retry_in` s), succeeded or failed
    retry_in: float | None


async def record_finished(conn: Conn, finished: list[Finished]) -> set[str]:
    """Record attempts and the deliveries' new states, in one statement; returns the ids of the
    deliveries whose state was recorded (a delivery taken over since, its lease having run out,
    keeps the new owner's state: its attempt row is still kept)."""
    if not finished:
        return set()
    columns = [list(c) for c in zip(*finished, strict=True)]
    rows = await conn.fetch(
        """WITH o AS (
               SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::text[], $5::int[], $6::text[], $7::text[],
                                    $8::float8[])
                   AS o(id, attempt, status_code, error, duration_ms, response, status, retry_in)
           ), attempts AS (
               INSERT INTO webhook_attempts (delivery_id, n, status_code, error, duration_ms, response)
               SELECT id, attempt, status_code, error, duration_ms, response FROM o ON CONFLICT DO NOTHING
           )
           UPDATE webhook_deliveries d
              SET status = o.status, lease_until = NULL, updated_at = now(),
                  next_attempt_at = CASE WHEN o.retry_in IS NULL THEN d.next_attempt_at
                                         ELSE now() + make_interval(secs => o.retry_in) END
             FROM o
            WHERE d.id = o.id AND d.attempts = o.attempt AND d.status = 'sending'
        RETURNING d.id""",
        *columns,
    )
    if rows:
        await notify_senders(conn)  # later deliveries of these entries may go now
    return {r["id"] for r in rows}


async def endpoints_succeeded(conn: Conn, webhook_ids: list[str]) -> None:
    await conn.execute(
        "UPDATE webhooks SET failing_since = NULL WHERE id = ANY($1::text[]) AND failing_since IS NOT NULL",
        webhook_ids,
    )


async def endpoint_failed(conn: Conn, webhook_id: str, disable_after_seconds: float) -> bool:
    """Note a failed attempt; disable the endpoint after `disable_after_seconds` of failures only.
    Returns True when this disabled it."""
    disabled = await conn.fetchval(
        """UPDATE webhooks SET failing_since = coalesce(failing_since, now()),
                  active = CASE WHEN now() - coalesce(failing_since, now()) > make_interval(secs => $2)
                                THEN false ELSE active END,
                  disabled_reason = CASE WHEN active AND now() - coalesce(failing_since, now()) > make_interval(secs => $2)
                                         THEN 'failing for 5 days' ELSE disabled_reason END
            WHERE id = $1 RETURNING NOT active""",
        webhook_id, disable_after_seconds,
    )
    return bool(disabled)


async def disable(conn: Conn, webhook_id: str, reason: str) -> None:
    await conn.execute(
        "UPDATE webhooks SET active = false, disabled_reason = $2, updated_at = now() WHERE id = $1",
        webhook_id, reason,
    )


async def prune_finished(conn: Conn, older_than_seconds: float, batch: int) -> int:
    """Delete up to `batch` succeeded or failed deliveries (their attempts go with them) last
    touched longer ago than this; returns how many."""
    result = await conn.execute(
        """DELETE FROM webhook_deliveries WHERE id IN (
               SELECT id FROM webhook_deliveries
                WHERE status IN ('succeeded', 'failed') AND updated_at < now() - make_interval(secs => $1)
                LIMIT $2)""",
        older_than_seconds, batch,
    )
    return int(result.split()[-1])
