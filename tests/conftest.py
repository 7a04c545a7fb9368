"""Test services: real PostgreSQL and Redis/Valkey.

Embedded servers under .cms/test by default; CMS_DATABASE_URL / CMS_REDIS_URL select others.
Each test gets a fresh database cloned from a migrated template, so tests never see each
other's rows.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from cms.app.db.migrate import migrate
from cms.app.runtime import start_embedded_postgres, start_embedded_valkey
from tests.support import ARTICLE, AUTHOR, TAG, TEMPLATE, Apps, Hosts, TestServices, clone_database, open_apps

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("CMS_COUNT_QUERIES", "1")
TEST_DATA_DIR = Path(os.environ.get("CMS_TEST_DATA_DIR", ROOT / ".cms" / "test"))


@pytest.fixture(scope="session")
def services() -> Iterator[TestServices]:
    stops = []
    db_url = os.environ.get("CMS_DATABASE_URL")
    if not db_url:
        url, stop = start_embedded_postgres(TEST_DATA_DIR)
        db_url = url.replace("/cms?", "/postgres?")
        stops.append(stop)
    redis_url = os.environ.get("CMS_REDIS_URL")
    if not redis_url:
        # One Valkey per test session: parallel sessions must not share a pid file.
        run_dir = TEST_DATA_DIR / f"run-{os.getpid()}"
        redis_url, stop = start_embedded_valkey(run_dir)
        # Stops run in reverse: the server first (it needs its pid file), then its directory.
        stops.append(lambda: shutil.rmtree(run_dir, ignore_errors=True))
        stops.append(stop)
    svc = TestServices(db_url, redis_url)

    async def make_template() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
            await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(svc.url_for(TEMPLATE))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(make_template())
    yield svc

    async def drop_all() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            names = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1 OR datname = $2",
                f"cms_t_{os.getpid()}_%", TEMPLATE,
            )
            for row in names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop_all())
    for stop in reversed(stops):
        stop()


@pytest.fixture
async def database_url(services: TestServices) -> AsyncIterator[str]:
    """A fresh, migrated database for this test."""
    url = await clone_database(services)
    yield url
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(services.admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    from cms.app.db.pool import create_pool

    pool = await create_pool(database_url, min_size=1, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture
async def redis_client(services: TestServices) -> AsyncIterator[Any]:
    client = aioredis.from_url(services.redis_url, socket_timeout=5)
    yield client
    await client.aclose()


# ---------------------------------------------------------------------------------------------
# the two apps, in-process over ASGI, on a fresh database

@pytest.fixture
async def apps(database_url: str, services: TestServices, tmp_path: Path) -> AsyncIterator[Apps]:
    async with open_apps(database_url, services.redis_url, tmp_path / "data") as apps:
        yield apps


@pytest.fixture
def apps_with(database_url: str, services: TestServices, tmp_path: Path) -> Any:
    """`async with apps_with(CMS_X="1") as apps:` both apps on this test's database, with settings."""
    return lambda **env: open_apps(database_url, services.redis_url, tmp_path / "data", env)


@pytest.fixture
async def hosts(services: Any, database_url: str, tmp_path: Path) -> AsyncIterator[Hosts]:
    h = Hosts(services, database_url, tmp_path / "data")
    yield h
    await h.stop_all()


@pytest.fixture
async def blog(apps: Apps) -> Apps:
    """author, tag and article content types."""
    for type_id, body in (("author", AUTHOR), ("tag", TAG), ("article", ARTICLE)):
        response = await apps.management.put(f"/v1/content-types/{type_id}", json=body)
        assert response.status_code == 201, response.text
    return apps


# ---------------------------------------------------------------------------------------------
# AWS on loopback: moto's S3/CloudFront server, one per test session


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials for boto3's usual chain, and nothing from the machine's own AWS set-up."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
