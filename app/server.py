"""create_delivery_app() / create_management_app(): plugins, middleware, routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from cms.graphql.routes import GRAPHQL_ROUTES, GraphQLService

from .audit.routes import AUDIT_ROUTES
from .audit.service import DeniedRequests
from .bulk.routes import BULK_ROUTES
from .config import Settings
from .credentials.routes import CREDENTIAL_ROUTES, PREVIEW_TOKEN_ROUTES
from .credentials.service import CredentialResolver
from .db.lender import ConnectionLender
from .db.pool import create_pool
from .db.replica import ReplicaRouting
from .delivery.cache import DeliveryCache
from .delivery.documents import IncludeLimit
from .delivery.fast_path import DeliveryFastPath
from .delivery.purge import RedisPurgeSubscriber
from .delivery.reads import DeliveryReads
from .delivery.routes import DELIVERY_ROUTES
from .entries.routes import ENTRY_ROUTES
from .events.listener import InvalidationListener
from .events.routes import EVENT_ROUTES
from .http import EXCEPTION_HANDLERS, RequestContextMiddleware
from .oauth.routes import OAUTH_ROUTES
from .oauth.service import Clients as OAuthClients
from .oauth.service import SigningKeys
from .platform import PLATFORM_ROUTES
from .protection.idempotency import IdempotentWrites
from .protection.rate_limits import LocalLimiter, RateLimits, RedisLimiter
from .releases.routes import RELEASE_ROUTES
from .schedules.routes import SCHEDULE_ROUTES
from .schema.registry import ContentTypeRegistry
from .schema.routes import SCHEMA_ROUTES
from .webhooks.routes import WEBHOOK_ROUTES
from .webhooks.service import secret_box

log = logging.getLogger("cms.server")


def _lifespan(settings: Settings, database_url: str, redis_url: str, *, delivery: bool) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        state = app.state
        # Delivery answers only read: its statements get a time limit well below the pool's default
        # (30 s), so one expensive request cannot hold connections the others need.
        timeout_ms = settings.delivery_statement_timeout_ms if delivery else 30_000
        state.pool = await create_pool(
            database_url, min_size=1, max_size=settings.db_pool_size, statement_timeout_ms=timeout_ms,
            parallel_query=not delivery,
        )
        read_url = settings.database_read_url if delivery and settings.database_read_url else None
        # A replica serves delivery reads once it has replayed what the purges announced (app/db/replica.py).
        state.read_pool = ReplicaRouting(state.pool, await create_pool(
            read_url, max_size=settings.db_pool_size, statement_timeout_ms=timeout_ms, parallel_query=False,
        )) if read_url else state.pool
        if delivery and not read_url and settings.db_pool_size > _KEPT_FOR_OTHERS:
            # Delivery reads borrow without asyncpg's per-release task (app/db/lender.py); two of the
            # pool's connections stay for credentials, schemas and the rest.
            state.read_pool = ConnectionLender(state.pool, settings.db_pool_size - _KEPT_FOR_OTHERS)
        # Explicit socket timeouts: redis-py's defaults break blocking reads and pub/sub.
        state.redis = aioredis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        if not delivery:
            state.webhook_box = secret_box(settings)
        # OAuth access tokens: verified by both apps, signed by the management app only.
        state.signing = SigningKeys(state.pool, None if delivery else state.webhook_box)
        state.credentials = CredentialResolver(
            state.pool, settings.bootstrap_key, signing=state.signing, issuer=settings.management_url
        )
        state.denied = DeniedRequests(state.pool)
        namespace = settings.pipeline.namespace  # CMS_BROKER_NAMESPACE: the project's Redis key prefix
        rate = settings.rate_limit_delivery if delivery else settings.rate_limit_management
        state.limiter = None if rate is None else (
            LocalLimiter(redis_url, "delivery", namespace) if delivery else RedisLimiter(redis_url, "management", namespace)
        )
        if state.limiter is not None:
            await state.limiter.start()
        state.listener = InvalidationListener(database_url)
        state.listener.subscribe(state.credentials.invalidate)
        state.listener.subscribe(state.signing.invalidate)
        if not delivery:
            state.oauth_clients = OAuthClients(state.pool)
            state.listener.subscribe(state.oauth_clients.invalidate)
        state.types = ContentTypeRegistry(state.pool)
        state.listener.subscribe(state.types.invalidate)
        if delivery:
            cache_bytes = settings.delivery_cache_mb * 1024 * 1024
            state.cache = DeliveryCache(cache_bytes, settings.cache_control) if cache_bytes else None
            state.reads = DeliveryReads(
                state.types, state.read_pool, state.cache, assets_url=settings.assets_url,
                limit=IncludeLimit.of(settings), preview_pool=state.pool,
            )
            # Purges at commit (NOTIFY) and, once the files are written, from the workers (Redis). The
            # replica routing hears them first: no read after a purge goes to a replica behind it.
            routing = state.read_pool.purged if isinstance(state.read_pool, ReplicaRouting) else _ignore
            state.listener.subscribe(routing)
            state.listener.subscribe(state.cache.invalidate if state.cache is not None else _ignore)
            confirm = state.cache.confirm if state.cache is not None else _ignore

            def worker_purge(tags: list[str] | None) -> None:
                routing(tags)
                confirm(tags)

            state.purge_subscriber = RedisPurgeSubscriber(redis_url, worker_purge)
            state.graphql = GraphQLService(state.types, state.redis, introspection=settings.graphql_introspection)
        await state.listener.start()
        if delivery:
            await state.purge_subscriber.start()
        try:
            yield
        finally:
            # Every step bounded: a stuck one (a request still holding a connection, a flush
            # waiting for one) must not keep the process from stopping.
            if delivery:
                await _bounded(state.purge_subscriber.stop(), "the purge subscriber")
            await _bounded(state.listener.stop(), "the invalidation listener")
            await _bounded(state.denied.stop(), "the denied-request audit")
            if state.limiter is not None:
                await _bounded(state.limiter.stop(), "the rate limiter")
            await _bounded(state.redis.aclose(), "Redis")
            for pool in {id(state.read_pool): state.read_pool, id(state.pool): state.pool}.values():
                if not await _bounded(pool.close(), "the database pool"):
                    pool.terminate()

    return lifespan


SHUTDOWN_STEP_SECONDS = 5.0
_KEPT_FOR_OTHERS = 2  # pool connections a delivery process's ConnectionLender never takes


async def _bounded(step: Any, what: str) -> bool:
    """Await one shutdown step for at most SHUTDOWN_STEP_SECONDS; False (logged) if it took longer."""
    try:
        await asyncio.wait_for(step, SHUTDOWN_STEP_SECONDS)
        return True
    except TimeoutError:
        log.warning("stopping %s took over %.0f s; going on without it", what, SHUTDOWN_STEP_SECONDS)
        return False


def _ignore(tags: list[str] | None) -> None:
    """No cache, nothing to purge."""


class CmsApp(Litestar):
    """Litestar with request ids and metrics around everything, unmatched routes included."""

    def __init__(self, *args: Any, name: str, wraps: tuple[Any, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inner = super().__call__
        # Pure ASGI layers before Litestar, innermost last: rate limits, then the delivery fast
        # path or the management app's idempotent writes.
        for wrap in reversed(wraps):
            inner = wrap(self, inner)
        self._outer = RequestContextMiddleware(inner, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._outer(scope, receive, send)


def _openapi(title: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title=title, version="1.0.0", path="/docs", render_plugins=[SwaggerRenderPlugin(path="/")],
    )


def create_delivery_app(settings: Settings, database_url: str, redis_url: str) -> Litestar:
    return CmsApp(
        name="delivery",
        wraps=(RateLimits, DeliveryFastPath),
        route_handlers=[*PLATFORM_ROUTES, *DELIVERY_ROUTES, *GRAPHQL_ROUTES],
        lifespan=[_lifespan(settings, database_url, redis_url, delivery=True)],
        state=State({"settings": settings, "app_name": "delivery"}),
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=_openapi("CMS delivery API"),
        request_max_body_size=settings.max_body_bytes,
        debug=False,
    )


def create_management_app(settings: Settings, database_url: str, redis_url: str) -> Litestar:
    return CmsApp(
        name="management",
        wraps=(RateLimits, IdempotentWrites),
        route_handlers=[
            *PLATFORM_ROUTES, SCHEMA_ROUTES, ENTRY_ROUTES, RELEASE_ROUTES, SCHEDULE_ROUTES, *BULK_ROUTES,
            CREDENTIAL_ROUTES, PREVIEW_TOKEN_ROUTES, *OAUTH_ROUTES, EVENT_ROUTES, WEBHOOK_ROUTES, AUDIT_ROUTES,
        ],
        lifespan=[_lifespan(settings, database_url, redis_url, delivery=False)],
        state=State({"settings": settings, "app_name": "management"}),
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=_openapi("CMS management API"),
        request_max_body_size=settings.max_bulk_body_bytes,
        debug=False,
    )
