"""`Idempotency-Key` on management writes (API.md, "Writes"), as pure ASGI around the app.

A write carrying the header runs inside one transaction that this layer opens on a connection the
route borrows (`routing.pool` hands it out; the services' own transactions become savepoints), and
its answer is stored in that same transaction: a crash leaves either the write and its answer, or
neither. A transaction-scoped advisory lock on (credential, key) makes a concurrent repeat a 409
`idempotency-in-progress`; a repeat after commit replays the stored status, body, Content-Type,
ETag and Location with `Idempotent-Replayed: true`; the same key with another request is a 422
`idempotency-key-reused`. Answers are kept 24 h per credential. 5xx answers (and 401/403/429,
which say nothing about the write) are not stored, and a 5xx rolls the write back.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from ..credentials.keys import presented_in
from ..problems import PROBLEM_JSON, ProblemError, problem_body
from . import repository

METHODS = {"POST", "PUT", "PATCH", "DELETE"}
HEADER = b"idempotency-key"
KEY = re.compile(r"[\x21-\x7e]{1,255}")
KEPT_HEADERS = (b"content-type", b"etag", b"location")
NOT_STORED = {401, 403, 429}
EXCLUDED = ("/oauth/",)  # RFC endpoints with their own semantics


class BorrowedPool:
    """What `routing.pool` gives a route during an idempotent write: the write's connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        yield self.conn


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    """Method, path and the body's canonical JSON (keys sorted), so key order does not matter."""
    try:
        canonical = msgspec.json.encode(msgspec.json.decode(body), order="sorted") if body else b""
    except (msgspec.DecodeError, RecursionError):
        canonical = body
    return hashlib.sha256(b"\x00".join([method.encode(), path.encode(), canonical])).digest()


class IdempotentWrites:
    def __init__(self, app: Any, inner: Any) -> None:
        self.app = app  # the Litestar app: its state has the pool, the resolver and the settings
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        key = self._key(scope)
        if key is None:
            await self.inner(scope, receive, send)
            return
        state = self.app.state
        known = scope["state"].get("presented")
        if known is not None:  # the rate limits (the layer before this one) have resolved it
            credential = known[1]
        else:
            presented = presented_in(scope["headers"])
            credential = await state.credentials.resolve(presented, allow_bootstrap=True) if presented else None
        if credential is None:
            await self.inner(scope, receive, send)  # the app answers 401
            return
        if not KEY.fullmatch(key):
            await self._problem(ProblemError(400, "malformed", "Idempotency-Key: 1 to 255 visible ASCII characters",
                                             errors=[{"parameter": "Idempotency-Key", "detail": "is not valid"}]),
                                scope, send)
            return
        body, more = await self._body(receive, state.settings.max_bulk_body_bytes)
        if more:  # too large to fingerprint: the app refuses it (413) anyway
            await self.inner(scope, _replay_body(body, more, receive), send)
            return
        print_ = fingerprint(scope["method"], scope["path"], body)
        async with state.pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                answer = await self._run(conn, credential.id, key, print_, scope, body, receive)
            except BaseException:
                await transaction.rollback()
                raise
            if answer.commit:
                await transaction.commit()
            else:
                await transaction.rollback()
        await self._send(answer, scope, send)

    def _key(self, scope: dict[str, Any]) -> str | None:
        if scope["type"] != "http" or scope.get("method") not in METHODS or scope["path"].startswith(EXCLUDED):
            return None
        for name, value in scope["headers"]:
            if name == HEADER:
                return value.decode("latin-1")
        return None

    async def _run(
        self, conn: Any, credential_id: str, key: str, print_: bytes, scope: dict[str, Any], body: bytes, receive: Any,
    ) -> _Answer:
        if not await repository.try_lock(conn, credential_id, key):
            return _Answer.problem(ProblemError(409, "idempotency-in-progress",
                                                "a request with this Idempotency-Key is still running; retry later"))
        found = await repository.stored(conn, credential_id, key)
        if found is not None:
            if bytes(found["fingerprint"]) != print_:
                return _Answer.problem(ProblemError(
                    422, "idempotency-key-reused", "this Idempotency-Key was used for another request",
                ))
            headers = [(k.encode(), v.encode()) for k, v in found["headers"].items()]
            return _Answer(found["status"], [*headers, (b"idempotent-replayed", b"true")], bytes(found["body"]), False)
        # Run the write on this connection, in this transaction.
        scope["state"]["borrowed_pool"] = BorrowedPool(conn)
        captured = _Answer(500, [], b"", False)

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                captured.status = message["status"]
                captured.headers = list(message.get("headers", ()))
            elif message["type"] == "http.response.body":
                captured.body += message.get("body", b"")

        await self.inner(scope, _replay_body(body, False, receive), capture)
        if captured.status >= 500:
            return captured  # rolled back, not stored
        if captured.status not in NOT_STORED:
            kept = {k.decode(): v.decode("latin-1") for k, v in captured.headers if k.lower() in KEPT_HEADERS}
            await repository.store(conn, credential_id, key, print_, captured.status, kept, captured.body)
        captured.commit = True
        return captured

    async def _body(self, receive: Any, limit: int) -> tuple[bytes, bool]:
        """The request body, up to `limit` bytes (True: there is more)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), False
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                return b"".join(chunks), message.get("more_body", False)
            if not message.get("more_body", False):
                return b"".join(chunks), False

    async def _send(self, answer: _Answer, scope: dict[str, Any], send: Any) -> None:
        headers = [(k, v) for k, v in answer.headers if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(answer.body)).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})

    async def _problem(self, problem: ProblemError, scope: dict[str, Any], send: Any) -> None:
        await self._send(_Answer.problem(problem, scope["state"].get("request_id")), scope, send)


class _Answer:
    __slots__ = ("status", "headers", "body", "commit")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, commit: bool) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.commit = commit

    @classmethod
    def problem(cls, problem: ProblemError, request_id: str | None = None) -> _Answer:
        return cls(problem.status, [(b"content-type", PROBLEM_JSON.encode())], problem_body(problem, request_id), False)


def _replay_body(body: bytes, more: bool, receive: Any) -> Any:
    """A `receive` that gives the body already read first, then the rest from the client."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay
