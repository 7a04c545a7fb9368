"""The GraphQL schema, generated from the content types, and swapped when they change.

Names follow API.md (graphql/names.py): a type `blog_post` is `BlogPost`, read with `blogPost(id|slug)`
and `blogPostCollection(where, order, limit, cursor, locale)`. Field names are the field ids. The
values the resolvers hand to graphql-core are the stored ENTRY documents reshaped once per entry
(`shape`), so every scalar field resolves with graphql-core's default resolver; references resolve
through the request's DataLoaders (resolvers.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from graphql import (
    GraphQLArgument,
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLEnumValue,
    GraphQLField,
    GraphQLID,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLString,
    GraphQLUnionType,
    print_schema,
)

from cms.app.schema.model import (
    STRUCTURED_TYPES,
    ContentType,
    Field,
)
from cms.app.schema.registry import ContentTypeRegistry

from . import resolvers
from .names import collection_field, field_name, type_name
from .types import (
    LOCALE_ARGUMENT,
    SHARED_TYPES,
    DateTime,
    IDFilter,
    LinkFilter,
    TimestampFilter,
    output_scalar,
    sortable,
    value_filter,
)

log = logging.getLogger("cms.graphql")

# System fields: GraphQL name -> the ENTRY document's key.
SYSTEM = {"id": "id", "version": "version", "locale": "locale", "publishedAt": "published_at",
          "updatedAt": "updated_at", "createdAt": "created_at"}
# Order keys of system fields: GraphQL name -> REST sort name.
SYSTEM_ORDER = {"id": "id", "publishedAt": "published_at", "updatedAt": "updated_at", "createdAt": "created_at"}
MAX_LIMIT = 100


@dataclass(frozen=True)
class Built:
    """One generated schema and what it was generated from."""

    schema: GraphQLSchema
    types: dict[str, ContentType]
    version: str  # changes whenever the schema does (`_schemaVersion`)
    sdl: str
    preview: bool


def content_fields(ct: ContentType) -> list[Field]:
    """The fields that appear in GraphQL: all but one whose id is a system field's name."""
    return [f for f in ct.fields if f.id not in SYSTEM and f.id not in ("AND", "OR")]


