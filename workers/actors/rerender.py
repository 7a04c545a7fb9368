"""The `rerender` step: one batch of a schema change's background work (app/schema/rerenders.py).
The next batch runs right after on the same worker's step loop (`LocalSteps.try_rerender`), or by a
message naming the content type. PostgreSQL holds the cursor and the lease, so a duplicate run
claims nothing and a lost one is started again by the sweeper."""

from __future__ import annotations

import logging
from typing import Any

from cms.app.config import PipelineConfig
from cms.app.schema import rerenders

log = logging.getLogger("cms.workers.rerender")


def time_limit_seconds(config: PipelineConfig) -> float:
    """A batch is bounded by its size, but the last one builds indexes over the whole table (minutes
    at millions of rows): its lease, renewed while it runs, guards it instead of the step limit."""
    return max(config.time_limit_seconds, 6 * 3600)


async def rerender_step(runtime: Any, type_id: str) -> bool:
    """Run the type's next batch; True while more is left."""
    if runtime.pool is None:
        raise RuntimeError("the worker runtime is not open (no database pool)")
    return await rerenders.run_batch(
        runtime.pool, runtime.publisher, runtime.purge.send, type_id,
        batch=runtime.config.rerender_batch, lease_seconds=runtime.config.lease_seconds,
        backoff=runtime.config.backoff, max_attempts=runtime.config.max_attempts,
    )
