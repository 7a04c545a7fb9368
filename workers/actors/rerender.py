"""The `rerender` actor: one batch of a schema change's background work (app/schema/rerenders.py),
then a message for the next batch. A message names a content type; PostgreSQL holds the cursor and
the lease, so a duplicate message claims nothing and a lost one is sent again by the sweeper."""

from __future__ import annotations

import logging
from typing import Any

from cms.app.schema import rerenders

log = logging.getLogger("cms.workers.rerender")


async def rerender_step(runtime: Any, type_id: str, send_next: Any) -> bool:
    if runtime.pool is None:
        raise RuntimeError("the worker runtime is not open (no database pool)")
    more = await rerenders.run_batch(
        runtime.pool, runtime.publisher, runtime.purge.send, type_id,
        batch=runtime.config.rerender_batch, lease_seconds=runtime.config.lease_seconds,
        backoff=runtime.config.backoff, max_attempts=runtime.config.max_attempts,
    )
    if more:
        send_next(type_id)  # its own message: other steps' messages get their turn in between
    return more
