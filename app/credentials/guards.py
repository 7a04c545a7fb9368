"""Who is calling: credentials from headers, checked by one guard per app.

Route modules set a guard once per router. Besides the credential and the route's scope, both
guards check the `type_id` path parameter, if the route has one, against the credential's content
types (403), so no handler has to remember it.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from ..problems import ProblemError, forbidden, unauthorized
from .keys import presented_in
from .schemas import ANONYMOUS, Credential


def presented_secret(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    return presented_in(connection.scope["headers"])


def current(connection: ASGIConnection[Any, Any, Any, Any]) -> Credential:
    return connection.scope["state"]["credential"]  # type: ignore[no-any-return]


def client_ip(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    client = connection.scope.get("client")
    return client[0] if client else None


def _audit_denied(connection: ASGIConnection[Any, Any, Any, Any], actor: dict[str, Any]) -> None:
    denied = getattr(connection.app.state, "denied", None)
    if denied is not None:
        method = connection.scope.get("method", "")
        denied.note(actor, f"{method} {connection.url.path}", connection.scope["state"].get("request_id"),
                    client_ip(connection))


def _is_options(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """Litestar's automatic OPTIONS answer (204 + Allow) needs no credential, as on every route."""
    return connection.scope.get("method") == "OPTIONS"


async def management_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Management routes: a management credential, holding the route's scope (opt["scope"])."""
    if _is_options(connection):
        return
    secret = presented_secret(connection)
    credential = None
    if secret:
        credential = await connection.app.state.credentials.resolve(secret, allow_bootstrap=True)
    if credential is None or credential.kind not in ("management", "oauth_client"):
        _audit_denied(connection, {"kind": "anonymous", "id": None, "name": None})
        raise unauthorized()
    scope = handler.opt.get("scope")
    if scope and scope not in credential.scopes:
        _audit_denied(connection, credential.actor())
        raise forbidden(f"this route needs the scope {scope}")
    _admit(connection, credential)


def _admit(connection: ASGIConnection[Any, Any, Any, Any], credential: Credential) -> None:
    """Let the credential in, if the route's content type (a `type_id` path parameter) is one of its types."""
    type_id = connection.path_params.get("type_id")
    if type_id is not None:
        credential.require_type(type_id)
    connection.scope["state"]["credential"] = credential


async def delivery_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Delivery routes: a delivery key, or anonymous with CMS_PUBLIC_DELIVERY=1.

    Preview routes (opt["preview"]) take a preview key, a preview token (only they do) or a
    management credential with content:read.
    """
    if _is_options(connection):
        return
    state = connection.app.state
    secret = presented_secret(connection)
    preview = handler.opt.get("preview", False)
    if secret is None:
        if preview or not state.settings.public_delivery:
            raise unauthorized()
        _admit(connection, ANONYMOUS)
        return
    credential = await state.credentials.resolve(secret, allow_bootstrap=True) if secret else None
    if credential is None:
        raise unauthorized()
    if preview:
        if credential.kind in ("preview", "preview_token") or (
            credential.kind in ("management", "oauth_client") and "content:read" in credential.scopes
        ):
            _admit(connection, credential)
            return
        raise forbidden("preview needs a preview key or token, or a management credential with content:read")
    if credential.kind not in ("delivery", "preview"):
        raise ProblemError(401, "unauthorized", "use a delivery key here", headers={"WWW-Authenticate": 'Bearer realm="cms"'})
    _admit(connection, credential)
