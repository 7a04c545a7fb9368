"""The OpenAPI document of both apps: what every route answers, and what it takes.

Handlers answer with bytes (the hot paths never decode what render.py encoded), so Litestar cannot
see their shapes. Each handler names its own in `opt["doc"]` (a `Doc`), and `openapi_document`
writes them into Litestar's document: the success body, every problem status the route can
answer (RFC 9457 `application/problem+json`), the JSON request body and the query parameters.
The shapes below are the wire contract of docs/api.md, as JSON Schema (msgspec generates it).
"""

from __future__ import annotations

import builtins
import functools
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from litestar import Litestar

UNSET = msgspec.UNSET
Unset = msgspec.UnsetType
Json = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# shapes of answers


class ProblemItem(msgspec.Struct, kw_only=True):
    detail: str
    pointer: str | Unset = UNSET
    parameter: str | Unset = UNSET


class Problem(msgspec.Struct, kw_only=True):
    type: str
    title: str
    status: int
    detail: str
    request_id: str | None
    errors: list[ProblemItem] | Unset = UNSET
    blocking_entries: int | Unset = UNSET


class ListMeta(msgspec.Struct, kw_only=True):
    limit: int
    next_cursor: str | None
    total: int | Unset = UNSET


class Link(msgspec.Struct, kw_only=True):
    id: str
    type: str


class Entry(msgspec.Struct, kw_only=True):
    """ENTRY: references are links or, included, ENTRYs; assets are resolved objects."""

    id: str
    type: str
    locale: str
    version: int
    created_at: str
    updated_at: str
    published_at: str | None
    fields: Json


class ManagementEntry(Entry, kw_only=True):
    status: Literal["draft", "published", "changed"]
    published_version: int | None
    first_published_at: str | None


class FieldShape(msgspec.Struct, kw_only=True):
    id: str
    type: str
    required: bool
    unique: bool
    localized: bool
    indexed: bool
    validations: Json
    name: str | Unset = UNSET
    list: bool | Unset = UNSET
    to: builtins.list[str] | Unset = UNSET
    from_: str | None | Unset = msgspec.field(default=UNSET, name="from")
    values: builtins.list[str] | Unset = UNSET
    fields: builtins.list[FieldShape] | Unset = UNSET  # component
    blocks: dict[str, builtins.list[FieldShape]] | Unset = UNSET  # blocks


class Rendering(msgspec.Struct, kw_only=True):
    """How far the type's last change has reached its entries, documents and files (app/schema/rerenders.py)."""

    status: str  # running | done | failed
    phase: str  # entries | dependents | finish | done
    reason: str  # content_type | locale
    version: int
    entries_done: int
    entries_total: int
    dependents_done: int
    attempts: int
    error: str | None
    started_at: str
    updated_at: str
    finished_at: str | None


class ContentType(msgspec.Struct, kw_only=True):
    id: str
    name: str
    description: str | None
    display_field: str | None
    fields: list[FieldShape]
    version: int
    created_at: str | None
    updated_at: str | None
    rendering: Rendering | None = None  # GET of one type and PUT: null for a type never changed


class Locale(msgspec.Struct, kw_only=True):
    code: str
    name: str
    fallback: str | None
    default: bool
    created_at: str | None
    updated_at: str | None


class Actor(msgspec.Struct, kw_only=True):
    kind: str
    id: str | None
    name: str | None


class Key(msgspec.Struct, kw_only=True):
    id: str
    name: str
    kind: Literal["delivery", "preview", "management"]
    prefix: str
    scopes: list[str]
    content_types: list[str] | None
    rate_limit: str | None
    created_at: str | None
    created_by: Actor | None
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None
    secret: str | Unset = UNSET  # in the answer to POST /v1/keys only


class Release(msgspec.Struct, kw_only=True):
    id: str
    title: str
    entries: list[Link]
    status: Literal["open", "published"]
    version: int
    created_at: str | None
    updated_at: str | None
    published_at: str | None


class ScheduledAction(msgspec.Struct, kw_only=True):
    id: str
    action: Literal["publish", "unpublish"]
    entry: Link | None
    release: str | None
    at: str | None
    status: Literal["pending", "done", "failed", "canceled"]
    error: str | None
    created_by: Actor | None
    created_at: str | None
    updated_at: str | None
    executed_at: str | None


class Event(msgspec.Struct, kw_only=True):
    id: str
    type: str
    created_at: str | None
    data: Json


class AuditEntry(msgspec.Struct, kw_only=True):
    id: str
    at: str
    actor: Json
    action: str
    target: str | None
    request_id: str | None
    ip: str | None
    outcome: str


