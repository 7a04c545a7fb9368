"""Referenced entries, loaded in batches: one query per level of references and locale, whatever
the number of entries on a page (strawberry's DataLoader collects the loads of one event-loop
tick). Each batch takes its own pool connection (asyncpg runs one query at a time per connection).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import GraphQLError
from strawberry.dataloader import DataLoader

from cms.app.delivery.documents import IncludeLimit

# An entry as GraphQL resolves it: its ENTRY document reshaped (resolvers.shape), or None when it is
# not published (or, in preview, does not exist).
Shaped = dict[str, Any] | None


class EntryLoaders:
    """The loaders of one request: one per locale."""

    def __init__(self, pool: Any, reader: Any, shape: Callable[[dict[str, Any]], dict[str, Any]],
                 limit: IncludeLimit) -> None:
        self.pool = pool
        self.reader = reader
        self.shape = shape
        self.limit = limit
        self._loaders: dict[str, DataLoader[str, Shaped]] = {}
        self.batches = 0  # queries run (tests count them)
        self.copies = 0  # references resolved so far, each time one is (REST's include bound)
        self.bytes = 0  # stored bytes of the entries loaded

    def count(self, references: int) -> None:
        """Charge `references` more resolved references; past the limit the answer is refused."""
        self.copies += references
        if self.copies > self.limit.entries:
            raise too_large(f"more than {self.limit.entries} referenced entries")

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
            self.bytes += sum(size for _, size in found.values())
            if self.bytes > self.limit.bytes:
                raise too_large(f"more than {self.limit.bytes} bytes of referenced entries")
            return [self.shape(found[i][0]) if i in found else None for i in ids]

        return load


class TooLarge(GraphQLError):
    pass


def too_large(what: str) -> TooLarge:
    """The answer would embed too much (CMS_DELIVERY_MAX_INCLUDES / _MB, as REST's `include`)."""
    return TooLarge(f"this query would resolve {what}; select fewer references or a smaller limit",
                    extensions={"code": "QUERY_TOO_COMPLEX"})
