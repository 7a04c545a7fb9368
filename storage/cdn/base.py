"""What every CDN purge provider shares: the `CdnPurger` protocol, `CdnPurgeError`, ``none``
(`NoPurger`), and the request plumbing of the HTTP providers (`_HttpPurger`).

``purge(tags, paths, reference)`` is synchronous (blocking HTTP / boto3; actors call it via
``asyncio.to_thread``) and either purges everything it was given or raises `CdnPurgeError`; the
caller retries the whole call, which every provider tolerates (purges are idempotent; CloudFront
invalidations are keyed by ``reference``, the event id).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import httpx

T = TypeVar("T")

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class CdnPurgeError(Exception):
    """A purge request failed; nothing about which part succeeded is promised, retry the whole purge."""


@runtime_checkable
class CdnPurger(Protocol):
    def purge(self, tags: list[str], paths: list[str], reference: str) -> None:
        """Purge the surrogate keys ``tags`` and the URL ``paths``; ``reference`` is the event id."""
        ...


def _chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _unique(items: Sequence[str]) -> list[str]:
    return [item for item in dict.fromkeys(items) if item]


def _path(path: str) -> str:
    return path if path.startswith("/") else f"/{path}"


class NoPurger:
    """``none``: the delivery cache is purged elsewhere; there is no CDN in front."""

    def purge(self, tags: list[str], paths: list[str], reference: str) -> None:
        return None


class _HttpPurger:
    provider = "http"

    def __init__(self, client: httpx.Client | None) -> None:
        self.client = client if client is not None else httpx.Client(timeout=DEFAULT_TIMEOUT)

    def close(self) -> None:
        self.client.close()

    def _send(
        self, method: str, url: str, *, ok_statuses: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx.Response:
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise CdnPurgeError(f"{self.provider}: {method} {url} failed: {exc!r}") from exc
        if not (response.is_success or response.status_code in ok_statuses):
            raise CdnPurgeError(
                f"{self.provider}: {method} {url} answered {response.status_code}: {response.text[:200]}"
            )
        return response
