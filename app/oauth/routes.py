"""/v1/oauth-clients (scope credentials:manage); /oauth/token, /oauth/revoke and
/.well-known/jwks.json, which answer as their RFCs say (form bodies, `{"error": …}`), not problem+json."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from litestar import Request, Response, Router, delete, get, post
from litestar.params import FromPath

from ..credentials.guards import client_ip, current, management_guard
from ..http import JSON, encode, many, one, query_int, read_json
from ..openapi import LIST_QUERY, Doc, OAuthClient, OAuthClientInput, list_of, one_of
from ..problems import malformed, not_found
from ..routing import pool
from . import repository as repo
from . import service
from .service import OAuthError

Req = Request[Any, Any, Any]
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_FORM_BYTES = 16 * 1024


@post("/", opt={"doc": Doc(201, one_of(OAuthClient), body=OAuthClientInput)})
async def create_client(request: Req) -> Response[bytes]:
    body = await read_json(request)
    async with pool(request).acquire() as conn:
        row, secret = await service.create_client(
            conn, body, current(request), request_id=request.scope["state"]["request_id"], ip=client_ip(request)
        )
    data = service.client_json(row)
    data["client_secret"] = secret
    return one(data, 201, {"Location": f"/v1/oauth-clients/{row['id']}", **NO_STORE})


@get("/", opt={"doc": Doc(200, list_of(OAuthClient), query=LIST_QUERY)})
async def list_clients(request: Req) -> Response[bytes]:
    limit = query_int(request, "limit", 20, 1, 100)
    cursor = request.query_params.get("cursor")
    if cursor is not None and not (0 < len(cursor) <= 64 and cursor.replace("_", "").isalnum()):
        raise malformed("cursor", "is not a cursor from meta.next_cursor")
    async with pool(request).acquire() as conn:
        rows = await repo.list_clients(conn, cursor, limit + 1)
        total = await repo.count_clients(conn)
    more = len(rows) > limit
    rows = rows[:limit]
    return many([service.client_json(r) for r in rows],
                {"limit": limit, "next_cursor": rows[-1]["id"] if more else None, "total": total})


@get("/{client_id:str}", opt={"doc": Doc(200, one_of(OAuthClient), (404,))})
async def get_client(request: Req, client_id: FromPath[str]) -> Response[bytes]:
    async with pool(request).acquire() as conn:
        row = await repo.get_client(conn, client_id) if len(client_id) <= 64 else None
    if row is None:
        raise not_found("oauth client")
    return one(service.client_json(row))


@delete("/{client_id:str}", opt={"doc": Doc(204, None, (404,))}, status_code=204)
async def delete_client(request: Req, client_id: FromPath[str]) -> None:
    async with pool(request).acquire() as conn:
        await service.delete_client(
            conn, client_id, current(request), request_id=request.scope["state"]["request_id"], ip=client_ip(request)
        )


async def _form(request: Req) -> dict[str, str]:
    """An application/x-www-form-urlencoded body; a parameter given twice is an error (RFC 6749 §3.2)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "send the parameters as application/x-www-form-urlencoded")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_FORM_BYTES:
        raise OAuthError("invalid_request", f"the body is larger than {MAX_FORM_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise OAuthError("invalid_request", f"the body is larger than {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body), max_num_fields=20)
    except (ValueError, UnicodeDecodeError):
        raise OAuthError("invalid_request", "the form body cannot be read") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"{name} is given more than once")
        form[name] = value
    return form


async def _client_form(request: Req) -> tuple[dict[str, str], Any]:
    """The form and the client it authenticates (RFC 6749 §2.3.1), for both RFC endpoints."""
    form = await _form(request)
    client_id, secret, by_basic = service.client_from_request(request.headers.get("authorization"), form)
    return form, await service.authenticate(request.app.state.oauth_clients, client_id, secret, by_basic)


def _error(exc: OAuthError) -> Response[bytes]:
    body = encode({"error": exc.error, "error_description": exc.description})
    return Response(content=body, status_code=exc.status, media_type=JSON, headers={**NO_STORE, **exc.headers})


@post("/oauth/token", opt={"public": True}, include_in_schema=False, status_code=200)
async def token(request: Req) -> Response[bytes]:
    """Client credentials grant → an access token (RFC 6749 §4.4, §5.1)."""
    state = request.app.state
    try:
        form, client = await _client_form(request)
        if form.get("grant_type") != "client_credentials":
            error = "invalid_request" if not form.get("grant_type") else "unsupported_grant_type"
            raise OAuthError(error, "grant_type must be client_credentials")
        answer = await service.issue_token(state.signing, client, form.get("scope"), state.settings.management_url)
    except OAuthError as exc:
        return _error(exc)
    return Response(content=encode(answer), media_type=JSON, headers=NO_STORE)


@post("/oauth/revoke", opt={"public": True}, include_in_schema=False, status_code=200)
async def revoke(request: Req) -> Response[bytes]:
    """RFC 7009: 200 whatever the token was, once the client is authenticated."""
    state = request.app.state
    try:
        form, client = await _client_form(request)
        if not form.get("token"):
            raise OAuthError("invalid_request", "token is required")
        async with state.pool.acquire() as conn:
            await service.revoke_token(conn, state.signing, client["id"], form["token"], state.settings.management_url)
    except OAuthError as exc:
        return _error(exc)
    return Response(content=b"", status_code=200, headers=NO_STORE)


@get("/.well-known/jwks.json", opt={"public": True}, include_in_schema=False)
async def jwks(request: Req) -> Response[bytes]:
    keys = await request.app.state.signing.jwks()
    # Short caching: a rotated-in key must be fetchable before the tokens it signs are common.
    return Response(content=encode(keys), media_type=JSON, headers={"Cache-Control": "public, max-age=60"})


OAUTH_CLIENT_ROUTES = Router(
    "/v1/oauth-clients", guards=[management_guard], opt={"scope": "credentials:manage"},
    route_handlers=[create_client, list_clients, get_client, delete_client],
)
OAUTH_ROUTES = [OAUTH_CLIENT_ROUTES, token, revoke, jwks]
