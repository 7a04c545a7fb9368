"""CDN purge providers behind one protocol, chosen by ``CMS_CDN_PROVIDER``.

``purge(tags, paths, reference)`` is synchronous (blocking HTTP / boto3; actors call it via
``asyncio.to_thread``) and either purges everything it was given or raises `CdnPurgeError`; the
caller retries the whole call, which every provider tolerates (purges are idempotent; CloudFront
invalidations are keyed by ``reference``, the event id).

- ``none``: nothing.
- ``cloudfront`` (paths): ``CreateInvalidation``, at most 3000 paths each, the ``n``-th with
  ``CallerReference = f"{reference}-{n}"``.
- ``fastly`` (tags): ``POST {api}/service/{id}/purge`` with ``Surrogate-Key: k1 k2 …`` (≤ 256 keys each)
  and ``Fastly-Key: <token>``.
- ``cloudflare`` (tags): ``POST {api}/zones/{zone}/purge_cache`` with ``{"tags": […]}`` (≤ 100 tags each)
  and ``Authorization: Bearer <token>``.
- ``http`` (tags and paths): ``PURGE`` or ``BAN`` to every Varnish/nginx base URL: one request per
  ≤ 256 tags with ``Surrogate-Key`` (space-separated) and ``X-Cache-Tags`` (comma-separated), then
  one request per path (``{base}{path}``), up to 8 at once.

Tag-based providers ignore ``paths`` and CloudFront ignores ``tags`` (it cannot purge by tag).
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

import httpx

T = TypeVar("T")

CLOUDFRONT_MAX_PATHS = 3000
FASTLY_MAX_KEYS = 256
CLOUDFLARE_MAX_TAGS = 100
HTTP_MAX_TAGS = 256
HTTP_PATH_CONCURRENCY = 8  # path purges in flight at once per call
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


class CloudFrontPurger:
    """``cloudfront``: one invalidation per 3000 paths (sorted, deduplicated, each starting with ``/``).

    The ``n``-th batch has ``CallerReference = f"{reference}-{n}"``: retrying the same purge resubmits
    identical batches, which CloudFront answers with the existing invalidations instead of new ones.
    """

    def __init__(self, distribution_id: str, *, endpoint_url: str | None = None, client: Any = None) -> None:
        self.distribution_id = distribution_id
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.session.Session().client(
                "cloudfront",
                endpoint_url=endpoint_url,
                region_name="us-east-1",
                config=Config(
                    retries={"max_attempts": 8, "mode": "standard"}, connect_timeout=5, read_timeout=30
                ),
            )
        self.client = client

    def purge(self, tags: list[str], paths: list[str], reference: str) -> None:
        items = sorted(_unique([_path(p) for p in paths]))
        for n, batch in enumerate(_chunks(items, CLOUDFRONT_MAX_PATHS)):
            try:
                self.client.create_invalidation(
                    DistributionId=self.distribution_id,
                    InvalidationBatch={
                        "Paths": {"Quantity": len(batch), "Items": batch},
                        "CallerReference": f"{reference}-{n}",
                    },
                )
            except Exception as exc:
                raise CdnPurgeError(
                    f"cloudfront: invalidation {reference}-{n} of {len(batch)} paths on "
                    f"{self.distribution_id} failed: {exc}"
                ) from exc


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


class FastlyPurger(_HttpPurger):
    """``fastly``: surrogate-key purge, at most 256 keys per request."""

    provider = "fastly"

    def __init__(
        self,
        service_id: str,
        token: str,
        *,
        api_url: str = "https://api.fastly.com",
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(client)
        self.url = f"{api_url.rstrip('/')}/service/{service_id}/purge"
        self.token = token

    def purge(self, tags: list[str], paths: list[str], reference: str) -> None:
        for batch in _chunks(_unique(tags), FASTLY_MAX_KEYS):
            self._send(
                "POST",
                self.url,
                headers={
                    "Fastly-Key": self.token,
                    "Surrogate-Key": " ".join(batch),
                    "Accept": "application/json",
                },
            )


class CloudflarePurger(_HttpPurger):
    """``cloudflare``: purge by cache tag, at most 100 tags per request; ``success: false`` is a failure."""

    provider = "cloudflare"

    def __init__(
        self,
        zone_id: str,
        token: str,
        *,
        api_url: str = "https://api.cloudflare.com/client/v4",
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(client)
        self.url = f"{api_url.rstrip('/')}/zones/{zone_id}/purge_cache"
        self.token = token

    def purge(self, tags: list[str], paths: list[str], reference: str) -> None:
        for batch in _chunks(_unique(tags), CLOUDFLARE_MAX_TAGS):
            response = self._send(
                "POST", self.url, json={"tags": batch}, headers={"Authorization": f"Bearer {self.token}"}
            )
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and body.get("success") is False:
                raise CdnPurgeError(f"cloudflare: purge_cache refused: {body.get('errors')!r}")


class HttpPurger(_HttpPurger):
    """``http``: ``PURGE`` (or ``BAN``) to each Varnish/nginx base URL.

    Tags go in batches of 256 to the base URL itself with ``Surrogate-Key`` (space-separated) and
    ``X-Cache-Tags`` (comma-separated); then every path is sent as ``{method} {base}{path}``. Any 2xx
    is success; for a path, 404 is too (nginx ``proxy_cache_purge`` answers 404 for an uncached URL).
    """

    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        method: str = "PURGE",
        client: httpx.Client | None = None,
    ) -> None:
        if method.upper() not in ("PURGE", "BAN"):
            raise ValueError(f"method must be PURGE or BAN, not {method!r}")
        if not base_urls:
            raise ValueError("at least one base URL is needed")
        super().__init__(client)
        self.base_urls = [url.rstrip("/") for url in base_urls]
        self.method = method.upper()
        self._base_paths = {url: urlsplit(url).path for url in self.base_urls}
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None  # threads (and their connections) kept between calls

    def purge(self, tags: list[str], paths: list[str], reference: str) -> None:
        tag_batches = list(_chunks(_unique(tags), HTTP_MAX_TAGS))
        unique_paths = _unique([_path(p) for p in paths])
        for base in self.base_urls:
            for batch in tag_batches:
                self._send(
                    self.method,
                    f"{base}/",
                    headers={"Surrogate-Key": " ".join(batch), "X-Cache-Tags": ",".join(batch)},
                )
        # One request per path, several in flight at once, each thread on its own kept-alive
        # http.client connection: a batch of files costs a few round trips of the cache, and
        # little CPU per request (httpx costs several times more per request).
        targets = [(base, path) for base in self.base_urls for path in unique_paths]
        if len(targets) <= 1:
            for base, path in targets:
                self._purge_path(base, path)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=HTTP_PATH_CONCURRENCY, thread_name_prefix="cms-purge")
        list(self._pool.map(lambda target: self._purge_path(*target), targets))

    def close(self) -> None:
        super().close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def _purge_path(self, base: str, path: str) -> None:
        url = f"{base}{path}"
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile: reconnect once
            conn = self._connection(base)
            try:
                conn.request(self.method, self._base_paths[base] + path, headers={"Content-Length": "0"})
                response = conn.getresponse()
                status, text = response.status, response.read()[:200]
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.connections.pop(base, None)
                if attempt == 2:
                    raise CdnPurgeError(f"{self.provider}: {self.method} {url} failed: {exc!r}") from exc
                continue
            if response.will_close:
                conn.close()
                self._local.connections.pop(base, None)
            if not (200 <= status < 300 or status == 404):
                raise CdnPurgeError(f"{self.provider}: {self.method} {url} answered {status}: {text!r}")
            return

    def _connection(self, base: str) -> http.client.HTTPConnection:
        connections: dict[str, http.client.HTTPConnection] = getattr(self._local, "connections", None) or {}
        self._local.connections = connections
        conn = connections.get(base)
        if conn is None:
            parts = urlsplit(base)
            timeout = DEFAULT_TIMEOUT.read or 10.0
            conn = (
                http.client.HTTPSConnection(parts.netloc, timeout=timeout) if parts.scheme == "https"
                else http.client.HTTPConnection(parts.netloc, timeout=timeout)
            )
            connections[base] = conn
        return conn
