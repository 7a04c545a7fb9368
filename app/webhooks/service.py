"""Webhook subscriptions: create (the secret shown once), change, delete, rotate the secret, send a
ping; and their deliveries: list, look at one with its attempts, send one again."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from ulid import ULID

from ..audit.service import WriteContext
from ..config import Settings
from ..events import types as events
from ..problems import FieldErrorsProblem, malformed, not_found
from ..schema.model import (
    RESOURCE_ID,
    TYPE_ID,
)
from ..times import iso
from . import fanout
from . import repository as repo
from .signing import SecretBox, new_secret
from .ssrf import Resolver, UnsafeUrl, check_url, default_resolver

MAX_PATTERNS = 50
MAX_TYPES = 100
MAX_HEADERS = 20
ROTATION_GRACE = timedelta(hours=24)
# Headers a subscription may not set: the signature's own, and what the HTTP layer decides.
RESERVED_HEADERS = ("host", "content-length", "content-type", "transfer-encoding", "connection", "user-agent")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]{0,1024}")
DELIVERY_STATUSES = ("pending", "succeeded", "failed")
FAMILIES = {name.split(".")[0] for name in events.EVENT_TYPES}


def secret_box(settings: Settings) -> SecretBox:
    """The key webhook secrets are encrypted with: CMS_WEBHOOK_SECRET_KEY, else a key file under
    CMS_DATA_DIR (made on first use; every process on this machine shares it)."""
    if settings.webhook_secret_key:
        return SecretBox.from_text(settings.webhook_secret_key)
    return SecretBox.load_or_create(settings.webhook_key_file)


def webhook_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"], "url": row["url"], "events": list(row["events"]),
        "types": list(row["types"]) if row["types"] is not None else None, "headers": dict(row["headers"]),
        "active": row["active"], "disabled_reason": row["disabled_reason"], "version": row["version"],
        "created_by": row["created_by"], "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
    }


def delivery_json(row: Any, attempts: list[Any]) -> dict[str, Any]:
    status = "pending" if row["status"] == "sending" else row["status"]
    return {
        "id": row["id"], "webhook_id": row["webhook_id"], "event_id": row["event_id"],
        "event_type": row["event_type"], "status": status,
        "attempts": [
            {"at": iso(a["at"]), "status_code": a["status_code"], "duration_ms": a["duration_ms"],
             "error": a["error"], "response": a["response"]}
            for a in attempts
        ],
        "next_attempt_at": iso(row["next_attempt_at"]) if status == "pending" else None,
        "created_at": iso(row["created_at"]),
    }


def _valid_pattern(pattern: Any) -> bool:
    if not isinstance(pattern, str):
        return False
    if pattern == "*" or pattern in events.EVENT_TYPES:
        return True
    return pattern.endswith(".*") and pattern[:-2] in FAMILIES


async def _parse(
    body: Any, ctx: WriteContext, *, partial: bool, allow_private: bool, resolver: Resolver,
) -> dict[str, Any]:
    """The subscription's values from a POST (every key) or PATCH (the keys given); 422 otherwise."""
    problems = FieldErrorsProblem()
    if not isinstance(body, dict):
        problems.add("", "must be a JSON object")
        problems.raise_if_any()
    known = {"url", "events", "types", "headers", "active"}
    for key in body:
        if key not in known | {"id", "secret", "version", "created_at", "updated_at", "created_by", "disabled_reason"}:
            problems.add(f"/{key}", "unknown property")
    out: dict[str, Any] = {}
    if "url" in body or not partial:
        url = body.get("url")
        if not isinstance(url, str) or not url:
            problems.add("/url", "is required: an http(s) URL")
        else:
            try:
                await check_url(url, allow_private=allow_private, resolver=resolver)
                out["url"] = url
            except UnsafeUrl as exc:
                problems.add("/url", str(exc))
    if "events" in body or not partial:
        patterns = body.get("events")
        if not isinstance(patterns, list) or not 1 <= len(patterns) <= MAX_PATTERNS:
            problems.add("/events", f"is required: 1 to {MAX_PATTERNS} event names or patterns (entry.*, *)")
        else:
            for i, pattern in enumerate(patterns):
                if not _valid_pattern(pattern):
                    problems.add(f"/events/{i}", "an event name (entry.published), a family (entry.*) or *")
            out["events"] = list(dict.fromkeys(p for p in patterns if isinstance(p, str)))
    if "types" in body or not partial:
        types = body.get("types")
        allowed = ctx.actor.content_types
        if types is None:
            # A credential limited to some types subscribes to those only.
            out["types"] = sorted(allowed) if allowed is not None else None
        elif not isinstance(types, list) or len(types) > MAX_TYPES:
            problems.add("/types", f"must be a list of at most {MAX_TYPES} content type ids, or null")
        else:
            for i, type_id in enumerate(types):
                if not isinstance(type_id, str) or not TYPE_ID.fullmatch(type_id):
                    problems.add(f"/types/{i}", "must be a content type id")
                elif allowed is not None and type_id not in allowed:
                    problems.add(f"/types/{i}", f"this credential may not use the content type {type_id!r}")
            out["types"] = sorted({t for t in types if isinstance(t, str)})
    if "headers" in body or not partial:
        headers = body.get("headers") or {}
        if not isinstance(headers, dict) or len(headers) > MAX_HEADERS:
            problems.add("/headers", f"must be an object of at most {MAX_HEADERS} headers")
        else:
            for name, value in headers.items():
                lower = name.lower()
                if not _HEADER_NAME.fullmatch(name):
                    problems.add(f"/headers/{name}", "is not a valid header name")
                elif lower.startswith("webhook-") or lower in RESERVED_HEADERS:
                    problems.add(f"/headers/{name}", "is set by the sender and cannot be overridden")
                elif not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
                    problems.add(f"/headers/{name}", "must be printable text of at most 1024 characters")
            out["headers"] = headers
    if "active" in body or not partial:
        active = body.get("active", True)
        if not isinstance(active, bool):
            problems.add("/active", "must be true or false")
        out["active"] = active
    problems.raise_if_any()
    return out


