"""Fixtures of the end-to-end tests: a data directory, the environment and `cms up` processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.processes import STOP_TIMEOUT, CmsUp, free_port, stop_leftover_servers


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Not under tmp_path: as root, embedded PostgreSQL runs as another user that must reach its
    directory, and every new pytest session resets /tmp/pytest-of-root to mode 0700."""
    root = Path(tempfile.mkdtemp(prefix="cms-e2e-"))
    yield root / "data"
    stop_leftover_servers(root / "data")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cms_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMS_")}  # no URLs: embedded services
    env.update(
        CMS_DATA_DIR=str(data_dir),
        CMS_HOST="127.0.0.1",
        CMS_DELIVERY_PORT=str(free_port()),
        CMS_MANAGEMENT_PORT=str(free_port()),
    )
    return env


@pytest.fixture
def started(tmp_path: Path, data_dir: Path):  # type: ignore[no-untyped-def]
    running: list[CmsUp] = []

    def start(env: dict[str, str], name: str) -> CmsUp:
        cms = CmsUp(tmp_path, env, name)
        running.append(cms)
        cms.wait_until_ready()
        return cms

    yield start
    for cms in running:
        if cms.proc.poll() is None:  # the test failed midway: stop it as a user would, then insist
            cms.proc.send_signal(signal.SIGINT)
            try:
                cms.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                cms.kill()
