"""Helpers shared by several test modules: local HTTP servers and the query tests' content types."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Collection, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from cms.app.schema.model import ContentType, Field

# ---------------------------------------------------------------------------------------------
# local HTTP servers on 127.0.0.1 (an ephemeral port), served from a daemon thread


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> Self:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Recorded:
    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers  # names lower-cased
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Recorder(LocalServer):
    """Records every request; answers ``status`` with ``reply`` as JSON (``reply=None``: an empty body)."""

    def __init__(self, *, status: int = 200, reply: Any = None) -> None:
        super().__init__(_RecordingHandler)
        self.requests: list[Recorded] = []
        self.status = status
        self.reply = reply

    def snapshot(self) -> list[Recorded]:
        with self.lock:
            return list(self.requests)


class _RecordingHandler(_QuietHandler):
    server: Recorder

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.requests.append(
                Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            status, reply = self.server.status, self.server.reply
        self.send_response(status)
        if reply is None:
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = json.dumps(reply).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PURGE = do_BAN = _handle


_S3_ERRORS = {
    500: (b"InternalError", b"We encountered an internal error. Please try again."),
    503: (b"ServiceUnavailable", b"Please reduce your request rate."),
}


class FailingProxy(LocalServer):
    """An HTTP proxy in front of ``upstream`` (moto) that fails the first ``failures`` requests.

    Failed requests get S3 error responses with ``statuses`` in turn (500 or 503); with
    ``methods``, only requests with those methods fail (and count). Raising ``failures`` later
    fails that many more. ``seen`` holds (method, path, status) for every request, status 0
    when forwarded.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        failures: int,
        *,
        statuses: Sequence[int] = (503,),
        methods: Collection[str] | None = None,
    ) -> None:
        super().__init__(_ProxyHandler)
        self.upstream = upstream
        self.failures = failures
        self.statuses = tuple(statuses)
        self.methods = None if methods is None else {m.upper() for m in methods}
        self.failed = 0
        self.forwarded = 0
        self.seen: list[tuple[str, str, int]] = []

    def next_failure(self, method: str) -> int | None:
        """The status to fail this request with, or None to forward it. Call under ``lock``."""
        if self.failed >= self.failures or (self.methods is not None and method not in self.methods):
            return None
        self.failed += 1
        return self.statuses[(self.failed - 1) % len(self.statuses)]


class _ProxyHandler(_QuietHandler):
    server: FailingProxy

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._body()
        with self.server.lock:
            status = self.server.next_failure(self.command)
            if status is None:
                self.server.forwarded += 1
            self.server.seen.append((self.command, self.path, status or 0))
        if status is not None:
            self._fail(status)
        else:
            self._forward(body)

    def _fail(self, status: int) -> None:
        code, message = _S3_ERRORS.get(status, (b"InternalError", b"x"))
        payload = (
            b""
            if self.command == "HEAD"
            else b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>' + code + b"</Code><Message>" + message
            + b"</Message></Error>"
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _forward(self, body: bytes) -> None:
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "content-length")
        }
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=30)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "content-length", "connection", "server", "date"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


# ---------------------------------------------------------------------------------------------
# content types for the list query tests (tests/unit/test_query_parse.py, tests/integration/test_query_engine.py)

AUTHOR = ContentType(
    id="author", name="Author", description=None, display_field="name",
    fields=[Field(id="name", type="text", localized=True), Field(id="age", type="integer")],
)
TAG = ContentType(id="tag", name="Tag", description=None, display_field=None, fields=[Field(id="label", type="text")])


def article_type(*extra: Field) -> ContentType:
    """An article with a field of every type, plus ``extra`` fields at the end."""
    return ContentType(
        id="article", name="Article", description=None, display_field="title",
        fields=[
            Field(id="title", type="text", localized=True),
            Field(id="slug", type="slug", from_="title"),
            Field(id="body", type="long_text"),
            Field(id="rich", type="rich_text"),
            Field(id="rank", type="integer"),
            Field(id="score", type="number"),
            Field(id="flag", type="boolean"),
            Field(id="day", type="date"),
            Field(id="at", type="datetime"),
            Field(id="kind", type="enum", values=["news", "blog"]),
            Field(id="meta", type="json"),
            Field(id="author", type="reference", to=["author"]),
            Field(id="tags", type="reference", to=["tag"], list=True),
            Field(id="cover", type="asset"),
            *extra,
        ],
    )