class VersionSummary(msgspec.Struct, kw_only=True):
    version: int
    created_at: str | None
    actor: Actor | None
    action: str


class Version(VersionSummary, kw_only=True):
    fields: Json


class Webhook(msgspec.Struct, kw_only=True):
    id: str
    url: str
    events: list[str]
    types: list[str] | None
    headers: dict[str, str]
    active: bool
    disabled_reason: str | None
    version: int
    created_by: Actor | None
    created_at: str | None
    updated_at: str | None
    secret: str | Unset = UNSET  # when created and when rotated only


class WebhookAttempt(msgspec.Struct, kw_only=True):
    at: str | None
    status_code: int | None
    duration_ms: int
    error: str | None
    response: str | None


class WebhookDelivery(msgspec.Struct, kw_only=True):
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: list[WebhookAttempt]
    next_attempt_at: str | None
    created_at: str | None


class BulkResult(msgspec.Struct, kw_only=True):
    index: int
    status: int
    id: str | None
    error: Problem | None


class BulkResults(msgspec.Struct, kw_only=True):
    results: list[BulkResult]


class SyncItem(msgspec.Struct, kw_only=True):
    op: Literal["upsert", "delete"]
    entry: Entry | Unset = UNSET
    id: str | Unset = UNSET
    type: str | Unset = UNSET


class SyncMeta(msgspec.Struct, kw_only=True):
    limit: int
    next_cursor: str
    has_more: bool


class SyncPage(msgspec.Struct, kw_only=True):
    data: list[SyncItem]
    meta: SyncMeta


# ---------------------------------------------------------------------------------------------
# shapes of request bodies


class FieldInput(msgspec.Struct, kw_only=True):
    id: str
    type: str
    name: str | Unset = UNSET
    required: bool | Unset = UNSET
    unique: bool | Unset = UNSET
    localized: bool | Unset = UNSET
    indexed: bool | Unset = UNSET
    validations: Json | Unset = UNSET
    list: bool | Unset = UNSET
    to: builtins.list[str] | Unset = UNSET
    from_: str | Unset = msgspec.field(default=UNSET, name="from")
    values: builtins.list[str] | Unset = UNSET
    fields: builtins.list[FieldInput] | Unset = UNSET  # component
    blocks: dict[str, builtins.list[FieldInput]] | Unset = UNSET  # blocks


class ContentTypeInput(msgspec.Struct, kw_only=True):
    name: str
    description: str | None | Unset = UNSET
    display_field: str | None | Unset = UNSET
    fields: list[FieldInput] | Unset = UNSET


class LocaleInput(msgspec.Struct, kw_only=True):
    name: str
    fallback: str | None | Unset = UNSET
    default: bool | Unset = UNSET


class EntryInput(msgspec.Struct, kw_only=True):
    fields: Json


class ReleaseInput(msgspec.Struct, kw_only=True):
    title: str
    entries: list[Link] | Unset = UNSET


class ScheduledActionInput(msgspec.Struct, kw_only=True):
    action: Literal["publish", "unpublish"]
    at: str
    entry: Link | Unset = UNSET
    release: str | Unset = UNSET


class BulkAction(msgspec.Struct, kw_only=True):
    op: Literal["upsert", "publish", "unpublish", "delete"]
    type: str
    id: str | Unset = UNSET
    locale: str | Unset = UNSET
    fields: Json | Unset = UNSET


class BulkInput(msgspec.Struct, kw_only=True):
    actions: list[BulkAction]
    atomic: bool | Unset = UNSET


class WebhookInput(msgspec.Struct, kw_only=True):
    url: str
    events: list[str]
    types: list[str] | None | Unset = UNSET
    headers: dict[str, str] | Unset = UNSET
    active: bool | Unset = UNSET


class KeyInput(msgspec.Struct, kw_only=True):
    name: str
    kind: Literal["delivery", "preview", "management"]
    scopes: list[str] | Unset = UNSET
    content_types: list[str] | Unset = UNSET
    expires_at: str | Unset = UNSET
    rate_limit: str | Unset = UNSET


class OAuthClientInput(msgspec.Struct, kw_only=True):
    name: str
    scopes: list[str]
    content_types: list[str] | Unset = UNSET


class OAuthClient(msgspec.Struct, kw_only=True):
    client_id: str
    name: str
    scopes: list[str]
    content_types: list[str] | None
    created_at: str
    created_by: Json
    client_secret: str | Unset = UNSET  # only when created


class PreviewTokenInput(msgspec.Struct, kw_only=True):
    ttl_seconds: int | Unset = UNSET  # default 900; 60..3600


class PreviewToken(msgspec.Struct, kw_only=True):
    token: str
    expires_at: str


class KeyRotation(msgspec.Struct, kw_only=True):
    grace_seconds: float | Unset = UNSET  # default 86400; 0..2592000


# ---------------------------------------------------------------------------------------------
# what a route documents


@functools.cache
def one_of(shape: Any) -> type[msgspec.Struct]:
    """`{"data": shape}`."""
    return msgspec.defstruct(f"One{shape.__name__}", [("data", shape)], kw_only=True)


@functools.cache
def list_of(shape: Any) -> type[msgspec.Struct]:
    """`{"data": [shape, ...], "meta": {"limit", "next_cursor", "total"?}}`."""
    return msgspec.defstruct(f"ListOf{shape.__name__}", [("data", list[shape]), ("meta", ListMeta)], kw_only=True)


# The query parameters routes take, by name (JSON Schema of each value).
QUERY: dict[str, Json] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": 100},
    "cursor": {"type": "string"},
    "locale": {"type": "string"},
    "sort": {"type": "string"},
    "fields": {"type": "string"},
    "include": {"type": "string"},
    "depth": {"type": "integer", "minimum": 1, "maximum": 3},
    "q": {"type": "string"},
    "status": {"type": "string"},
    "force": {"type": "boolean"},
    "type": {"type": "string"},
    "after": {"type": "string"},
    "actor": {"type": "string", "maxLength": 64},
    "action": {"type": "string", "maxLength": 100},
    "request_id": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"},
    "outcome": {"type": "string", "enum": ["success", "denied"]},
}

CODES = {
    304: "Not modified: the client's copy (If-None-Match) is current",
    400: "Malformed: a bad query parameter or body",
    401: "Unauthorized: no valid credential",
    403: "Forbidden: the credential lacks the scope or content type",
    404: "Not found",
    409: "Conflict",
    410: "Gone: the cursor is older than the kept history",
    412: "Precondition failed: If-Match is stale",
    413: "Payload too large",
    415: "Unsupported media type: send application/json",
    422: "Validation failed",
}
ALWAYS = (400, 401, 403)  # a bad query string, and the guards: every guarded route can answer these
BODY = (413, 415, 422)  # routes that read a JSON body
LIST_QUERY = ("limit", "cursor")


@dataclass(frozen=True)
class Doc:
    """What a handler answers and takes, for the OpenAPI document."""

    status: int | tuple[int, ...]  # the success status(es), all with `shape`
    shape: Any  # the success body; None: no body
    problems: tuple[int, ...] = ()  # problem statuses besides ALWAYS (and BODY, with a body)
    body: Any = None  # the JSON request body
    query: tuple[str, ...] = ()
    extra: tuple[int, ...] = field(default=())  # other statuses without a body (304)


def openapi_document(app: Litestar) -> Json:
    """Litestar's document with every handler's `Doc` written in."""
    document = app.openapi_schema.to_schema()
    docs: list[tuple[str, str, Doc]] = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            doc = handler.opt.get("doc")
            if doc is not None:
                docs += [(route.path_format, method.lower(), doc) for method in handler.http_methods]
    shapes = {d.shape for _, _, d in docs if d.shape is not None} | {d.body for _, _, d in docs if d.body is not None}
    shapes.add(Problem)
    ordered = sorted(shapes, key=lambda s: s.__name__)
    refs, components = msgspec.json.schema_components(ordered, ref_template="#/components/schemas/{name}")
    ref_of = dict(zip(ordered, refs, strict=True))
    document.setdefault("components", {}).setdefault("schemas", {}).update(components)
    problem = {"application/problem+json": {"schema": ref_of[Problem]}}
    for path, method, doc in docs:
        operation = document["paths"][path][method]
        success = {"content": {"application/json": {"schema": ref_of[doc.shape]}}} if doc.shape is not None else {}
        statuses = doc.status if isinstance(doc.status, tuple) else (doc.status,)
        responses: Json = {str(status): {"description": "Success", **success} for status in statuses}
        for code in doc.extra:
            responses[str(code)] = {"description": CODES[code]}
        for code in sorted({*ALWAYS, *doc.problems, *(BODY if doc.body is not None else ())}):
            responses[str(code)] = {"description": CODES[code], "content": problem}
        operation["responses"] = responses
        if doc.body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref_of[doc.body]}}}
        parameters = [p for p in operation.get("parameters", []) if p.get("in") != "query"]
        parameters += [{"name": name, "in": "query", "required": False, "schema": QUERY[name]} for name in doc.query]
        if parameters:
            operation["parameters"] = parameters
    return document
