"""The `deliver` actor: prerendered files on the object store, purges, then `entry.delivered`.

Thin: claim the steps (pipeline.py), let `app/publishing/files.py` make the files match the
database, send the purges, and record `entry.delivered` in the transaction that completes the steps.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from cms.app.events import types as events
from cms.app.events.outbox import emit_many
from cms.app.publishing.files import Changes, republish_all
from cms.app.schema import repository as schema_repo
from cms.workers import pipeline

log = logging.getLogger("cms.workers.deliver")


async def deliver_step(runtime: Any, event_ids: list[str]) -> dict[str, str]:
    """Run the deliver steps of `event_ids`, and of up to `deliver_batch` others that are due, together."""
    config = runtime.config
    if runtime.pool is None:
        raise RuntimeError("the worker runtime is not open (no database pool)")

    async def work(claims: list[pipeline.Claim]) -> Any:
        claimed = [c.event for c in claims if isinstance(c.event.payload, dict)]
        schema_events = [e for e in claimed if e.type in events.SCHEMA_CHANGES]
        entry_events = [e for e in claimed if e.type in events.ENTRY_CHANGES]
        # A content type or locale change: its entries, documents and files are brought to the new
        # shape by the type's re-render batches (app/schema/rerenders.py), started here.
        if any(e.type != events.CONTENT_TYPE_DELETED for e in schema_events):
            async with runtime.pool.acquire() as conn:
                unfinished = await schema_repo.unfinished_rerenders(conn)
            for type_id in unfinished:  # (a message may wait for Redis: not while holding a connection)
                await runtime.send_rerender(type_id)
        for deleted in sorted({str(e.payload.get("id")) for e in schema_events if e.type == events.CONTENT_TYPE_DELETED}):
            # A deleted type had no entries: only its index files are left to remove.
            republished = await republish_all(runtime.pool, runtime.publisher, only_type=deleted)
            await runtime.purge.send(republished.changes.tags, republished.changes.keys, reference=schema_events[0].id)
        if not entry_events:
            return None
        changes = Changes()
        claimed_ids = [e.id for e in claimed]
        async with runtime.pool.acquire() as conn:

            async def index_left_to_later(type_id: str) -> bool:
                return await pipeline.other_step_pending(conn, pipeline.DELIVER, claimed_ids, type_id)

            try:
                await runtime.publisher.deliver(conn, [e.payload for e in entry_events], changes, index_left_to_later)
            except Exception:
                # What was written is purged also when part of the step failed (it is retried).
                if changes.keys:
                    await runtime.purge.send(changes.tags, changes.keys, reference=entry_events[0].id)
                raise
        await runtime.purge.send(changes.tags, changes.keys, reference=entry_events[0].id)

        async def delivered(conn: asyncpg.Connection, completed: list[pipeline.Claim]) -> None:
            # In the transaction that completes the steps: exactly once, after files and purges.
            await emit_many(conn, [
                (events.ENTRY_DELIVERED, {**c.event.payload, "source_event": c.event.id})
                for c in completed if c.event.type in events.ENTRY_CHANGES and isinstance(c.event.payload, dict)
            ], relayed=not pipeline.steps_for(events.ENTRY_DELIVERED))

        return delivered

    outcomes = await pipeline.execute(
        runtime.pool, event_ids, pipeline.DELIVER, config, work, more=max(0, config.deliver_batch - len(event_ids)),
    )
    log.debug("deliver %s: %s", event_ids, outcomes)
    return outcomes

