"""Child processes of `cms up` / `cms serve`: granian servers, the worker and the scheduler.

The supervisor starts them in their own sessions, stops them all on SIGINT/SIGTERM/SIGHUP or when
one dies (SIGTERM, then SIGKILL after STOP_TIMEOUT), and waits for the apps' /readyz.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

from .errors import CliError

log = logging.getLogger("cms.cli")

STOP_TIMEOUT = 10.0  # seconds a child gets between SIGTERM and SIGKILL


def _parent_death_signal() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: die with `cms`


def _log_config(name: str) -> dict[str, Any]:
    """Granian's logging (its own and our app's, in every worker): one line each on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "line": {"format": f"%(asctime)s %(levelname)s [{name}] %(name)s: %(message)s"},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"},
        },
        "root": {"handlers": ["stderr"], "level": "INFO"},
        "loggers": {
            "_granian": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }


def granian_command(app: str, host: str, port: int, workers: int, log_config: Path | None = None) -> list[str]:
    command = [
        sys.executable, "-m", "granian",
        "--interface", "asgi", "--factory",
        "--host", host, "--port", str(port),
        "--workers", str(workers),
        "--loop", "uvloop",
        "--no-ws",
        "--workers-kill-timeout", str(int(STOP_TIMEOUT) - 2),
    ]
    if log_config is not None:
        command += ["--log-config", str(log_config)]
    return [*command, f"cms.app.asgi:{app}"]


class Supervisor:
    """Starts children, stops them all on SIGINT/SIGTERM or when one of them dies."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stop_requested = False
        self.force = False
        self.started = False  # until True, a signal interrupts start-up like Ctrl-C does
        self._temp_files: list[Path] = []
        self._previous: dict[int, Any] = {}

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            if not self.started:
                self.started = True  # interrupt once; clean-up runs with flag-only handling
                raise KeyboardInterrupt
            if self.stop_requested:
                self.force = True  # a second Ctrl-C: do not wait for graceful shutdown
            self.stop_requested = True
            log.info("%s received, stopping", signal.Signals(signum).name)

        # SIGHUP too: a closed terminal must not leave the embedded servers running.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous[sig] = signal.signal(sig, handler)

    def restore_signal_handlers(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def start_server(self, app: str, host: str, port: int, workers: int, env: dict[str, str]) -> None:
        fd, path = tempfile.mkstemp(prefix=f"cms-{app}-log-", suffix=".json")
        with os.fdopen(fd, "w") as out:
            json.dump(_log_config(app), out)
        self._temp_files.append(Path(path))
        self.start(app, granian_command(app, host, port, workers, Path(path)), env)

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log.info("starting %s", name)
        # Own session: a terminal's Ctrl-C reaches only `cms`, which then stops children in order.
        proc = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_parent_death_signal,  # safe: `cms` runs no threads
        )
        self.children.append((name, proc))

    def dead_child(self) -> tuple[str, int] | None:
        for name, proc in self.children:
            code = proc.poll()
            if code is not None:
                return name, code
        return None

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop_requested and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def run(self) -> int:
        """Block until a stop signal (0) or the unexpected exit of a child (1)."""
        while not self.stop_requested:
            dead = self.dead_child()
            if dead is not None:
                log.error("%s exited unexpectedly (code %s); stopping everything", *dead)
                return 1
            self.sleep(0.2)
        return 0

    def stop(self) -> None:
        running = [(n, p) for n, p in self.children if p.poll() is None]
        for name, proc in running:
            log.info("stopping %s (pid %d)", name, proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, proc in running:
            while proc.poll() is None and time.monotonic() < deadline and not self.force:
                time.sleep(0.05)
            if proc.poll() is None:
                log.warning("%s did not stop within %.0f s; killing it", name, STOP_TIMEOUT)
        for _name, proc in self.children:
            # Kill each child's whole process group: also any worker a crashed server left behind.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.children.clear()
        for path in self._temp_files:
            path.unlink(missing_ok=True)
        self._temp_files.clear()


def _probe_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _ready(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200, f"{response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{exc.code} {exc.read(500).decode(errors='replace')}"
    except (OSError, ValueError) as exc:
        return False, str(exc)


def wait_ready(supervisor: Supervisor, urls: list[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    pending = list(urls)
    last = ""
    while pending and not supervisor.stop_requested:
        if supervisor.dead_child() is not None:
            return False
        ok, last = _ready(pending[0])
        if ok:
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            log.warning("%s is not ready after %.0f s (last answer: %s)", pending[0], timeout, last)
            return False
        supervisor.sleep(0.25)
    return not pending


def check_port_free(host: str, port: int, variable: str) -> None:
    if port == 0:
        raise CliError(f"{variable}=0: needs a fixed port")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise CliError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); is another server running? "
                f"Set {variable} to use another port."
            ) from None


def child_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CMS_DATABASE_URL"] = database_url
    env["CMS_REDIS_URL"] = redis_url
    env.update(extra)
    return env
