"""`cms up` (both apps, the worker and the scheduler) and `cms serve` (one app).

Both resolve the database and Redis (embedded unless configured), migrate, start the servers under
the supervisor and wait for /readyz; `cms up` also makes the first admin key and prints the banner.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from ..config import Settings
from .errors import CliError
from .supervisor import Supervisor, _probe_host, check_port_free, child_env, wait_ready

log = logging.getLogger("cms.cli")

READY_TIMEOUT = 90.0  # seconds `cms up` waits for /readyz before warning

# What `cms up` runs beside the two apps.
BACKGROUND_PROCESSES: tuple[str, ...] = ("worker", "scheduler")


# --------------------------------------------------------------------------- database helpers


async def _connect(url: str) -> Any:
    from ..db.pool import connect

    return await connect(url)


@dataclass
class Prepared:
    applied: list[int]
    admin_secret: str | None = None
    bootstrap_created: bool = False
    management_keys: int = 0


async def prepare_database(
    database_url: str, settings: Settings, *, migrate_schema: bool = True, bootstrap: bool = True
) -> Prepared:
    """Migrate and ensure CMS_BOOTSTRAP_KEY; counts the active management keys."""
    import asyncpg

    from ..credentials.service import ensure_bootstrap_key
    from ..db.migrate import migrate

    conn = await _connect(database_url)
    try:
        result = Prepared(applied=await migrate(conn) if migrate_schema else [])
        try:
            if bootstrap and settings.bootstrap_key:
                result.bootstrap_created = await ensure_bootstrap_key(conn, settings.bootstrap_key)
            result.management_keys = await _active_management_keys(conn)
        except asyncpg.UndefinedTableError:
            raise CliError("the database has no schema yet: run `cms migrate`") from None
        return result
    finally:
        await conn.close()


async def _active_management_keys(conn: Any) -> int:
    return int(
        await conn.fetchval("SELECT count(*) FROM api_keys WHERE kind = 'management' AND revoked_at IS NULL")
    )


async def first_admin_key(database_url: str) -> str | None:
    """On the first start (no active management key at all), make an admin key with every scope."""
    from ..credentials.service import create_admin_key

    conn = await _connect(database_url)
    try:
        if await _active_management_keys(conn):
            return None
        return await create_admin_key(conn, "admin")
    finally:
        await conn.close()


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """CMS_DATABASE_URL, or the embedded PostgreSQL under CMS_DATA_DIR for the duration.

    A PostgreSQL already started by `cms up` on the same data dir is shared, not restarted.
    """
    if settings.database_url:
        yield settings.database_url
        return
    from ..runtime import ensure_database, start_embedded_postgres

    url, stop = start_embedded_postgres(settings.data_dir)
    try:
        asyncio.run(ensure_database(url))
        yield url
    finally:
        stop()


# --------------------------------------------------------------------------- servers


def _describe(url: str, embedded: bool, what: str, where: Path) -> str:
    if embedded:
        return f"embedded {what} under {where}"
    parts = urlsplit(url)
    return f"{what} at {parts.hostname or parts.path}{':' + str(parts.port) if parts.port else ''}"


def _run_servers(
    settings: Settings, apps: list[tuple[str, int]], workers: int, *, admin_key: bool, migrate_schema: bool,
    bootstrap: bool, background: tuple[str, ...] = (),
) -> int:
    from ..runtime import resolve_services

    for app, port in apps:
        check_port_free(settings.host, port, f"CMS_{app.upper()}_PORT")
    embedded_db, embedded_redis = not settings.database_url, not settings.redis_url
    if embedded_db or embedded_redis:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor()
    supervisor.install_signal_handlers()
    services = None
    try:
        if embedded_db or embedded_redis:
            log.info("starting embedded services under %s", settings.data_dir.resolve())
        services = asyncio.run(resolve_services(settings))
        prepared = asyncio.run(
            prepare_database(services.database_url, settings, migrate_schema=migrate_schema, bootstrap=bootstrap)
        )
        for version in prepared.applied:
            log.info("applied migration %04d", version)
        supervisor.started = True
        for app, port in apps:
            extra = {f"CMS_{app.upper()}_PORT": str(port)}
            supervisor.start_server(
                app, settings.host, port, workers, child_env(services.database_url, services.redis_url, **extra)
            )
        for command in background:
            # worker / scheduler: the same `cms` command, pointed at the resolved services.
            supervisor.start(
                command, [sys.executable, "-m", "cms.app.cli", command],
                child_env(services.database_url, services.redis_url),
            )
        probe = _probe_host(settings.host)
        ready = wait_ready(supervisor, [f"http://{probe}:{port}/readyz" for _, port in apps], READY_TIMEOUT)
        dead = supervisor.dead_child()
        if dead is not None:
            log.error("%s exited during start-up (code %s); stopping everything", *dead)
            return 1
        if supervisor.stop_requested:
            return 0
        if admin_key and not settings.bootstrap_key:
            # Made only once the servers are up, so a failed first start does not swallow the key.
            prepared.admin_secret = asyncio.run(first_admin_key(services.database_url))
            prepared.management_keys += prepared.admin_secret is not None
        _banner(settings, apps, services.database_url, services.redis_url, embedded_db, embedded_redis, prepared,
                ready, admin_key)
        return supervisor.run()
    finally:
        supervisor.started = True
        supervisor.stop()
        if services is not None:
            if services.handles:
                log.info("stopping embedded services")
            services.stop()
        supervisor.restore_signal_handlers()
        log.info("stopped")


def _banner(
    settings: Settings, apps: list[tuple[str, int]], database_url: str, redis_url: str, embedded_db: bool,
    embedded_redis: bool, prepared: Prepared, ready: bool, show_keys: bool,
) -> None:
    data_dir = settings.data_dir.resolve()
    names = {app for app, _ in apps}
    lines = ["", "CMS is running." if ready else "CMS is running, but /readyz does not answer 200 yet (see the log)."]
    if "delivery" in names:
        d = settings.delivery_url
        lines += [
            f"  delivery     {d}/api/v1/   (docs {d}/docs, OpenAPI {d}/openapi.json)",
            f"  files (CDN)  {settings.assets_url}/",
        ]
    if "management" in names:
        m = settings.management_url
        lines.append(f"  management   {m}/v1/   (docs {m}/docs, OpenAPI {m}/openapi.json)")
    lines += [
        f"  database     {_describe(database_url, embedded_db, 'PostgreSQL', data_dir / 'postgres')}",
        f"  redis        {_describe(redis_url, embedded_redis, 'Valkey', data_dir / 'valkey')}",
    ]
    if show_keys:
        lines.append("")
        if prepared.admin_secret:
            lines += [
                "Admin key (management, every scope). It is shown only this once; keep it somewhere safe:",
                f"  {prepared.admin_secret}",
                f"  e.g. curl -H 'Authorization: Bearer {prepared.admin_secret}' {settings.management_url}/v1/keys",
            ]
        elif settings.bootstrap_key:
            lines.append("Admin key: the value of CMS_BOOTSTRAP_KEY (management, every scope).")
        else:
            lines += [
                f"An admin key already exists ({prepared.management_keys} active management key(s)); "
                "it was printed on the first start.",
                "  Make another: cms keys create --name admin2 --kind management --all-scopes",
            ]
    lines += ["", "Press Ctrl-C to stop.", ""]
    print("\n".join(lines), flush=True)


# --------------------------------------------------------------------------- commands


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    apps = [("delivery", settings.delivery_port), ("management", settings.management_port)]
    if settings.delivery_port == settings.management_port:
        raise CliError("CMS_DELIVERY_PORT and CMS_MANAGEMENT_PORT must differ")
    return _run_servers(
        settings, apps, args.workers, admin_key=True, migrate_schema=True, bootstrap=True,
        background=BACKGROUND_PROCESSES,
    )


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    if args.port is not None:
        settings = msgspec.structs.replace(settings, **{f"{args.app}_port": args.port})
    port = getattr(settings, f"{args.app}_port")
    return _run_servers(
        settings, [(args.app, port)], args.workers, admin_key=False, migrate_schema=not args.no_migrate,
        bootstrap=args.app == "management",
    )
