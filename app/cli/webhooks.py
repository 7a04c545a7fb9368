"""`cms webhooks list|deliveries|redeliver`: look at webhooks and their deliveries, send one again."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import Settings
from .errors import CliError
from .keys import _cli_credential, _problem_message
from .up import _connect, database


def _run(settings: Settings, work: Callable[[Any, Any], Awaitable[Any]]) -> Any:
    """`work(conn, ctx)` on a migrated database, as the system credential; a problem is one line."""
    from ..audit.service import WriteContext
    from ..db.migrate import migrate
    from ..problems import ProblemError

    async def run(url: str) -> Any:
        conn = await _connect(url)
        try:
            await migrate(conn)
            return await work(conn, WriteContext(_cli_credential(), None, None))
        finally:
            await conn.close()

    with database(settings) as url:
        try:
            return asyncio.run(run(url))
        except ProblemError as exc:
            raise CliError(_problem_message(exc)) from None


def _table(rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def cmd_webhooks_list(settings: Settings, args: argparse.Namespace) -> int:
    from ..webhooks import service

    async def work(conn: Any, ctx: Any) -> list[dict[str, Any]]:
        data, meta = await service.list_webhooks(conn, ctx, None, 100)
        while meta["next_cursor"] is not None:
            more, meta = await service.list_webhooks(conn, ctx, meta["next_cursor"], 100)
            data += more
        return data

    webhooks = _run(settings, work)
    if args.json:
        print(json.dumps(webhooks, indent=2))
    elif not webhooks:
        print("no webhooks")
    else:
        _table([("ID", "URL", "EVENTS", "ACTIVE", "DISABLED BECAUSE")] + [
            (w["id"], w["url"], ",".join(w["events"]), "yes" if w["active"] else "no", w["disabled_reason"] or "-")
            for w in webhooks
        ])
    return 0


def cmd_webhooks_deliveries(settings: Settings, args: argparse.Namespace) -> int:
    from ..webhooks import service

    async def work(conn: Any, ctx: Any) -> list[dict[str, Any]]:
        return (await service.list_deliveries(conn, args.webhook_id, ctx, args.status, None, args.limit))[0]

    deliveries = _run(settings, work)
    if args.json:
        print(json.dumps(deliveries, indent=2))
    elif not deliveries:
        print("no deliveries")
    else:
        _table([("ID", "EVENT", "TYPE", "STATUS", "ATTEMPTS", "LAST", "NEXT")] + [
            (d["id"], d["event_id"], d["event_type"], d["status"], len(d["attempts"]),
             (d["attempts"][-1]["status_code"] or d["attempts"][-1]["error"] or "-") if d["attempts"] else "-",
             d["next_attempt_at"] or "-")
            for d in deliveries
        ])
    return 0


def cmd_webhooks_redeliver(settings: Settings, args: argparse.Namespace) -> int:
    from ..webhooks import service

    async def work(conn: Any, ctx: Any) -> dict[str, Any]:
        return await service.redeliver(conn, args.webhook_id, args.delivery_id, ctx)

    delivery = _run(settings, work)
    print(f"delivery {delivery['id']} ({delivery['event_type']}) will be sent again now")
    return 0


def add_commands(commands: Any) -> None:
    webhooks = commands.add_parser("webhooks", help="look at webhooks and their deliveries", description="webhooks")
    actions = webhooks.add_subparsers(dest="webhooks_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every webhook, its events and whether it is active")
    listing.set_defaults(func=cmd_webhooks_list)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    deliveries = actions.add_parser("deliveries", help="a webhook's deliveries, newest first, with their attempts")
    deliveries.set_defaults(func=cmd_webhooks_deliveries)
    deliveries.add_argument("webhook_id")
    deliveries.add_argument("--status", choices=("pending", "succeeded", "failed"))
    deliveries.add_argument("--limit", type=int, default=20, choices=range(1, 101), metavar="1..100")
    deliveries.add_argument("--json", action="store_true", help="print JSON instead of a table")
    redeliver = actions.add_parser("redeliver", help="send a delivery again now (the same webhook-id)")
    redeliver.set_defaults(func=cmd_webhooks_redeliver)
    redeliver.add_argument("webhook_id")
    redeliver.add_argument("delivery_id")
