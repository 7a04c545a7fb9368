"""``http`` (tags and paths): ``PURGE`` or ``BAN`` to every Varnish/nginx base URL: one request per
≤ 256 tags with ``Surrogate-Key`` (space-separated) and ``X-Cache-Tags`` (comma-separated), then
one request per path (``{base}{path}``), up to 8 at once.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx

from .base import DEFAULT_TIMEOUT, CdnPurgeError, _chunks, _HttpPurger, _path, _unique

HTTP_MAX_TAGS = 256
HTTP_PATH_CONCURRENCY = 8  # path purges in flight at once per call


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
