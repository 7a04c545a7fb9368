"""The `webhook` actor: an event's fan-out to the endpoints that want it.

Thin: claim the steps (pipeline.py); in the transaction that completes them, write one
`webhook_deliveries` row per (event, endpoint) (app/webhooks/fanout.py). Sending is not done here:
the worker's webhook sender (workers/webhook_sender.py) polls the deliveries that are due.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from cms.app.webhooks import fanout
from cms.app.webhooks import repository as webhooks_repo
from cms.workers import pipeline

log = logging.getLogger("cms.workers.webhooks")


async def webhook_step(runtime: Any, event_ids: list[str]) -> dict[str, str]:
    """Fan out the events of `event_ids` (and of up to `deliver_batch` other due webhook steps)."""
    config = runtime.config
    if runtime.pool is None:
        raise RuntimeError("the worker runtime is not open (no database pool)")

    async def work(claims: list[pipeline.Claim]) -> Any:
        async def record(conn: asyncpg.Connection, completed: list[pipeline.Claim]) -> None:
            claimed = [fanout.Event(c.event.id, c.event.seq, c.event.type, c.event.payload, c.event.created_at)
                       for c in completed]
            if not await webhooks_repo.insert_deliveries(conn, await fanout.deliveries_for(conn, claimed)) and claimed:
                await webhooks_repo.notify_senders(conn)  # no delivery, but later events may be waiting for these

        return record

    outcomes = await pipeline.execute(
        runtime.pool, event_ids, pipeline.WEBHOOK, config, work, more=max(0, config.deliver_batch - len(event_ids)),
    )
    log.debug("webhook %s: %s", event_ids, outcomes)
    return outcomes

