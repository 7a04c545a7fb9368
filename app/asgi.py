"""ASGI factories for granian (`granian --factory cms.app.asgi:delivery`).

Each server process builds its app from the CMS_* environment. `cms up` and `cms serve` set
CMS_DATABASE_URL / CMS_REDIS_URL for their children (the embedded servers' URLs when the user
set none), so these factories never start embedded services themselves.
"""

from __future__ import annotations

from litestar import Litestar

from .config import Settings, load_settings
from .runtime import tune_gc
from .server import create_delivery_app, create_management_app


def _settings() -> tuple[Settings, str, str]:
    settings = load_settings()
    if not settings.database_url or not settings.redis_url:
        raise RuntimeError(
            "CMS_DATABASE_URL and CMS_REDIS_URL must be set for an ASGI server process "
            "(`cms up` and `cms serve` set them for you)"
        )
    return settings, settings.database_url, settings.redis_url


def delivery() -> Litestar:
    settings, database_url, redis_url = _settings()
    app = create_delivery_app(settings, database_url, redis_url)
    tune_gc()
    return app


def management() -> Litestar:
    settings, database_url, redis_url = _settings()
    app = create_management_app(settings, database_url, redis_url)
    tune_gc()
    return app
