"""The webhook sender's HTTP/1.1 client: one POST over a kept-alive connection to a checked address.

Why not httpx: at hundreds of deliveries a second its pool, h11 and anyio layers cost ~0.5–1.5 ms
of CPU per POST (bench/README.md, "Where the sender's time goes"), most of the sender's work. A
webhook needs little of HTTP: one request shape, no redirects, no cookies, no compression, the
first kilobyte of the answer. This client does that and nothing else:

- connections per (scheme, address, port, host), idle ones kept up to `per_target` for
  `idle_seconds`; TLS verified against the URL's host name (SNI) while the TCP connection goes to
  the address the SSRF guard checked;
- the answer's body is read to its end when it is small (so the connection can be reused), else the
  connection is dropped after the kept part; chunked, Content-Length and close-delimited bodies;
  1xx interim answers skipped; header lines and sizes bounded;
- a reused connection that the server closed meanwhile (nothing at all came back) is retried once
  on a new connection, as browsers and httpx do; deliveries are at least once anyway.

The caller bounds the whole exchange with its own timeout (cancellation closes the connection).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import OrderedDict
from typing import NamedTuple
from urllib.parse import quote

MAX_HEADER_LINE = 8192
MAX_HEADERS = 100
MAX_DRAIN = 256 * 1024  # body bytes read to keep a connection; beyond, it is closed instead


class ProtocolError(Exception):
    """The answer is not HTTP/1.x as this client reads it."""


class Answer(NamedTuple):
    status: int
    body: bytes  # the first `keep` bytes


class _Stale(Exception):
    """A kept-alive connection that answered nothing (closed by the server while idle)."""


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def close(self) -> None:
        self.writer.close()


class WebhookHttp:
    def __init__(
        self, *, per_target: int = 4, max_targets: int = 1024, idle_seconds: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.per_target = per_target
        self.max_targets = max_targets
        self.idle_seconds = idle_seconds
        self.ssl_context = ssl_context
        self._idle: OrderedDict[tuple[str, str, int, str], list[_Connection]] = OrderedDict()

    async def post(
        self, scheme: str, address: str, port: int, host: str, host_header: str, path: str,
        headers: list[tuple[str, str]], body: bytes, keep: int = 1024,
    ) -> Answer:
        """POST `body` to `path` at `address:port` (TLS for https, verified for `host`)."""
        head = _request_head(path, host_header, headers, len(body))
        key = (scheme, address, port, host)
        while (conn := self._take(key)) is not None:
            try:
                return await self._exchange(key, conn, head, body, keep)
            except _Stale:
                continue
        conn = await self._open(scheme, address, port, host)
        try:
            return await self._exchange(key, conn, head, body, keep)
        except _Stale as exc:
            raise ProtocolError("the server closed the connection without an answer") from exc

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    def _take(self, key: tuple[str, str, int, str]) -> _Connection | None:
        conns = self._idle.get(key)
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            if now - conn.idle_since < self.idle_seconds and not conn.reader.at_eof() and not _buffered(conn.reader):
                return conn
            conn.close()
        return None

    def _give_back(self, key: tuple[str, str, int, str], conn: _Connection) -> None:
        if _buffered(conn.reader):  # more than one answer came: the next one would be taken for ours
            conn.close()
            return
        conns = self._idle.setdefault(key, [])
        self._idle.move_to_end(key)
        if len(conns) >= self.per_target:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conns.append(conn)
        while len(self._idle) > self.max_targets:
            _, dropped = self._idle.popitem(last=False)
            for old in dropped:
                old.close()

    async def _open(self, scheme: str, address: str, port: int, host: str) -> _Connection:
        if scheme == "https":
            context = self.ssl_context or _default_context()
            reader, writer = await asyncio.open_connection(
                address, port, ssl=context, server_hostname=host, limit=MAX_HEADER_LINE * 2,
            )
        else:
            reader, writer = await asyncio.open_connection(address, port, limit=MAX_HEADER_LINE * 2)
        return _Connection(reader, writer)

    async def _exchange(
        self, key: tuple[str, str, int, str], conn: _Connection, head: bytes, body: bytes, keep: int,
    ) -> Answer:
        reused = conn.idle_since > 0
        try:
            conn.writer.write(head + body)
            await conn.writer.drain()
            status, reusable, kept = await _read_answer(conn.reader, keep, reused)
        except (ConnectionResetError, BrokenPipeError) as exc:
            conn.close()
            if reused:
                raise _Stale from exc
            raise
        except BaseException:  # cancelled (the caller's timeout) included: the connection is unusable
            conn.close()
            raise
        if reusable:
            self._give_back(key, conn)
        else:
            conn.close()
        return Answer(status, kept)


def _buffered(reader: asyncio.StreamReader) -> int:
    """Bytes received and not read yet (asyncio has no public accessor for its buffer)."""
    return len(getattr(reader, "_buffer", b""))


def _request_head(path: str, host_header: str, headers: list[tuple[str, str]], length: int) -> bytes:
    # A path with non-ASCII characters goes out percent-encoded as UTF-8 (what was encoded stays).
    path = quote(path, safe="/?&=%:@!$'()*+,;~-._[]")
    lines = [f"POST {path} HTTP/1.1", f"host: {host_header}"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} is not a valid header")
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_answer(reader: asyncio.StreamReader, keep: int, reused: bool) -> tuple[int, bool, bytes]:
    """(status, whether the connection may be reused, the first `keep` bytes of the body)."""
    while True:
        try:
            line = await reader.readline()
        except ValueError as exc:  # a line past the reader's limit
            raise ProtocolError("status line too long") from exc
        if not line:
            if reused:
                raise _Stale
            raise ProtocolError("the server closed the connection without an answer")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
            raise ProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
        status = int(parts[1])
        version = parts[0]
        headers = await _read_headers(reader)
        if 100 <= status < 200:
            continue  # 100 Continue, 103 Early Hints: the answer follows
        break
    connection = headers.get(b"connection", b"").lower()
    reusable = b"close" not in connection and (version != b"HTTP/1.0" or b"keep-alive" in connection)
    if status in (204, 304):
        return status, reusable, b""
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        kept, complete = await _read_chunked(reader, keep)
        return status, reusable and complete, kept
    length_text = headers.get(b"content-length")
    if length_text is not None:
        if not length_text.strip().isdigit():
            raise ProtocolError("bad Content-Length")
        length = int(length_text)
        if length <= MAX_DRAIN:
            data = await reader.readexactly(length)
            return status, reusable, data[:keep]
        return status, False, await reader.readexactly(keep) if keep <= length else b""
    # No length: the body ends when the server closes the connection.
    kept = await reader.read(keep) if keep else b""
    return status, False, kept


async def _read_headers(reader: asyncio.StreamReader) -> dict[bytes, bytes]:
    headers: dict[bytes, bytes] = {}
    for _ in range(MAX_HEADERS + 1):
        try:
            line = await reader.readline()
        except ValueError as exc:
            raise ProtocolError("header line too long") from exc
        if line in (b"\r\n", b"\n"):
            return headers
        if not line:
            raise ProtocolError("the answer's headers ended early")
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProtocolError("malformed header line")
        headers[name.strip().lower()] = value.strip()
    raise ProtocolError(f"more than {MAX_HEADERS} header lines")


async def _read_chunked(reader: asyncio.StreamReader, keep: int) -> tuple[bytes, bool]:
    """The first `keep` bytes, and whether the body was read to its end (≤ MAX_DRAIN)."""
    kept = bytearray()
    total = 0
    while True:
        size_line = await reader.readline()
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise ProtocolError("bad chunk size") from exc
        if size == 0:
            await _read_headers(reader)  # trailers, then the blank line
            return bytes(kept), True
        total += size
        if total > MAX_DRAIN:
            if len(kept) < keep:
                kept += await reader.readexactly(min(size, keep - len(kept)))
            return bytes(kept), False
        chunk = await reader.readexactly(size)
        if len(kept) < keep:
            kept += chunk[: keep - len(kept)]
        if await reader.readexactly(2) != b"\r\n":
            raise ProtocolError("bad chunk ending")


_CONTEXT: ssl.SSLContext | None = None


def _default_context() -> ssl.SSLContext:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = ssl.create_default_context()
    return _CONTEXT
