"""A direct executor for the queries frontends send: the same answer as graphql-core's executor,
without a resolver call, an awaitable check and a result-completion step per field.

Our objects are stored documents (resolvers.shape), so most fields are a dictionary read. The
executor walks the operation one level of objects at a time: it collects the fields selected on
each concrete type once per level (not once per object), loads every reference that level needs
in one batch per locale (the request's DataLoaders, the same as graphql-core's path), then builds
the level's objects and goes down. Root fields read through the same resolvers as graphql-core's
path (resolvers.single / collection).

Anything it does not cover answers `Unsupported` before any result is used, and the caller runs
graphql-core instead, which is then the whole answer: introspection, errors of any kind (a
resolver's, a null in a non-null position, a key that may not read a reference), `@defer`/`@stream`,
fragment arguments. A property test compares the two executors on random queries.
"""

from __future__ import annotations

import asyncio
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLIncludeDirective,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLSkipDirective,
    GraphQLUnionType,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
)
from graphql.execution.values import (
    VariableValues,
    get_argument_values,
    get_directive_values,
    get_variable_values,
)

from .names import type_name
from .resolvers import Context

_TRIVIAL_SCALARS = {"String", "ID", "DateTime", "Date", "JSON"}


class Unsupported(Exception):
    """This operation (or its data) needs graphql-core's executor."""


Fields = dict[str, list[FieldNode]]  # response key -> the field nodes merged under it


