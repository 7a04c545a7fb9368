"""Referenced entries, loaded in batches: one query per level of references and locale, whatever
the number of entries on a page (strawberry's DataLoader collects the loads of one event-loop
tick). Each batch takes its own pool connection (asyncpg runs one query at a time per connection).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from strawberry.dataloader import DataLoader

# An entry as GraphQL resolves it: its ENTRY document reshaped (resolvers.shape), or None when it is
# not published (or, in preview, does not exist).
Shaped = dict[str, Any] | None


class EntryLoaders:
    """The loaders of one request: one per locale."""

    def __init__(self, pool: Any, reader: Any, shape: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.pool = pool
        self.reader = reader
        self.shape = shape
        self._loaders: dict[str, DataLoader[str, Shaped]] = {}
        self.batches = 0  # queries run (tests count them)

    def load(self, locale: str, entry_id: str) -> Any:
        loader = self._loaders.get(locale)
        if loader is None:
            loader = self._loaders[locale] = DataLoader(load_fn=self._batch(locale))
        return loader.load(entry_id)

    def _batch(self, locale: str) -> Callable[[list[str]], Any]:
        async def load(ids: list[str]) -> list[Shaped]:
            self.batches += 1
            async with self.pool.acquire() as conn:
                found = await self.reader.many(conn, ids, locale)
            return [self.shape(found[i]) if i in found else None for i in ids]

        return load
