"""Management routes for webhooks and their deliveries (scope webhooks:manage)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, delete, get, patch, post
from litestar.params import FromPath

from ..credentials.guards import management_guard
from ..http import many, one, page_params, read_json
from ..openapi import Doc, Webhook, WebhookDelivery, WebhookInput, list_of, one_of
from ..routing import pool, write_context
from ..schema.model import RESOURCE_ID
from . import service
from .ssrf import default_resolver

Req = Request[Any, Any, Any]
WEBHOOK, DELIVERY = one_of(Webhook), one_of(WebhookDelivery)


def _checks(request: Req) -> dict[str, Any]:
    """How URLs are checked: CMS_WEBHOOK_ALLOW_PRIVATE, and the resolver (state.webhook_resolver:
    tests put one they control there)."""
    state = request.app.state
    return {"allow_private": bool(state.settings.webhook_allow_private),
            "resolver": getattr(state, "webhook_resolver", None) or default_resolver}


@post("/", opt={"doc": Doc(201, WEBHOOK, body=WebhookInput)})
async def create_webhook(request: Req) -> Response[bytes]:
    body = await read_json(request)
    async with pool(request).acquire() as conn:
        webhook = await service.create_webhook(
            conn, body, write_context(request), request.app.state.webhook_box, **_checks(request),
        )
    return one(webhook, 201, {"Location": f"/v1/webhooks/{webhook['id']}"})


@get("/", opt={"doc": Doc(200, list_of(Webhook), query=("limit", "cursor"))})
async def list_webhooks(request: Req) -> Response[bytes]:
    limit, cursor = page_params(request, RESOURCE_ID)
    async with pool(request).acquire() as conn:
        data, meta = await service.list_webhooks(conn, write_context(request), cursor, limit)
    return many(data, meta)


@get("/{webhook_id:str}", opt={"doc": Doc(200, WEBHOOK, (404,))})
async def get_webhook(request: Req, webhook_id: FromPath[str]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        return one(await service.get_webhook(conn, webhook_id, write_context(request)))


@patch("/{webhook_id:str}", opt={"doc": Doc(200, WEBHOOK, (404,), body=WebhookInput)})
async def update_webhook(request: Req, webhook_id: FromPath[str]) -> Response[bytes]:
    body = await read_json(request, merge_patch=True)
    async with pool(request).acquire() as conn:
        webhook = await service.update_webhook(
            conn, webhook_id, body, write_context(request), **_checks(request)
        )
    return one(webhook)


@delete("/{webhook_id:str}", opt={"doc": Doc(204, None, (404,))}, status_code=204)
async def delete_webhook(request: Req, webhook_id: FromPath[str]) -> None:
    async with pool(request).acquire() as conn:
        await service.delete_webhook(conn, webhook_id, write_context(request))


@post("/{webhook_id:str}/rotate-secret", opt={"doc": Doc(200, WEBHOOK, (404,))})
async def rotate_secret(request: Req, webhook_id: FromPath[str]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        webhook = await service.rotate_secret(conn, webhook_id, write_context(request), request.app.state.webhook_box)
    return one(webhook)


@post("/{webhook_id:str}/test", opt={"doc": Doc(201, DELIVERY, (404,))})
async def send_ping(request: Req, webhook_id: FromPath[str]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        delivery = await service.send_ping(conn, webhook_id, write_context(request))
    return one(delivery, 201, {"Location": f"/v1/webhooks/{webhook_id}/deliveries/{delivery['id']}"})


@get("/{webhook_id:str}/deliveries", opt={"doc": Doc(200, list_of(WebhookDelivery), (404,), query=("status", "limit", "cursor"))})
async def list_deliveries(request: Req, webhook_id: FromPath[str]) -> Response[bytes]:
    limit, cursor = page_params(request, RESOURCE_ID)
    async with pool(request).acquire() as conn:
        data, meta = await service.list_deliveries(
            conn, webhook_id, write_context(request), request.query_params.get("status"), cursor, limit,
        )
    return many(data, meta)


@get("/{webhook_id:str}/deliveries/{delivery_id:str}", opt={"doc": Doc(200, DELIVERY, (404,))})
async def get_delivery(request: Req, webhook_id: FromPath[str], delivery_id: FromPath[str]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        return one(await service.get_delivery(conn, webhook_id, delivery_id, write_context(request)))


@post("/{webhook_id:str}/deliveries/{delivery_id:str}/redeliver", opt={"doc": Doc(200, DELIVERY, (404,))})
async def redeliver(request: Req, webhook_id: FromPath[str], delivery_id: FromPath[str]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        return one(await service.redeliver(conn, webhook_id, delivery_id, write_context(request)))


WEBHOOK_ROUTES = Router(
    "/v1/webhooks", guards=[management_guard], opt={"scope": "webhooks:manage"},
    route_handlers=[
        create_webhook, list_webhooks, get_webhook, update_webhook, delete_webhook, rotate_secret, send_ping,
        list_deliveries, get_delivery, redeliver,
    ],
)
