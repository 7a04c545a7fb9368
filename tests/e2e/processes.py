"""Running `cms up` as a user does, for the end-to-end tests: a process with its output in files."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

BOOTSTRAP_KEY = "e2e_bootstrap_key_" + "0123456789abcdefghijkl"  # 40 characters
CMS_SCRIPT = Path(sys.executable).parent / "cms"
CMS = [str(CMS_SCRIPT)] if CMS_SCRIPT.exists() else [sys.executable, "-m", "cms.app.cli"]
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CmsUp:
    """One `cms up` process with its output in files (never a pipe that could fill up)."""

    def __init__(self, workdir: Path, env: dict[str, str], name: str) -> None:
        self.out_path = workdir / f"{name}.stdout"
        self.err_path = workdir / f"{name}.stderr"
        self.delivery = f"http://127.0.0.1:{env['CMS_DELIVERY_PORT']}"
        self.management = f"http://127.0.0.1:{env['CMS_MANAGEMENT_PORT']}"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen([*CMS, "up"], env=env, cwd=workdir, stdout=out, stderr=err)
        self.descendants: list[psutil.Process] = []

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def logs(self) -> str:
        return f"--- stdout\n{self.stdout}\n--- stderr (tail)\n{self.err_path.read_text(errors='replace')[-4000:]}"

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=2) as client:
            while True:
                assert self.proc.poll() is None, f"cms up exited with {self.proc.returncode}\n{self.logs()}"
                assert time.monotonic() < deadline, f"not ready after {START_TIMEOUT} s\n{self.logs()}"
                try:
                    ready = all(client.get(f"{base}/readyz").status_code == 200
                                for base in (self.delivery, self.management))
                except httpx.HTTPError:
                    ready = False
                if ready and "Press Ctrl-C to stop." in self.stdout:
                    break
                time.sleep(0.25)
        self.descendants = psutil.Process(self.proc.pid).children(recursive=True)
        assert self.descendants, "cms up should run its servers as child processes"

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"cms up did not exit within {STOP_TIMEOUT} s of SIGINT\n{self.logs()}")
        _, alive = psutil.wait_procs(self.descendants, timeout=5)
        assert not alive, f"children still running after cms up exited: {alive}"
        return code

    def kill(self) -> None:
        for child in [*self.descendants, self.proc]:
            try:
                child.kill()
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass
        self.proc.wait(10)


def stop_leftover_servers(data_dir: Path) -> None:
    """After a failed test, embedded servers that `cms up` could not stop (they are daemons, not
    its children) must not outlive the test: stop them by their pid files."""
    for pid_file, sig in ((data_dir / "postgres" / "postmaster.pid", signal.SIGINT),
                          (data_dir / "valkey" / "valkey.pid", signal.SIGKILL)):
        try:
            pid = int(pid_file.read_text().split()[0])
            server = psutil.Process(pid)
            server.send_signal(sig)
            server.wait(10)
        except (OSError, ValueError, IndexError, psutil.Error):
            pass


def assert_embedded_services_stopped(data_dir: Path) -> None:
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), "embedded PostgreSQL still running"
    assert not (data_dir / "valkey" / "valkey.pid").exists(), "embedded Valkey still running"
