"""Resolvers: the root fields read through the REST query parser and compiler (app/query/) and the
document readers (app/delivery/documents.py); references through the request's DataLoaders.

Every value handed to graphql-core is an ENTRY document reshaped once (`shape`): system fields under
their GraphQL names, content fields under their ids, so graphql-core's default resolver reads every
scalar. Errors a client caused are GraphQL errors with `extensions.code` (BAD_USER_INPUT, FORBIDDEN);
a reference the key may not read resolves to null with a FORBIDDEN error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError, GraphQLResolveInfo

from cms.app.credentials.schemas import Credential
from cms.app.delivery.documents import IncludeLimit
from cms.app.problems import ProblemError
from cms.app.query.parse import Condition, Group, parse_condition, parse_list_query
from cms.app.schema.model import (
    STRUCTURED_TYPES,
    ContentType,
    Field,
)
from cms.app.schema.registry import ContentTypeRegistry, resolve_locale

from .dataloaders import EntryLoaders
from .names import type_name
from .types import OPERATORS

MAX_NESTING = 5  # AND/OR levels in one `where`
CODES = {400: "BAD_USER_INPUT", 401: "UNAUTHENTICATED", 403: "FORBIDDEN", 404: "NOT_FOUND"}
# `where` names of system fields -> REST filter names
SYSTEM_FILTERS = {"id": "id", "publishedAt": "published_at", "updatedAt": "updated_at", "createdAt": "created_at"}


@dataclass
class Context:
    """What one GraphQL request resolves with."""

    built: Any  # schema.Built
    registry: ContentTypeRegistry
    credential: Credential
    pool: Any
    reader: Any  # documents.PublishedDocuments | documents.DraftDocuments
    limit: IncludeLimit = field(default_factory=IncludeLimit)
    loaders: EntryLoaders = field(init=False)
    tags: set[str] = field(default_factory=set)  # surrogate keys of everything the answer shows
    errors: list[GraphQLError] = field(default_factory=list)  # added to graphql-core's

    def __post_init__(self) -> None:
        self.loaders = EntryLoaders(self.pool, self.reader, self.shape, self.limit)

    def shape(self, document: dict[str, Any]) -> dict[str, Any]:
        return shape(document, self.types)

    @property
    def types(self) -> dict[str, ContentType]:
        return self.built.types  # type: ignore[no-any-return]


def shape(document: dict[str, Any], types: dict[str, ContentType]) -> dict[str, Any]:
    """An ENTRY document as GraphQL objects read it. Components and blocks become objects that carry
    the entry's locale (their references load in it) and, as `__type`, their GraphQL type's name."""
    out = dict(document.get("fields") or {})
    locale = document["locale"]
    ct = types.get(document["type"])
    if ct is not None:
        for field in ct.fields:
            if field.type in STRUCTURED_TYPES and field.id in out:
                out[field.id] = _shape_value(field, out[field.id], type_name(ct.id) + type_name(field.id), locale)
    out.update(
        id=document["id"], version=document["version"], locale=locale,
        publishedAt=document.get("published_at"), updatedAt=document.get("updated_at"),
        createdAt=document.get("created_at"), __type=document["type"],
    )
    return out


def _shape_value(field: Field, value: Any, name: str, locale: str) -> Any:
    """A rendered component or blocks value as GraphQL objects (`name`: the component's type name,
    or the prefix of the blocks' names)."""

    def one(fields: list[Field], item: Any, object_name: str) -> Any:
        if not isinstance(item, dict):
            return None
        out = dict(item)
        for sub in fields:
            if sub.type in STRUCTURED_TYPES and sub.id in out:
                out[sub.id] = _shape_value(sub, out[sub.id], object_name + type_name(sub.id), locale)
        out["locale"], out["__type"] = locale, object_name
        return out

    if field.type == "component":
        if field.list:
            return [one(field.fields or [], item, name) for item in value or []]
        return one(field.fields or [], value, name)
    kinds = field.blocks or {}
    return [
        one(kinds[block["block"]], block.get("fields"), name + type_name(block["block"]))
        for block in value or [] if isinstance(block, dict) and block.get("block") in kinds
    ]


def user_error(problem: ProblemError) -> GraphQLError:
    return GraphQLError(problem.detail or problem.code or "bad request",
                        extensions={"code": CODES.get(problem.status, "BAD_USER_INPUT")})


def forbidden(type_id: str) -> GraphQLError:
    return GraphQLError(f"this credential may not read the content type {type_id!r}", extensions={"code": "FORBIDDEN"})


def _guarded(resolve: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def run(source: Any, info: GraphQLResolveInfo, **args: Any) -> Any:
        try:
            return await resolve(source, info, **args)
        except ProblemError as problem:
            raise user_error(problem) from None

    return run


def schema_version(_source: Any, info: GraphQLResolveInfo) -> str:
    return info.context.built.version  # type: ignore[no-any-return]


def resolve_union_type(value: Any, _info: GraphQLResolveInfo, _union: Any) -> str:
    return type_name(value["__type"])


async def _locale(context: Context, requested: str | None) -> str:
    return resolve_locale(await context.registry.locales(requested), requested)


def single(type_id: str) -> Callable[..., Awaitable[Any]]:
    """`article(id, slug, locale)`: one entry, or null."""

    async def resolve(_source: Any, info: GraphQLResolveInfo, id: str | None = None, slug: str | None = None,  # noqa: A002
                      locale: str | None = None) -> Any:
        context: Context = info.context
        if not context.credential.may_use_type(type_id):
            raise forbidden(type_id)
        if (id is None) == (slug is None):
            raise GraphQLError("give either id or slug", extensions={"code": "BAD_USER_INPUT"})
        code = await _locale(context, locale)
        ct = context.types[type_id]
        async with context.pool.acquire() as conn:
            document = await context.reader.one(conn, ct, code, entry_id=id, slug=slug)
        if document is None:
            context.tags.add(f"type:{type_id}")  # a publish of this type may make it appear
            return None
        context.tags.add(f"entry:{document['id']}")
        return context.shape(document)

    return _guarded(resolve)


def collection(type_id: str) -> Callable[..., Awaitable[Any]]:
    """`articleCollection(where, order, limit, cursor, locale)`: a page, its total and the next cursor."""

    async def resolve(_source: Any, info: GraphQLResolveInfo, where: dict[str, Any] | None = None,
                      order: list[str] | None = None, limit: int = 20, cursor: str | None = None,
                      locale: str | None = None) -> Any:
        context: Context = info.context
        if not context.credential.may_use_type(type_id):
            raise forbidden(type_id)
        code = await _locale(context, locale)
        ct = context.types[type_id]
        params: dict[str, str] = {"limit": str(limit)}
        if order:
            params["sort"] = ",".join(order)
        if cursor is not None:
            params["cursor"] = cursor
        conditions = tuple(conditions_of(where or {}, ct, context.types, "where", 0, context.credential.content_types))
        query = parse_list_query(params, ct, context.types, locale=code, default_sort="-published_at",
                                 conditions=conditions)
        async with context.pool.acquire() as conn:
            documents, page = await context.reader.page(conn, query)
        context.tags.add(f"type:{type_id}")
        context.tags.update(f"entry:{d['id']}" for d in documents)
        return {"items": [context.shape(d) for d in documents], "total": page.total,
                "totalRelation": page.total_relation, "nextCursor": page.next_cursor}

    return _guarded(resolve)


def reference(field_id: str) -> Callable[..., Awaitable[Any]]:
    async def resolve(source: dict[str, Any], info: GraphQLResolveInfo) -> Any:
        link = source.get(field_id)
        if not isinstance(link, dict) or not isinstance(link.get("id"), str):
            return None
        return await _load(info, source["locale"], link["id"], None)

    resolve.reference = (field_id, False)  # type: ignore[attr-defined]  # read by executor.py
    return resolve


def reference_list(field_id: str) -> Callable[..., Awaitable[Any]]:
    """A list of references: unpublished ones (and ones the key may not read) are left out."""

    async def resolve(source: dict[str, Any], info: GraphQLResolveInfo) -> Any:
        links = source.get(field_id)
        if not isinstance(links, list):
            return []
        out = []
        for index, link in enumerate(links):
            if isinstance(link, dict) and isinstance(link.get("id"), str):
                found = await _load(info, source["locale"], link["id"], index)
                if found is not None:
                    out.append(found)
        return out

    resolve.reference = (field_id, True)  # type: ignore[attr-defined]  # read by executor.py
    return resolve


async def _load(info: GraphQLResolveInfo, locale: str, entry_id: str, index: int | None) -> Any:
    context: Context = info.context
    context.tags.add(f"entry:{entry_id}")  # published later: this answer changes
    context.loaders.count(1)
    # shielded: graphql-core cancels a failed list's other items, and the loader's future is shared
    # with every other field waiting for the same entry
    found = await asyncio.shield(context.loaders.load(locale, entry_id))
    if found is None:
        return None
    if found["__type"] not in context.types:
        return None
    if not context.credential.may_use_type(found["__type"]):
        error = forbidden(found["__type"])
        if index is None:
            raise error
        path = [*info.path.as_list(), index]
        context.errors.append(GraphQLError(error.message, nodes=info.field_nodes, path=path,
                                           extensions=error.extensions))
        return None
    return found


# --- where -> conditions -----------------------------------------------------------------------------


def conditions_of(where: dict[str, Any], ct: ContentType, types: dict[str, ContentType], at: str,
                  nesting: int, allowed: frozenset[str] | None = None) -> list[Condition]:
    """A `where` input as the query engine's conditions (all must hold). Each leaf goes through the
    REST filter parser, so it accepts and means exactly what `filter[path][op]` does (for a
    credential limited to `allowed` types too: no filter through a reference into another type)."""
    if nesting > MAX_NESTING:
        raise ProblemError(400, "malformed", f"{at}: AND/OR nest at most {MAX_NESTING} levels")
    out: list[Condition] = []
    for key, value in where.items():
        if value is None:
            continue
        if key in ("AND", "OR"):
            parts = tuple(
                Group("and", tuple(conditions_of(item, ct, types, f"{at}.{key}[{n}]", nesting + 1, allowed)))
                for n, item in enumerate(value)
            )
            out.append(Group(key.lower(), parts))
        elif key in SYSTEM_FILTERS:
            out += _leaves(f"{at}.{key}", SYSTEM_FILTERS[key], value, ct, types, allowed)
        else:
            field_def = ct.field(key)
            if field_def is not None and field_def.type == "component" and not field_def.list:
                # `seo: {title: {eq: …}}` is REST's filter[seo.title][eq]
                for nested, ops in value.items():
                    if not isinstance(ops, dict):  # null, or `_empty` of a component with nothing to filter
                        continue
                    sub = next((f for f in field_def.fields or [] if f.id == nested), None)
                    if sub is not None and sub.type in ("reference", "asset"):
                        ops = ops.get("id") or {}
                    out += _leaves(f"{at}.{key}.{nested}", f"{key}.{nested}", ops, ct, types, allowed)
            elif field_def is not None and field_def.type in ("reference", "asset"):
                for nested, ops in value.items():
                    if ops is None:
                        continue
                    if nested == "id":
                        out += _leaves(f"{at}.{key}.id", key, ops, ct, types, allowed)
                    else:
                        inner = ops.get("id") if isinstance(ops, dict) and set(ops) <= {"id"} and ops else ops
                        path = f"{key}.{SYSTEM_FILTERS.get(nested, nested)}"
                        out += _leaves(f"{at}.{key}.{nested}", path, inner or {}, ct, types, allowed)
            else:
                out += _leaves(f"{at}.{key}", key, value, ct, types, allowed)
    return out


def _leaves(at: str, path: str, ops: dict[str, Any], ct: ContentType, types: dict[str, ContentType],
            allowed: frozenset[str] | None) -> list[Condition]:
    return [
        parse_condition(f"{at}.{op}", path, OPERATORS[op], _raw(value), ct, types, allowed)
        for op, value in ops.items() if value is not None
    ]


def _raw(value: Any) -> str | list[str]:
    """A GraphQL input value as the REST parser's text (lists stay lists: no comma escaping)."""
    if isinstance(value, list):
        return [_one(v) for v in value]
    return _one(value)


def _one(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)
