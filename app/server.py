"""create_delivery_app() / create_management_app(): plugins, middleware, routes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from .config import Settings
from .credentials.service import CredentialResolver
from .db.pool import create_pool
from .events.listener import InvalidationListener
from .http import RequestContextMiddleware
from .platform import PLATFORM_ROUTES
from .problems import EXCEPTION_HANDLERS

log = logging.getLogger("cms.server")


def _lifespan(settings: Settings, database_url: str, redis_url: str, *, delivery: bool) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        state = app.state
        state.pool = await create_pool(database_url, min_size=1, max_size=settings.db_pool_size)
        read_url = settings.database_read_url if delivery and settings.database_read_url else None
        state.read_pool = await create_pool(read_url, max_size=settings.db_pool_size) if read_url else state.pool
        # Explicit socket timeouts: redis-py's defaults break blocking reads and pub/sub.
        state.redis = aioredis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        state.credentials = CredentialResolver(state.pool)
        state.listener = InvalidationListener(database_url)
        state.listener.subscribe(state.credentials.invalidate)
        if delivery:
            from .content.delivery_cache import DeliveryCache

            state.cache = DeliveryCache(settings.delivery_cache_entries)
            state.listener.subscribe(state.cache.invalidate)
            from .content.delivery_purge import RedisPurgeSubscriber

            state.purge_subscriber = RedisPurgeSubscriber(redis_url, state.cache.invalidate)
        from .content.service import ContentTypeRegistry

        state.types = ContentTypeRegistry(state.pool)
        state.listener.subscribe(state.types.invalidate)
        await state.listener.start()
        if delivery:
            await state.purge_subscriber.start()
        try:
            yield
        finally:
            if delivery:
                await state.purge_subscriber.stop()
            await state.listener.stop()
            await state.redis.aclose()
            if state.read_pool is not state.pool:
                await state.read_pool.close()
            await state.pool.close()

    return lifespan


class CmsApp(Litestar):
    """Litestar with request ids and metrics around everything, unmatched routes included."""

    def __init__(self, *args: Any, name: str, fast_path: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inner = super().__call__
        if fast_path is not None:
            inner = fast_path(self, inner)
        self._outer = RequestContextMiddleware(inner, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._outer(scope, receive, send)


def _openapi(title: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title=title, version="1.0.0", path="/docs", render_plugins=[SwaggerRenderPlugin(path="/")],
    )


def create_delivery_app(settings: Settings, database_url: str, redis_url: str) -> Litestar:
    from .content.delivery_fast import DeliveryFastPath
    from .content.delivery_routes import DELIVERY_ROUTES
    from .content.sync import SYNC_ROUTES

    return CmsApp(
        name="delivery",
        fast_path=DeliveryFastPath,
        route_handlers=[*PLATFORM_ROUTES, *DELIVERY_ROUTES, *SYNC_ROUTES],
        lifespan=[_lifespan(settings, database_url, redis_url, delivery=True)],
        state=State({"settings": settings, "app_name": "delivery"}),
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=_openapi("CMS delivery API"),
        request_max_body_size=settings.max_body_bytes,
        debug=False,
    )


def create_management_app(settings: Settings, database_url: str, redis_url: str) -> Litestar:
    from .content.management_routes import MANAGEMENT_ROUTES
    from .content.pipeline_routes import PIPELINE_ROUTES
    from .credentials.routes import CREDENTIAL_ROUTES
    from .events.routes import EVENT_ROUTES

    return CmsApp(
        name="management",
        route_handlers=[*PLATFORM_ROUTES, *MANAGEMENT_ROUTES, *PIPELINE_ROUTES, *CREDENTIAL_ROUTES, *EVENT_ROUTES],
        lifespan=[_lifespan(settings, database_url, redis_url, delivery=False)],
        state=State({"settings": settings, "app_name": "management"}),
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=_openapi("CMS management API"),
        request_max_body_size=settings.max_bulk_body_bytes,
        debug=False,
    )
