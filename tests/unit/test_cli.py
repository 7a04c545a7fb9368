"""The `cms` command: configuration errors, argument handling, the supervisor, and keys.

The keys/migrate tests use the test database from conftest (a fresh clone per test).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cms.app.cli import main, supervisor

CMS_SCRIPT = Path(sys.executable).parent / "cms"
CMS = [str(CMS_SCRIPT)] if CMS_SCRIPT.exists() else [sys.executable, "-m", "cms.app.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMS_")}
    env.update(extra)
    return env


def run_cms(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CMS, *args], env=env if env is not None else clean_env(), capture_output=True, text=True, timeout=timeout
    )


def test_console_script_is_installed() -> None:
    assert CMS_SCRIPT.exists(), "pip install -e . should provide .venv/bin/cms"


@pytest.mark.parametrize("command", [["up"], ["migrate"], ["serve", "delivery"], ["keys", "list"]])
def test_bad_environment_exits_2_with_one_line(command: list[str]) -> None:
    result = run_cms(*command, env=clean_env(CMS_DELIVERY_PORT="abc"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("cms: error: CMS_DELIVERY_PORT"), result.stderr
    assert result.stdout == ""


def test_bad_environment_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CMS_RATE_LIMIT_DELIVERY", "fast")
    assert main.main(["migrate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cms: error: CMS_RATE_LIMIT_DELIVERY="), err


def test_help_works_even_with_a_bad_environment() -> None:
    result = run_cms("--help", env=clean_env(CMS_DELIVERY_PORT="abc"))
    assert result.returncode == 0
    for command in ("up", "serve", "migrate", "keys", "worker", "scheduler"):
        assert command in result.stdout


def test_usage_errors_exit_2() -> None:
    assert run_cms().returncode == 2
    assert run_cms("frobnicate").returncode == 2
    assert run_cms("up", "--workers", "0").returncode == 2
    assert run_cms("serve", "graphql").returncode == 2
    assert run_cms("keys", "create", "--name", "x", "--kind", "root").returncode == 2


def test_up_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cms("up", env=clean_env(CMS_DATA_DIR=str(tmp_path), CMS_DELIVERY_PORT=str(port)))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("cms: error: cannot listen on 127.0.0.1:")
    assert "CMS_DELIVERY_PORT" in result.stderr


def test_up_refuses_equal_ports(tmp_path: Path) -> None:
    result = run_cms(
        "up", env=clean_env(CMS_DATA_DIR=str(tmp_path), CMS_DELIVERY_PORT="18555", CMS_MANAGEMENT_PORT="18555")
    )
    assert result.returncode == 1
    assert "must differ" in result.stderr


def test_granian_command_serves_the_factory() -> None:
    command = supervisor.granian_command("delivery", "127.0.0.1", 8123, 2)
    assert command[:3] == [sys.executable, "-m", "granian"]
    assert command[-1] == "cms.app.asgi:delivery"
    for flag in ("--factory", "--interface", "asgi", "--host", "127.0.0.1", "--port", "8123", "--workers", "2"):
        assert flag in command


def test_asgi_factories_exist_and_need_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    from cms.app import asgi

    monkeypatch.delenv("CMS_DATABASE_URL", raising=False)
    monkeypatch.delenv("CMS_REDIS_URL", raising=False)
    with pytest.raises(RuntimeError, match="CMS_DATABASE_URL"):
        asgi.delivery()
    with pytest.raises(RuntimeError, match="CMS_REDIS_URL"):
        asgi.management()


# --------------------------------------------------------------------------- supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
STUBBORN = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_supervisor_stops_children() -> None:
    sup = supervisor.Supervisor()
    sup.start("a", SLEEPER, dict(os.environ))
    sup.start("b", SLEEPER, dict(os.environ))
    pids = [p.pid for _, p in sup.children]
    assert sup.dead_child() is None
    started = time.monotonic()
    sup.stop()
    assert time.monotonic() - started < 5
    assert not any(_alive(pid) for pid in pids)


def test_supervisor_kills_a_child_that_ignores_sigterm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "STOP_TIMEOUT", 1.0)
    sup = supervisor.Supervisor()
    proc = subprocess.Popen(STUBBORN, stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    sup.children.append(("stubborn", proc))
    sup.stop()
    assert proc.returncode == -signal.SIGKILL


def test_supervisor_reports_a_dead_child() -> None:
    sup = supervisor.Supervisor()
    sup.start("sleeper", SLEEPER, dict(os.environ))
    sup.start("crasher", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))
    try:
        assert sup.run() == 1
        assert sup.dead_child() == ("crasher", 3)
    finally:
        sup.stop()


def test_supervisor_run_returns_0_on_stop_request() -> None:
    sup = supervisor.Supervisor()
    sup.start("sleeper", SLEEPER, dict(os.environ))
    sup.stop_requested = True
    try:
        assert sup.run() == 0
    finally:
        sup.stop()


# --------------------------------------------------------------------------- database commands


def test_migrate_reports_nothing_to_apply(database_url: str) -> None:
    result = run_cms("migrate", env=clean_env(CMS_DATABASE_URL=database_url))
    assert result.returncode == 0, result.stderr
    assert "nothing to apply" in result.stdout


def test_keys_create_list_revoke(database_url: str, tmp_path: Path) -> None:
    env = clean_env(CMS_DATABASE_URL=database_url)
    created = run_cms("keys", "create", "--name", "site", "--kind", "delivery", env=env)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("cms_dk_") and "\n" not in secret
    assert "shown only this once" in created.stderr

    editor = run_cms(
        "keys", "create", "--name", "editor", "--kind", "management", "--scope", "content:read",
        "--scope", "content:write", "--content-type", "article", "--expires-at", "2099-01-01T00:00:00Z", env=env,
    )
    assert editor.returncode == 0, editor.stderr
    assert editor.stdout.strip().startswith("cms_mk_")

    listed = run_cms("keys", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.strip().splitlines()
    assert header.split()[:5] == ["ID", "NAME", "KIND", "PREFIX", "SCOPES"]
    assert "LAST USED" in header and "REVOKED" in header
    site = next(r for r in rows if " site " in r)
    key_id = site.split()[0]
    assert secret[:15] in site and secret not in listed.stdout
    assert any("content:read,content:write" in r for r in rows)

    rotated = run_cms("keys", "rotate", key_id, "--grace", "0", env=env)
    assert rotated.returncode == 0, rotated.stderr
    new_secret = rotated.stdout.strip()
    assert new_secret.startswith("cms_dk_") and new_secret != secret and "shown only this once" in rotated.stderr
    keys = {k["id"]: k for k in json.loads(run_cms("keys", "list", "--json", env=env).stdout)}
    assert keys[key_id]["prefix"] == new_secret[:15]

    revoked = run_cms("keys", "revoke", key_id, env=env)
    assert revoked.returncode == 0, revoked.stderr
    as_json = run_cms("keys", "list", "--json", env=env)
    keys = {k["id"]: k for k in json.loads(as_json.stdout)}
    assert keys[key_id]["revoked_at"] is not None
    assert keys[key_id]["created_by"]["kind"] == "system"

    signing = run_cms("oauth", "rotate-signing-key", env={**env, "CMS_DATA_DIR": str(tmp_path)})  # its key file
    assert signing.returncode == 0, signing.stderr
    assert "new token signing key" in signing.stdout

    missing = run_cms("keys", "revoke", "no-such-key", env=env)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == "cms: error: no key with id 'no-such-key'"


def test_keys_create_validation_errors_are_one_line(database_url: str) -> None:
    env = clean_env(CMS_DATABASE_URL=database_url)
    result = run_cms("keys", "create", "--name", "x", "--kind", "delivery", "--scope", "content:read", env=env)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("cms: error: /scopes") and "only management keys" in last
    bad_expiry = run_cms("keys", "create", "--name", "x", "--kind", "preview", "--expires-at", "tomorrow", env=env)
    assert bad_expiry.returncode == 1 and "/expires_at" in bad_expiry.stderr
