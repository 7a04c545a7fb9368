"""`cms keys create|list|rotate|revoke`, `cms oauth rotate-signing-key`: API keys straight in the database, acting as the system credential."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from ..config import Settings
from .errors import CliError
from .up import _connect, database

T = TypeVar("T")


def _cli_credential() -> Any:
    from ..credentials.keys import SCOPES
    from ..credentials.schemas import Credential

    # Audited as {"kind": "system", "id": "system", "name": "cli"}; holds every scope.
    return Credential(id="system", kind="system", name="cli", scopes=frozenset(SCOPES))


def _problem_message(exc: Any) -> str:
    details = [f"{e.get('pointer') or e.get('parameter') or '/'}: {e['detail']}" for e in exc.errors or []]
    return "; ".join(details) if details else exc.detail


def _in_database(settings: Settings, work: Callable[[Any], Awaitable[T]], *, missing: str | None = None) -> T:
    """`work(conn)` on the settings' database (migrated first), acting as the CLI; a problem it
    raises becomes one line (`missing`: the line for a 404)."""
    from ..problems import ProblemError

    async def run(url: str) -> T:
        from ..db.migrate import migrate

        conn = await _connect(url)
        try:
            await migrate(conn)
            return await work(conn)
        finally:
            await conn.close()

    with database(settings) as url:
        try:
            return asyncio.run(run(url))
        except ProblemError as exc:
            if exc.status == 404 and missing is not None:
                raise CliError(missing) from None
            raise CliError(_problem_message(exc)) from None


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    from ..credentials.keys import SCOPES
    from ..credentials.service import create_key

    scopes = list(SCOPES) if args.all_scopes else list(args.scope or [])
    body: dict[str, Any] = {"name": args.name, "kind": args.kind, "scopes": scopes}
    if args.content_type:
        body["content_types"] = list(args.content_type)
    if args.expires_at:
        body["expires_at"] = args.expires_at
    if args.rate_limit:
        body["rate_limit"] = args.rate_limit

    row, secret = _in_database(
        settings, lambda conn: create_key(conn, body, _cli_credential(), request_id=None, ip=None)
    )
    scope_text = ", ".join(row["scopes"]) or "none"
    print(
        f"created {row['kind']} key {row['id']} ({row['name']}; scopes: {scope_text}). "
        "The secret below is shown only this once:",
        file=sys.stderr,
    )
    print(secret, flush=True)
    return 0


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def cmd_keys_list(settings: Settings, args: argparse.Namespace) -> int:
    from ..credentials import repository
    from ..credentials.keys import SCOPES
    from ..credentials.service import key_json

    async def every_key(conn: Any) -> list[Any]:
        rows: list[Any] = []
        after = None
        while True:
            page = await repository.list_keys(conn, after, 500)
            rows += page
            if len(page) < 500:
                return rows
            after = page[-1]["id"]

    rows = _in_database(settings, every_key)
    if args.json:
        print(json.dumps([key_json(r) for r in rows], indent=2))
        return 0
    if not rows:
        print("no keys")
        return 0
    table = [("ID", "NAME", "KIND", "PREFIX", "SCOPES", "CREATED", "LAST USED", "REVOKED")]
    for r in rows:
        scopes = "all" if set(r["scopes"]) >= set(SCOPES) else ",".join(r["scopes"]) or "-"
        table.append((r["id"], r["name"], r["kind"], r["prefix"], scopes, _when(r["created_at"]),
                      _when(r["last_used_at"]), _when(r["revoked_at"])))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> int:
    from ..credentials.service import rotate

    row, secret = _in_database(
        settings, lambda conn: rotate(conn, args.id, {"grace_seconds": args.grace}, _cli_credential(),
                                      request_id=None, ip=None),
        missing=f"no key with id {args.id!r}",
    )
    print(
        f"rotated key {row['id']} ({row['name']}); the old secret works for {args.grace:g} more seconds. "
        "The new secret below is shown only this once:",
        file=sys.stderr,
    )
    print(secret, flush=True)
    return 0


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from ..credentials.service import revoke

    _in_database(settings, lambda conn: revoke(conn, args.id, _cli_credential(), request_id=None, ip=None),
                 missing=f"no key with id {args.id!r}")
    print(f"revoked key {args.id}")
    return 0


def cmd_oauth_rotate_signing_key(settings: Settings, args: argparse.Namespace) -> int:
    from ..oauth.service import rotate_signing_key
    from ..webhooks.service import secret_box

    kid = _in_database(settings, lambda conn: rotate_signing_key(conn, secret_box(settings)))
    print(f"new token signing key {kid}; tokens signed by the old one stay valid until they expire")
    return 0
