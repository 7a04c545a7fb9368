"""Helpers shared by the test modules (fixtures stay in conftest.py): the test database services,
the two apps as clients, request bodies of the usual content types, waiting for eventual effects,
local HTTP servers on 127.0.0.1 and the query tests' content types."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from cms.app.config import PipelineConfig, Settings, load_settings
from cms.app.schema.model import (
    ContentType,
    Field,
)
from cms.workers.main import WorkerHost

# ---------------------------------------------------------------------------------------------
# the test database services: one PostgreSQL cluster, a migrated template database per session

TEMPLATE = f"cms_tmpl_{os.getpid()}"


class TestServices:
    def __init__(self, admin_url: str, redis_url: str) -> None:
        self.admin_url = admin_url
        self.redis_url = redis_url

    def url_for(self, database: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{database}"))


async def clone_database(services: TestServices) -> str:
    """A fresh database cloned from the migrated template; returns its URL."""
    name = f"cms_t_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(services.admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    finally:
        await conn.close()
    return services.url_for(name)


# ---------------------------------------------------------------------------------------------
# the two apps, in-process over ASGI

ADMIN_SECRET = "test-bootstrap-admin-secret-0123456789abcdef"
UNLIMITED = "1000000000/1"
BASE_URLS = {"management": "http://management", "delivery": "http://delivery"}


class Apps:
    def __init__(self, management_app: Any, delivery_app: Any, settings: Any, database_url: str) -> None:
        self.management_app = management_app  # the Litestar apps (their state: caches, pools)
        self.delivery_app = delivery_app
        self.management = self.client("management", ADMIN_SECRET)  # with the admin key
        self.delivery = self.client("delivery")  # without credentials
        self.settings = settings
        self.database_url = database_url
        self.delivery_key: str | None = None

    def client(self, app: str, secret: str | None = None) -> httpx.AsyncClient:
        """Another client of one app, with this secret as its Bearer credential (None: none)."""
        headers = {"Authorization": f"Bearer {secret}"} if secret is not None else {}
        target = self.management_app if app == "management" else self.delivery_app
        return httpx.AsyncClient(transport=httpx.ASGITransport(target), base_url=BASE_URLS[app], headers=headers)

    async def key(self, kind: str = "delivery", **extra: Any) -> str:
        response = await self.management.post("/v1/keys", json={"name": f"test {kind}", "kind": kind, **extra})
        assert response.status_code == 201, response.text
        return response.json()["data"]["secret"]

    async def reader(self) -> Any:
        """A delivery client authorised with a delivery key."""
        if self.delivery_key is None:
            self.delivery_key = await self.key("delivery")
        self.delivery.headers["Authorization"] = f"Bearer {self.delivery_key}"
        return self.delivery


@contextlib.asynccontextmanager
async def open_apps(
    database_url: str, redis_url: str, data_dir: Path, env: dict[str, str] | None = None
) -> AsyncIterator[Apps]:
    """Both apps, in-process with their lifespans, on this database (given the admin key) and Redis,
    with these CMS_* settings besides the data directory."""
    from asgi_lifespan import LifespanManager

    from cms.app.config import load_settings
    from cms.app.credentials.service import ensure_bootstrap_key
    from cms.app.db.pool import connect
    from cms.app.server import create_delivery_app, create_management_app

    settings = load_settings({
        "CMS_DATA_DIR": str(data_dir), "CMS_BOOTSTRAP_KEY": ADMIN_SECRET,
        # Tests make thousands of requests from one address: limits that bind are tested on their own.
        "CMS_RATE_LIMIT_MANAGEMENT": UNLIMITED, "CMS_RATE_LIMIT_DELIVERY": UNLIMITED,
        # Redis is shared by the whole session: each set of apps keeps its own rate-limit state.
        "CMS_BROKER_NAMESPACE": f"cms-test-{uuid.uuid4().hex[:12]}", **(env or {}),
    })
    conn = await connect(database_url)
    try:
        await ensure_bootstrap_key(conn, ADMIN_SECRET)
    finally:
        await conn.close()
    management_app = create_management_app(settings, database_url, redis_url)
    delivery_app = create_delivery_app(settings, database_url, redis_url)
    # Generous: on a loaded CI machine a pool's close can take more than the default 5 s.
    async with LifespanManager(management_app, shutdown_timeout=30), LifespanManager(delivery_app, shutdown_timeout=30):
        apps = Apps(management_app, delivery_app, settings, database_url)
        async with apps.management, apps.delivery:
            yield apps


# ---------------------------------------------------------------------------------------------
# workers in the test process

def fast_config(**overrides: Any) -> PipelineConfig:
    """Short intervals so tests settle quickly; a namespace of its own per call."""
    values: dict[str, Any] = {
        "lease_seconds": 5.0, "sweep_interval": 0.5, "reenqueue_after": 3.0, "relay_interval": 0.2,
        "poll_ms": 50, "worker_threads": 4, "backoff": (0.2, 0.5, 1.0), "namespace": f"cms-test-{uuid.uuid4().hex[:12]}",
    }
    values.update(overrides)
    return PipelineConfig(**values)


class Hosts:
    def __init__(self, services: Any, database_url: str, data_dir: Path) -> None:
        self.services = services
        self.database_url = database_url
        self.data_dir = data_dir
        self.started: list[WorkerHost] = []

    def settings(self, **env: str) -> Settings:
        return load_settings({"CMS_DATA_DIR": str(self.data_dir), **env})

    async def start(
        self, settings: Settings | None = None, config: PipelineConfig | None = None, *, redis_url: str | None = None,
        **options: Any,
    ) -> WorkerHost:
        host = WorkerHost(
            settings or self.settings(), self.database_url, redis_url or self.services.redis_url,
            config or fast_config(), **options,
        )
        await host.start()
        self.started.append(host)
        return host

    async def stop_all(self) -> None:
        while self.started:
            host = self.started.pop()
            await host.stop()
            try:
                client = host.broker.client.__class__.from_url(host.runtime.redis_url, socket_timeout=5)
                keys = list(client.scan_iter(f"{host.config.namespace}:*"))
                if keys:
                    client.delete(*keys)
                client.close()
            except Exception:
                pass


# Request bodies of the usual content types (the `blog` fixture creates them).
ARTICLE = {
    "name": "Article",
    "display_field": "title",
    "fields": [
        {"id": "title", "type": "text", "required": True, "localized": True, "validations": {"max_length": 200}},
        {"id": "slug", "type": "slug", "from": "title", "unique": True},
        {"id": "body", "type": "rich_text", "localized": True},
        {"id": "rank", "type": "integer", "indexed": True},
        {"id": "author", "type": "reference", "to": ["author"]},
        {"id": "tags", "type": "reference", "to": ["tag"], "list": True},
    ],
}
AUTHOR = {"name": "Author", "fields": [{"id": "name", "type": "text", "required": True}]}
TAG = {"name": "Tag", "fields": [{"id": "label", "type": "text"}]}


async def eventually(check: Any, timeout: float = 3.0) -> Any:
    """Retry an async check until it stops raising AssertionError (for cache invalidation)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.02)


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
    """Records every request; answers ``status`` with ``reply`` as JSON (``reply=None``: an empty body),
    after ``delay`` seconds (a slow or hanging receiver)."""

    def __init__(self, *, status: int = 200, reply: Any = None, delay: float = 0.0) -> None:
        super().__init__(_RecordingHandler)
        self.requests: list[Recorded] = []
        self.status = status
        self.reply = reply
        self.delay = delay

    def snapshot(self) -> list[Recorded]:
        with self.lock:
            return list(self.requests)


class _RecordingHandler(_QuietHandler):
    server: Recorder

    def _handle(self) -> None:
        expected = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(expected)
        if len(body) < expected:
            return  # the sender died mid-request (a test kills it): no request arrived, as for a real server
        with self.server.lock:
            self.server.requests.append(
                Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            status, reply, delay = self.server.status, self.server.reply, self.server.delay
        if delay:
            time.sleep(delay)
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

AUTHOR_TYPE = ContentType(
    id="author", name="Author", description=None, display_field="name",
    fields=[Field(id="name", type="text", localized=True), Field(id="age", type="integer")],
)
TAG_TYPE = ContentType(id="tag", name="Tag", description=None, display_field=None, fields=[Field(id="label", type="text")])


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
