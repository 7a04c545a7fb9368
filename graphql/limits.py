"""What one GraphQL document may ask for, checked before anything runs (API.md "GraphQL"):
at most 100 KB of body and MAX_TOKENS tokens (both before parsing finishes), depth ≤ 10 and
aliases ≤ 30 (before validation: validation's own cost grows with the document), and cost ≤ 1000
(after validation, with the variables): every field costs 1; a list multiplies its selection's
cost by how many items it can hold: a collection's `items` by its `limit`, a list of references
or assets by 10. Nested lists multiply.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    value_from_ast,
)
from graphql.language import DocumentNode

MAX_BODY_BYTES = 100 * 1024
MAX_TOKENS = 5000
MAX_DEPTH = 10
# Introspection (`__schema`, `__type`) reads the schema only, never the database: its subtree has its
# own depth bound (graphql-core's standard introspection query, which GraphiQL and codegen tools
# send, nests 13 levels) and costs 1.
INTROSPECTION = ("__schema", "__type")
MAX_INTROSPECTION_DEPTH = 20
MAX_ALIASES = 30
MAX_COST = 1000
REFERENCE_LIST_SIZE = 10
DEFAULT_LIMIT = 20


def too_complex(message: str, **extensions: Any) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "QUERY_TOO_COMPLEX", **extensions})


def check_shape(document: DocumentNode) -> GraphQLError | None:
    """Depth and aliases of every operation (fragments followed once per path; a fragment cycle is
    left to validation, which refuses it)."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    aliases = 0
    for definition in document.definitions:
        aliases += _aliases(definition.selection_set) if hasattr(definition, "selection_set") else 0
    if aliases > MAX_ALIASES:
        return too_complex(f"the document uses {aliases} aliases; at most {MAX_ALIASES}", aliases=aliases)
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            introspection: list[int] = []
            depth = _depth(definition.selection_set, fragments, frozenset(), introspection)
            if depth > MAX_DEPTH:
                return too_complex(f"the query nests {depth} levels deep; at most {MAX_DEPTH}", depth=depth)
            deepest = max(introspection, default=0)
            if deepest > MAX_INTROSPECTION_DEPTH:
                return too_complex(f"the introspection nests {deepest} levels deep; at most {MAX_INTROSPECTION_DEPTH}",
                                   depth=deepest)
    return None


def _aliases(selection_set: SelectionSetNode | None) -> int:
    if selection_set is None:
        return 0
    count = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode) and selection.alias is not None:
            count += 1
        count += _aliases(getattr(selection, "selection_set", None))
    return count


def _depth(selection_set: SelectionSetNode | None, fragments: dict[str, FragmentDefinitionNode],
           seen: frozenset[str], introspection: list[int] | None, limit: int = MAX_DEPTH) -> int:
    """How deep fields nest below `selection_set` (stops counting past `limit`). Introspection
    subtrees are not counted here: their depths go to `introspection`."""
    if selection_set is None:
        return 0
    deepest = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if introspection is not None and selection.name.value in INTROSPECTION:
                below = _depth(selection.selection_set, fragments, seen, None, MAX_INTROSPECTION_DEPTH)
                introspection.append(1 + below)
                continue
            deepest = max(deepest, 1 + _depth(selection.selection_set, fragments, seen, introspection, limit))
            if deepest > limit:
                return deepest
        elif isinstance(selection, InlineFragmentNode):
            deepest = max(deepest, _depth(selection.selection_set, fragments, seen, introspection, limit))
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in seen or name not in fragments:
                continue
            deepest = max(deepest, _depth(fragments[name].selection_set, fragments, seen | {name}, introspection, limit))
    return deepest


def cost(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None,
         variables: dict[str, Any] | None) -> int:
    """The cost of the operation that runs (the document is valid)."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    chosen = [o for o in operations if operation_name is None or (o.name and o.name.value == operation_name)]
    if not chosen:
        return 0
    root = schema.query_type
    return _cost(chosen[0].selection_set, root, fragments, variables or {}) if root else 0


def _cost(selection_set: SelectionSetNode | None, parent: Any, fragments: dict[str, FragmentDefinitionNode],
          variables: dict[str, Any]) -> int:
    if selection_set is None:
        return 0
    total = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            total += _field_cost(selection, parent, fragments, variables)
        elif isinstance(selection, InlineFragmentNode):
            on = parent
            if selection.type_condition is not None and isinstance(parent, GraphQLUnionType):
                on = next((t for t in parent.types if t.name == selection.type_condition.name.value), parent)
            total += _cost(selection.selection_set, on, fragments, variables)
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                on = parent
                if isinstance(parent, GraphQLUnionType):
                    on = next((t for t in parent.types if t.name == fragment.type_condition.name.value), parent)
                total += _cost(fragment.selection_set, on, fragments, variables)
    return total


def _field_cost(node: FieldNode, parent: Any, fragments: dict[str, FragmentDefinitionNode],
                variables: dict[str, Any]) -> int:
    name = node.name.value
    if not isinstance(parent, GraphQLObjectType) or name not in parent.fields:
        return 1  # __typename, introspection (schema only), or a union's own selections
    definition = parent.fields[name]
    field_type = definition.type
    inner = get_named_type(field_type)
    if name.endswith("Collection") and "limit" in definition.args and isinstance(inner, GraphQLObjectType):
        # the collection is the list: its `items` selection costs `limit` times
        limit = _argument(node, definition, "limit", variables)
        total = 1
        for sub in _fields(node.selection_set, fragments) if node.selection_set else []:
            items = inner.fields.get(sub.name.value)
            if sub.name.value == "items" and items is not None:
                total += 1 + limit * _cost(sub.selection_set, get_named_type(items.type), fragments, variables)
            else:
                total += 1
        return total
    below = _cost(node.selection_set, inner, fragments, variables)
    unwrapped = field_type.of_type if isinstance(field_type, GraphQLNonNull) else field_type
    if isinstance(unwrapped, GraphQLList):
        return 1 + REFERENCE_LIST_SIZE * below
    return 1 + below


def _fields(selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode]) -> list[FieldNode]:
    out: list[FieldNode] = []
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            out.append(selection)
        elif isinstance(selection, InlineFragmentNode):
            out += _fields(selection.selection_set, fragments)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value in fragments:
            out += _fields(fragments[selection.name.value].selection_set, fragments)
    return out


def _argument(node: FieldNode, definition: Any, name: str, variables: dict[str, Any]) -> int:
    for argument in node.arguments or ():
        if argument.name.value == name:
            value = value_from_ast(argument.value, definition.args[name].type, variables)
            return value if isinstance(value, int) and value > 0 else DEFAULT_LIMIT
    default = definition.args[name].default_value
    return default if isinstance(default, int) else DEFAULT_LIMIT