class Executor:
    def __init__(self, schema: GraphQLSchema, document: DocumentNode, operation_name: str | None,
                 raw_variables: dict[str, Any] | None, context: Context) -> None:
        self.schema = schema
        self.context = context
        self.fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        chosen = [o for o in operations if operation_name is None or (o.name and o.name.value == operation_name)]
        if len(chosen) != 1 or chosen[0].operation != OperationType.QUERY:
            raise Unsupported("operation")
        self.operation = chosen[0]
        coerced = get_variable_values(schema, self.operation.variable_definitions or (), raw_variables or {})
        if not isinstance(coerced, VariableValues):
            raise Unsupported("variables")
        self.variables = coerced
        self._collected: dict[tuple[int, str], Fields] = {}
        self._loaded: dict[tuple[str, str], Any] = {}  # (locale, entry id) -> shaped entry or None

    async def run(self) -> dict[str, Any]:
        root = self.schema.query_type
        assert root is not None
        fields = self._collect(self.operation.selection_set, root)
        data: dict[str, Any] = {}
        pending: list[tuple[dict[str, Any], str, Any, list[FieldNode], Any]] = []
        for key, nodes in fields.items():
            name = nodes[0].name.value
            if name == "__typename":
                data[key] = root.name
                continue
            definition = root.fields.get(name)
            if definition is None or name.startswith("__") or definition.resolve is None:
                raise Unsupported(name)
            args = get_argument_values(definition, nodes[0], self.variables)
            try:
                value = definition.resolve(None, _Info(self.context, nodes), **args)
                if hasattr(value, "__await__"):
                    value = await value
            except GraphQLError as exc:
                raise Unsupported("a root field's error") from exc
            data[key] = None
            pending.append((data, key, value, nodes, definition.type))
        await self._complete(pending)
        return data

    # -- one level at a time -----------------------------------------------------------------------

    async def _complete(self, pending: list[tuple[dict[str, Any], str, Any, list[FieldNode], Any]]) -> None:
        """Fill `parent[key]` with `value` completed as `field_type` for each pending entry; objects
        go to the next level after their level's references are loaded."""
        while pending:
            objects: list[tuple[dict[str, Any], str | int, Any, Fields, GraphQLObjectType]] = []
            for parent, key, value, nodes, field_type in pending:
                self._place(parent, key, value, nodes, field_type, objects)
            await self._load_references(objects)
            pending = []
            for parent, key, value, fields, object_type in objects:
                out: dict[str, Any] = {}
                parent[key] = out
                self._fill(out, value, fields, object_type, pending)

    def _place(self, parent: Any, key: str | int, value: Any, nodes: list[FieldNode], field_type: Any,
               objects: list[tuple[Any, str | int, Any, Fields, GraphQLObjectType]]) -> None:
        non_null = isinstance(field_type, GraphQLNonNull)
        inner = field_type.of_type if non_null else field_type
        if value is None:
            if non_null:
                raise Unsupported("null in a non-null position")
            parent[key] = None
            return
        if isinstance(inner, GraphQLList):
            if not isinstance(value, list):
                raise Unsupported("not a list")
            items: list[Any] = [None] * len(value)
            parent[key] = items
            for index, item in enumerate(value):
                self._place(items, index, item, nodes, inner.of_type, objects)
            return
        if isinstance(inner, GraphQLScalarType):
            parent[key] = value if inner.name in _TRIVIAL_SCALARS and isinstance(value, str) else inner.serialize(value)
            return
        if isinstance(inner, GraphQLUnionType):
            concrete = self.schema.get_type(type_name(value["__type"]))
            if not isinstance(concrete, GraphQLObjectType) or concrete not in inner.types:
                raise Unsupported("union member")
            inner = concrete
        if not isinstance(inner, GraphQLObjectType):
            raise Unsupported("type")
        objects.append((parent, key, value, self._subfields(nodes, inner), inner))

    def _fill(self, out: dict[str, Any], value: dict[str, Any], fields: Fields, object_type: GraphQLObjectType,
              pending: list[tuple[dict[str, Any], str, Any, list[FieldNode], Any]]) -> None:
        for key, nodes in fields.items():
            name = nodes[0].name.value
            if name == "__typename":
                out[key] = object_type.name
                continue
            definition = object_type.fields[name]
            resolve = definition.resolve
            if resolve is None:
                child = value.get(name)
            elif hasattr(resolve, "key"):  # a renamed key (types.renamed)
                child = value.get(resolve.key)
            else:
                reference = getattr(resolve, "reference", None)
                if reference is None:
                    raise Unsupported(name)
                child = self._referenced(value, reference)
            field_type = definition.type
            bare = field_type.of_type if isinstance(field_type, GraphQLNonNull) else field_type
            if isinstance(bare, GraphQLScalarType):
                if child is None:
                    if bare is not field_type:
                        raise Unsupported("null in a non-null position")
                    out[key] = None
                else:
                    out[key] = child if bare.name in _TRIVIAL_SCALARS and isinstance(child, str) else bare.serialize(child)
                continue
            out[key] = None
            pending.append((out, key, child, nodes, field_type))

    # -- references ----------------------------------------------------------------------------------

    def _referenced(self, value: dict[str, Any], reference: tuple[str, bool]) -> Any:
        field_id, is_list = reference
        loaded = self._loaded
        link = value.get(field_id)
        if is_list:
            if not isinstance(link, list):
                return []
            found = []
            for item in link:
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    document = self._usable(loaded.get((value["locale"], item["id"])))
                    if document is not None:
                        found.append(document)
            return found
        if not isinstance(link, dict) or not isinstance(link.get("id"), str):
            return None
        return self._usable(loaded.get((value["locale"], link["id"])))

    def _usable(self, document: dict[str, Any] | None) -> dict[str, Any] | None:
        if document is None or document["__type"] not in self.context.types:
            return None
        if not self.context.credential.may_use_type(document["__type"]):
            raise Unsupported("a reference the key may not read")  # graphql-core's path reports it
        return document

    async def _load_references(self, objects: list[tuple[Any, str | int, Any, Fields, GraphQLObjectType]]) -> None:
        """Every reference the objects of this level select, loaded in one batch per locale."""
        wanted: dict[tuple[str, str], None] = {}
        occurrences = 0
        for _, _, value, fields, object_type in objects:
            for nodes in fields.values():
                definition = object_type.fields.get(nodes[0].name.value)
                reference = getattr(definition.resolve, "reference", None) if definition is not None else None
                if reference is None:
                    continue
                link = value.get(reference[0])
                for item in link if isinstance(link, list) else [link]:
                    if isinstance(item, dict) and isinstance(item.get("id"), str):
                        wanted[(value["locale"], item["id"])] = None
                        occurrences += 1
        self.context.loaders.count(occurrences)  # before anything is loaded (TooLarge past the bound)
        loaded = self._loaded
        missing = [k for k in wanted if k not in loaded]
        if not missing:
            return
        self.context.tags.update(f"entry:{entry_id}" for _, entry_id in missing)
        loaders = self.context.loaders
        found = await asyncio.gather(*(loaders.load(locale, entry_id) for locale, entry_id in missing))
        loaded.update(zip(missing, found, strict=True))

    # -- fields ----------------------------------------------------------------------------------------

    def _subfields(self, nodes: list[FieldNode], object_type: GraphQLObjectType) -> Fields:
        if len(nodes) == 1:
            selection = nodes[0].selection_set
            return self._collect(selection, object_type) if selection is not None else {}
        merged: Fields = {}
        for node in nodes:
            if node.selection_set is not None:
                for key, more in self._collect(node.selection_set, object_type).items():
                    merged.setdefault(key, []).extend(more)
        return merged

    def _collect(self, selection_set: SelectionSetNode, object_type: GraphQLObjectType) -> Fields:
        cache_key = (id(selection_set), object_type.name)
        found = self._collected.get(cache_key)
        if found is None:
            found = {}
            self._walk(selection_set, object_type, found, set())
            self._collected[cache_key] = found
        return found

    def _walk(self, selection_set: SelectionSetNode, object_type: GraphQLObjectType, out: Fields,
              visited: set[str]) -> None:
        for selection in selection_set.selections:
            if not self._included(selection):
                continue
            if isinstance(selection, FieldNode):
                key = selection.alias.value if selection.alias else selection.name.value
                out.setdefault(key, []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                if selection.type_condition is None or self._applies(selection.type_condition.name.value, object_type):
                    self._walk(selection.selection_set, object_type, out, visited)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if selection.arguments:
                    raise Unsupported("fragment arguments")
                if name in visited:
                    continue
                visited.add(name)
                fragment = self.fragments.get(name)
                if fragment is not None and self._applies(fragment.type_condition.name.value, object_type):
                    self._walk(fragment.selection_set, object_type, out, visited)

    def _applies(self, condition: str, object_type: GraphQLObjectType) -> bool:
        if condition == object_type.name:
            return True
        named = self.schema.get_type(condition)
        return isinstance(named, GraphQLUnionType) and object_type in named.types

    def _included(self, node: Any) -> bool:
        directives = node.directives
        if not directives:
            return True
        for directive in directives:
            if directive.name.value not in ("skip", "include"):
                raise Unsupported(f"@{directive.name.value}")
        skip = get_directive_values(GraphQLSkipDirective, node, self.variables)
        if skip and skip.get("if") is True:
            return False
        include = get_directive_values(GraphQLIncludeDirective, node, self.variables)
        return not (include and include.get("if") is False)


class _Info:
    """What the root resolvers read of graphql-core's resolve info."""

    def __init__(self, context: Context, nodes: list[FieldNode]) -> None:
        self.context = context
        self.field_nodes = nodes
