"""Every management route × every scope, generated from the app's route table: a route added
without a guard or a scope fails here (OWASP API5, broken function-level authorization)."""

from __future__ import annotations

import re
from typing import Any

from cms.app.credentials.guards import management_guard
from cms.app.credentials.keys import SCOPES

PUBLIC = re.compile(r"^/(healthz|readyz|metrics|openapi\.json|docs|oauth/token|oauth/revoke|\.well-known/jwks\.json)(/|$)")
# Reading the schema needs a management credential but no scope (API.md: a key of any scope must
# know the types it works with).
ANY_SCOPE = {("GET", "/v1/content-types"), ("GET", "/v1/content-types/{type_id}"), ("GET", "/v1/locales")}


def _routes(app: Any) -> list[tuple[str, str, str | None, Any]]:
    """(method, path, scope, handler) for every route but OPTIONS."""
    found = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            for method in sorted(handler.http_methods):
                if method != "OPTIONS":
                    found.append((method, re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path), handler.opt.get("scope"), handler))
    return found


def _url(path: str) -> str:
    return path.replace("{version}", "1").replace("{type_id}", "nosuchtype").replace("{", "").replace("}", "")


async def test_every_management_route_needs_a_credential_and_its_scope(apps) -> None:
    routes = _routes(apps.management_app)
    guarded = [(m, p, s, h) for m, p, s, h in routes if not PUBLIC.match(p)]
    assert len(guarded) >= 40, "the route table was not read"
    for method, path, scope, handler in guarded:
        assert management_guard in handler.resolve_guards(), f"{method} {path} has no management guard"
        if (method, path) in ANY_SCOPE:
            assert scope is None, f"{method} {path}"
        else:
            assert scope in SCOPES, f"{method} {path} declares no scope: add one (or to ANY_SCOPE, with a reason)"

    clients = {scope: apps.client("management", await apps.key("management", scopes=[scope])) for scope in SCOPES}
    anonymous = apps.client("management")
    try:
        for method, path, scope, _ in guarded:
            url = _url(path)
            body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            r = await anonymous.request(method, url, **body)
            assert r.status_code == 401, (method, path, r.status_code)
            for held, client in clients.items():
                r = await client.request(method, url, **body)
                if scope is None or held == scope:
                    assert r.status_code not in (401, 403), (method, path, held, r.status_code, r.text)
                else:
                    assert r.status_code == 403, (method, path, held, r.status_code)
                    assert scope in r.json()["detail"]
    finally:
        for client in (*clients.values(), anonymous):
            await client.aclose()