async def create_webhook(
    conn: asyncpg.Connection, body: Any, ctx: WriteContext, box: SecretBox, *, allow_private: bool,
    resolver: Resolver = default_resolver,
) -> dict[str, Any]:
    values = await _parse(body, ctx, partial=False, allow_private=allow_private, resolver=resolver)
    secret = new_secret()
    async with conn.transaction():
        row = await repo.insert_webhook(conn, {
            **values, "id": str(ULID()), "secret": box.encrypt(secret), "created_by": ctx.actor.actor(),
        })
        await ctx.audit(conn, "webhook.create", f"webhook:{row['id']}")
    return {**webhook_json(row), "secret": secret}


async def _owned(conn: asyncpg.Connection, webhook_id: str, ctx: WriteContext, *, for_update: bool = False) -> Any:
    """The webhook, if this credential may see it (a type-limited one: only webhooks of its types)."""
    row = await repo.get_webhook(conn, webhook_id, for_update=for_update) if RESOURCE_ID.fullmatch(webhook_id) else None
    allowed = ctx.actor.content_types
    if row is None or (allowed is not None and (row["types"] is None or not set(row["types"]) <= allowed)):
        raise not_found("webhook")
    return row


async def get_webhook(conn: asyncpg.Connection, webhook_id: str, ctx: WriteContext) -> dict[str, Any]:
    return webhook_json(await _owned(conn, webhook_id, ctx))


