"""`cms keys create|list|rotate|revoke`, `cms oauth rotate-signing-key`: API keys straight in the database, acting as the system credential."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from typing import Any

from ..config import Settings
from .errors import CliError
from .up import _connect, database


def _cli_credential() -> Any:
    from ..credentials.keys import SCOPES
    from ..credentials.schemas import Credential

    # Audited as {"kind": "system", "id": "system", "name": "cli"}; holds every scope.
    return Credential(id="system", kind="system", name="cli", scopes=frozenset(SCOPES))


def _problem_message(exc: Any) -> str:
    details = [f"{e.get('pointer') or e.get('parameter') or '/'}: {e['detail']}" for e in exc.errors or []]
    return "; ".join(details) if details else exc.detail


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    from ..credentials.keys import SCOPES
    from ..credentials.service import create_key
    from ..problems import ProblemError

    scopes = list(SCOPES) if args.all_scopes else list(args.scope or [])
    body: dict[str, Any] = {"name": args.name, "kind": args.kind, "scopes": scopes}
    if args.content_type:
        body["content_types"] = list(args.content_type)
    if args.expires_at:
        body["expires_at"] = args.expires_at
    if args.rate_limit:
        body["rate_limit"] = args.rate_limit

    async def run(url: str) -> tuple[Any, str]:
        from ..db.migrate import migrate

        conn = await _connect(url)
        try:
            await migrate(conn)
            return await create_key(conn, body, _cli_credential(), request_id=None, ip=None)
        finally:
            await conn.close()

    with database(settings) as url:
        try:
            row, secret = asyncio.run(run(url))
        except ProblemError as exc:
            raise CliError(_problem_message(exc)) from None
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

    async def run(url: str) -> list[Any]:
        from ..db.migrate import migrate

        conn = await _connect(url)
        try:
            await migrate(conn)
            rows: list[Any] = []
            after = None
            while True:
                page = await repository.list_keys(conn, after, 500)
                rows += page
                if len(page) < 500:
                    return rows
                after = page[-1]["id"]
        finally:
            await conn.close()

    with database(settings) as url:
        rows = asyncio.run(run(url))
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
    from ..problems import ProblemError

    async def run(url: str) -> tuple[Any, str]:
        from ..db.migrate import migrate

        conn = await _connect(url)
        try:
            await migrate(conn)
            return await rotate(conn, args.id, {"grace_seconds": args.grace}, _cli_credential(), request_id=None, ip=None)
        finally:
            await conn.close()

    with database(settings) as url:
        try:
            row, secret = asyncio.run(run(url))
        except ProblemError as exc:
            if exc.status == 404:
                raise CliError(f"no key with id {args.id!r}") from None
            raise CliError(_problem_message(exc)) from None
    print(
        f"rotated key {row['id']} ({row['name']}); the old secret works for {args.grace:g} more seconds. "
        "The new secret below is shown only this once:",
        file=sys.stderr,
    )
    print(secret, flush=True)
    return 0


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from ..credentials.service import revoke
    from ..problems import ProblemError

    async def run(url: str) -> None:
        from ..db.migrate import migrate

        conn = await _connect(url)
        try:
            await migrate(conn)
            await revoke(conn, args.id, _cli_credential(), request_id=None, ip=None)
        finally:
            await conn.close()

    with database(settings) as url:
        try:
            asyncio.run(run(url))
        except ProblemError as exc:
            if exc.status == 404:
                raise CliError(f"no key with id {args.id!r}") from None
            raise CliError(_problem_message(exc)) from None
    print(f"revoked key {args.id}")
    return 0


def cmd_oauth_rotate_signing_key(settings: Settings, args: argparse.Namespace) -> int:
    from ..oauth.service import rotate_signing_key
    from ..webhooks.service import secret_box

    async def run(url: str) -> str:
        from ..db.migrate import migrate

        conn = await _connect(url)
        try:
            await migrate(conn)
            return await rotate_signing_key(conn, secret_box(settings))
        finally:
            await conn.close()

    with database(settings) as url:
        kid = asyncio.run(run(url))
    print(f"new token signing key {kid}; tokens signed by the old one stay valid until they expire")
    return 0
