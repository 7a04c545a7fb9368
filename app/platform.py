"""Routes every app has: health, readiness, metrics, OpenAPI."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .db.migrate import applied_version, latest_version
from .http import encode, json_response, problem_response
from .openapi import openapi_document
from .problems import ProblemError


@get("/healthz", include_in_schema=False, opt={"public": True})
async def healthz() -> Response[bytes]:
    return json_response({"status": "ok"})


@get("/readyz", include_in_schema=False, opt={"public": True})
async def readyz(request: Request[Any, Any, Any]) -> Response[bytes]:
    state = request.app.state
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            async with state.pool.acquire() as conn:
                version = await applied_version(conn)
        checks["database"] = "ok"
        checks["migrations"] = "ok" if version == latest_version() else f"at {version}, need {latest_version()}"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        async with asyncio.timeout(2):
            await state.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    if all(v == "ok" for v in checks.values()):
        return json_response({"status": "ready", "checks": checks})
    problem = ProblemError(503, "unavailable", "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok"))
    problem.extra["checks"] = checks
    return problem_response(problem, request.scope["state"].get("request_id"))


@get("/metrics", include_in_schema=False, opt={"public": True})
async def metrics() -> Response[bytes]:
    return Response(content=generate_latest(), media_type=CONTENT_TYPE_LATEST)


@get("/openapi.json", include_in_schema=False, opt={"public": True})
async def openapi_json(request: Request[Any, Any, Any]) -> Response[bytes]:
    state = request.app.state
    if getattr(state, "openapi_body", None) is None:
        state.openapi_body = encode(openapi_document(request.app))
    return json_response(state.openapi_body, media_type="application/vnd.oai.openapi+json")


PLATFORM_ROUTES = [healthz, readyz, metrics, openapi_json]