async def list_webhooks(
    conn: asyncpg.Connection, ctx: WriteContext, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows = await repo.list_webhooks(conn, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    allowed = ctx.actor.content_types
    visible = [r for r in rows if allowed is None or (r["types"] is not None and set(r["types"]) <= allowed)]
    meta = {"limit": limit, "next_cursor": rows[-1]["id"] if more else None, "total": await repo.count_webhooks(conn)}
    if allowed is not None:
        meta.pop("total")
    return [webhook_json(r) for r in visible], meta


async def update_webhook(
    conn: asyncpg.Connection, webhook_id: str, body: Any, ctx: WriteContext, *, allow_private: bool,
    resolver: Resolver = default_resolver,
) -> dict[str, Any]:
    values = await _parse(body, ctx, partial=True, allow_private=allow_private, resolver=resolver)
    async with conn.transaction():
        await _owned(conn, webhook_id, ctx, for_update=True)
        if values.get("active") is True:
            # Re-enabled: the reason goes, the 5-day failure clock starts over.
            values.update(disabled_reason=None, failing_since=None)
        row = await repo.update_webhook(conn, webhook_id, values)
        await ctx.audit(conn, "webhook.update", f"webhook:{webhook_id}")
    if values.get("active") is True:
        await repo.notify_senders(conn)
    return webhook_json(row)


async def delete_webhook(conn: asyncpg.Connection, webhook_id: str, ctx: WriteContext) -> None:
    async with conn.transaction():
        await _owned(conn, webhook_id, ctx, for_update=True)
        await repo.delete_webhook(conn, webhook_id)
        await ctx.audit(conn, "webhook.delete", f"webhook:{webhook_id}")


async def rotate_secret(
    conn: asyncpg.Connection, webhook_id: str, ctx: WriteContext, box: SecretBox
) -> dict[str, Any]:
    """A new secret; the old one still signs (beside the new) for 24 hours."""
    secret = new_secret()
    async with conn.transaction():
        row = await _owned(conn, webhook_id, ctx, for_update=True)
        row = await repo.update_webhook(conn, webhook_id, {
            "secret": box.encrypt(secret), "old_secret": row["secret"],
            "old_secret_until": datetime.now(UTC) + ROTATION_GRACE,
        })
        await ctx.audit(conn, "webhook.rotate_secret", f"webhook:{webhook_id}")
    return {**webhook_json(row), "secret": secret}


async def send_ping(conn: asyncpg.Connection, webhook_id: str, ctx: WriteContext) -> dict[str, Any]:
    """A `ping` delivery to this endpoint, whatever its event filters say."""
    async with conn.transaction():
        await _owned(conn, webhook_id, ctx)
        event_id, ping = fanout.ping_body(webhook_id, datetime.now(UTC))
        delivery_id = str(ULID())
        await repo.insert_deliveries(conn, [(delivery_id, webhook_id, event_id, fanout.PING, 0, None, ping)])
        row = await repo.get_delivery(conn, webhook_id, delivery_id)
        await ctx.audit(conn, "webhook.test", f"webhook:{webhook_id}")
    return delivery_json(row, [])


def parse_delivery_status(value: str | None) -> str | None:
    if value is not None and value not in DELIVERY_STATUSES:
        raise malformed("status", f"must be one of {', '.join(DELIVERY_STATUSES)}")
    return value


async def list_deliveries(
    conn: asyncpg.Connection, webhook_id: str, ctx: WriteContext, status: str | None, before: str | None, limit: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Newest first; the cursor is the last delivery id of the page."""
    await _owned(conn, webhook_id, ctx)
    rows = await repo.list_deliveries(conn, webhook_id, parse_delivery_status(status), before, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    attempts = await repo.attempts_of(conn, [r["id"] for r in rows])
    return [delivery_json(r, attempts[r["id"]]) for r in rows], {
        "limit": limit, "next_cursor": rows[-1]["id"] if more else None,
    }


async def get_delivery(conn: asyncpg.Connection, webhook_id: str, delivery_id: str, ctx: WriteContext) -> dict[str, Any]:
    await _owned(conn, webhook_id, ctx)
    row = await repo.get_delivery(conn, webhook_id, delivery_id) if RESOURCE_ID.fullmatch(delivery_id) else None
    if row is None:
        raise not_found("delivery")
    return delivery_json(row, (await repo.attempts_of(conn, [delivery_id]))[delivery_id])


async def redeliver(conn: asyncpg.Connection, webhook_id: str, delivery_id: str, ctx: WriteContext) -> dict[str, Any]:
    """Send a delivery again now (same webhook-id), with a fresh run of the retry schedule."""
    async with conn.transaction():
        await _owned(conn, webhook_id, ctx)
        row = await repo.get_delivery(conn, webhook_id, delivery_id, for_update=True) if RESOURCE_ID.fullmatch(delivery_id) else None
        if row is None:
            raise not_found("delivery")
        if row["status"] != "sending":  # one in flight finishes first; it is not sent twice at once
            row = await repo.redeliver(conn, delivery_id)
        await ctx.audit(conn, "webhook.redeliver", f"webhook_delivery:{delivery_id}")
    return delivery_json(row, (await repo.attempts_of(conn, [delivery_id]))[delivery_id])