def build(types: dict[str, ContentType], *, preview: bool = False) -> Built:
    """Generate the schema (pure: no I/O). `preview`: drafts may never have been published."""
    objects: dict[str, GraphQLObjectType] = {}
    unions: dict[str, GraphQLUnionType] = {}
    filters: dict[str, GraphQLInputObjectType] = {}
    visible = {type_id: ct for type_id, ct in sorted(types.items())}

    def target_of(owner: str, field: Field) -> Any:
        targets = [t for t in (field.to or sorted(visible)) if t in visible]
        if not targets:
            return None
        if len(targets) == 1:
            return objects[targets[0]]
        name = f"{type_name(owner)}{type_name(field.id)}"
        if name not in unions:
            members = [objects[t] for t in targets]
            unions[name] = GraphQLUnionType(name, lambda members=members: members,
                                            resolve_type=resolvers.resolve_union_type)
        return unions[name]

    def object_fields(ct: ContentType) -> Any:
        def thunk() -> dict[str, GraphQLField]:
            out: dict[str, GraphQLField] = {
                "id": GraphQLField(GraphQLNonNull(GraphQLID)),
                "version": GraphQLField(GraphQLNonNull(GraphQLInt)),
                "locale": GraphQLField(GraphQLNonNull(GraphQLString)),
                "publishedAt": GraphQLField(DateTime if preview else GraphQLNonNull(DateTime)),
                "updatedAt": GraphQLField(GraphQLNonNull(DateTime)),
                "createdAt": GraphQLField(GraphQLNonNull(DateTime)),
            }
            for field in content_fields(ct):
                graphql_field = field_of(type_name(ct.id), field)
                if graphql_field is not None:
                    out[field.id] = graphql_field
            return out

        return thunk

    def field_of(owner: str, field: Field) -> GraphQLField | None:
        """The GraphQL field of a content field or sub-field of `owner` (a GraphQL type name); None
        for a reference to no visible type."""
        if field.type == "reference":
            target = target_of(owner, field)
            if target is None:
                return None
            if field.list:
                return GraphQLField(GraphQLNonNull(GraphQLList(GraphQLNonNull(target))),
                                    resolve=resolvers.reference_list(field.id))
            return GraphQLField(target, resolve=resolvers.reference(field.id))
        if field.type in STRUCTURED_TYPES:
            return GraphQLField(structured(owner + type_name(field.id), field))
        return GraphQLField(output_scalar(field))

    def structured(name: str, field: Field) -> Any:
        """A component's object type (`ArticleSeo`), or the union of a blocks field's block types
        (`PageBody = PageBodyHero | PageBodyQuote`)."""
        if field.type == "component":
            obj = sub_object(name, field.fields or [])
            return GraphQLNonNull(GraphQLList(GraphQLNonNull(obj))) if field.list else obj
        members = [sub_object(name + type_name(block), fields) for block, fields in (field.blocks or {}).items()]
        union = GraphQLUnionType(name, members, resolve_type=resolvers.resolve_union_type)
        return GraphQLNonNull(GraphQLList(GraphQLNonNull(union)))

    def sub_object(name: str, fields: list[Field]) -> GraphQLObjectType:
        def thunk() -> dict[str, GraphQLField]:
            out: dict[str, GraphQLField] = {}
            for sub in fields:
                graphql_field = field_of(name, sub)
                if graphql_field is not None:
                    out[sub.id] = graphql_field
            # An object type needs a field: a block without fields (a divider) gets `_empty` (null).
            return out or {"_empty": GraphQLField(GraphQLBoolean, description="A block without fields.")}

        return GraphQLObjectType(name, thunk)

    for type_id, ct in visible.items():
        objects[type_id] = GraphQLObjectType(type_name(type_id), object_fields(ct), description=ct.description)

    def filter_of(ct: ContentType) -> GraphQLInputObjectType:
        name = f"{type_name(ct.id)}Filter"
        if name in filters:
            return filters[name]

        def thunk() -> dict[str, GraphQLInputField]:
            own: dict[str, GraphQLInputField] = {
                "id": GraphQLInputField(IDFilter),
                "publishedAt": GraphQLInputField(TimestampFilter),
                "updatedAt": GraphQLInputField(TimestampFilter),
                "createdAt": GraphQLInputField(TimestampFilter),
            }
            for field in content_fields(ct):
                if field.type == "reference":
                    own[field.id] = GraphQLInputField(reference_filter(field))
                elif field.type == "component" and not field.list:
                    own[field.id] = GraphQLInputField(component_filter(type_name(ct.id) + type_name(field.id), field))
                else:
                    kind = value_filter(field)
                    if kind is not None:
                        own[field.id] = GraphQLInputField(kind)
            own["AND"] = GraphQLInputField(GraphQLList(GraphQLNonNull(filters[name])))
            own["OR"] = GraphQLInputField(GraphQLList(GraphQLNonNull(filters[name])))
            return own

        filters[name] = GraphQLInputObjectType(name, thunk)
        return filters[name]

    def reference_filter(field: Field) -> GraphQLInputObjectType:
        """`{id: LinkFilter}`, plus one level deep the fields of the referenced type when there is
        one (`author: {name: {eq: "Ada"}}` is REST's `filter[author.name][eq]`)."""
        targets = [t for t in (field.to or sorted(visible)) if t in visible]
        if len(targets) != 1:
            return reference_id_filter()
        target = visible[targets[0]]
        name = f"{type_name(target.id)}ReferenceFilter"
        if name not in filters:
            def thunk(target: ContentType = target) -> dict[str, GraphQLInputField]:
                nested: dict[str, GraphQLInputField] = {"id": GraphQLInputField(LinkFilter)}
                for system in ("publishedAt", "updatedAt", "createdAt"):
                    nested[system] = GraphQLInputField(TimestampFilter)
                for other in content_fields(target):
                    kind = reference_id_filter() if other.type == "reference" else value_filter(other)
                    if kind is not None:
                        nested[other.id] = GraphQLInputField(kind)
                return nested

            filters[name] = GraphQLInputObjectType(name, thunk)
        return filters[name]

    def component_filter(name: str, field: Field) -> GraphQLInputObjectType:
        """The sub-fields of a (non-list) component: `seo: {title: {eq: …}}`."""
        name = f"{name}Filter"
        if name not in filters:
            nested: dict[str, GraphQLInputField] = {}
            for sub in field.fields or []:
                kind = reference_id_filter() if sub.type == "reference" else value_filter(sub)
                if kind is not None:
                    nested[sub.id] = GraphQLInputField(kind)
            filters[name] = GraphQLInputObjectType(name, nested or {"_empty": GraphQLInputField(GraphQLBoolean)})
        return filters[name]

    def reference_id_filter() -> GraphQLInputObjectType:
        name = "ReferenceFilter"
        if name not in filters:
            filters[name] = GraphQLInputObjectType(name, {"id": GraphQLInputField(LinkFilter)})
        return filters[name]

    def order_of(ct: ContentType) -> GraphQLEnumType:
        values: dict[str, GraphQLEnumValue] = {}
        keys = [*SYSTEM_ORDER.items(), *((f.id, f.id) for f in content_fields(ct) if sortable(f))]
        for graphql_name, rest_name in keys:
            values[f"{graphql_name}_ASC"] = GraphQLEnumValue(rest_name)
            values[f"{graphql_name}_DESC"] = GraphQLEnumValue(f"-{rest_name}")
        return GraphQLEnumType(f"{type_name(ct.id)}Order", values)

    query_fields: dict[str, GraphQLField] = {
        "_schemaVersion": GraphQLField(GraphQLNonNull(GraphQLString), resolve=resolvers.schema_version,
                                       description="Changes whenever the schema does."),
    }
    for type_id, ct in visible.items():
        obj = objects[type_id]
        collection = GraphQLObjectType(f"{type_name(type_id)}Collection", {
            "items": GraphQLField(GraphQLNonNull(GraphQLList(GraphQLNonNull(obj)))),
            "total": GraphQLField(GraphQLNonNull(GraphQLInt)),
            "totalRelation": GraphQLField(GraphQLNonNull(GraphQLString), description=(
                '"eq": total is exact; "gte": there are more (a filtered set counts up to 10,000)')),
            "nextCursor": GraphQLField(GraphQLString),
        })
        query_fields[field_name(type_id)] = GraphQLField(obj, args={
            "id": GraphQLArgument(GraphQLID), "slug": GraphQLArgument(GraphQLString), "locale": LOCALE_ARGUMENT,
        }, resolve=resolvers.single(type_id))
        query_fields[collection_field(type_id)] = GraphQLField(GraphQLNonNull(collection), args={
            "where": GraphQLArgument(filter_of(ct)),
            "order": GraphQLArgument(GraphQLList(GraphQLNonNull(order_of(ct)))),
            "limit": GraphQLArgument(GraphQLInt, default_value=20, description=f"1 to {MAX_LIMIT}"),
            "cursor": GraphQLArgument(GraphQLString),
            "locale": LOCALE_ARGUMENT,
        }, resolve=resolvers.collection(type_id))

    schema = GraphQLSchema(GraphQLObjectType("Query", query_fields), types=SHARED_TYPES)
    sdl = print_schema(schema)
    version = hashlib.sha256(sdl.encode()).hexdigest()[:16]
    return Built(schema, visible, version, sdl, preview)


class SchemaHolder:
    """The current schema of one delivery process, rebuilt when the registry's content types or
    locales change (its generation moves on the `schema` invalidation). A request takes the schema
    once and keeps it: requests in flight finish on the schema they started with. A build that
    fails keeps the previous schema (and logs)."""

    def __init__(self, registry: ContentTypeRegistry, *, preview: bool = False) -> None:
        self.registry = registry
        self.preview = preview
        self._built: Built | None = None
        self._generation = -1
        self._lock = asyncio.Lock()

    async def current(self) -> Built:
        built = self._built
        if built is not None and self._generation == self.registry.generation:
            return built
        async with self._lock:
            if self._built is not None and self._generation == self.registry.generation:
                return self._built
            generation = self.registry.generation
            types = await self.registry.types()
            try:
                fresh = build(types, preview=self.preview)
            except Exception:
                if self._built is None:
                    raise
                log.exception("GraphQL schema rebuild failed; keeping the previous schema")
                self._generation = generation
                return self._built
            if self._built is None or fresh.version != self._built.version:
                log.info("GraphQL schema %s (%d content types)", fresh.version, len(types))
            self._built, self._generation = fresh, generation
            return fresh
