"""The GraphQL types every schema shares: scalars, `Asset`, and the filter inputs per kind of value.

A filter input offers exactly the operators the REST parser accepts for that kind of field
(app/query/parse.py), so a `where` means what the same `filter[…]` parameters mean.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    GraphQLArgument,
    GraphQLBoolean,
    GraphQLField,
    GraphQLFloat,
    GraphQLID,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLString,
)
from graphql.language import ast

from cms.app.query.parse import ID_OPS, LINK_OPS, RANGE_OPS, SORTABLE_TYPES, TIMESTAMP_OPS
from cms.app.schema.model import Field


def _literal(node: ast.ValueNode, _variables: Any = None) -> Any:
    if isinstance(node, ast.StringValueNode):
        return node.value
    raise TypeError("a string is expected")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("a string is expected")
    return value


DateTime = GraphQLScalarType(
    "DateTime", description="An RFC 3339 date-time with offset, e.g. 2026-12-06T12:00:00.000Z.",
    serialize=_string, parse_value=_string, parse_literal=_literal,
)
Date = GraphQLScalarType(
    "Date", description="A calendar date, YYYY-MM-DD.", serialize=_string, parse_value=_string,
    parse_literal=_literal,
)


def _json_literal(node: ast.ValueNode, variables: Any = None) -> Any:
    from graphql import value_from_ast_untyped

    return value_from_ast_untyped(node, variables)


JSON = GraphQLScalarType(
    "JSON", description="Any JSON value, as stored.", serialize=lambda value: value, parse_value=lambda value: value,
    parse_literal=_json_literal,
)

def renamed(key: str) -> Any:
    """A resolver reading `key` of the stored object (the executor reads `.key` directly)."""

    def resolve(source: Any, _info: Any) -> Any:
        return source.get(key)

    resolve.key = key  # type: ignore[attr-defined]
    return resolve


Asset = GraphQLObjectType("Asset", {
    "id": GraphQLField(GraphQLNonNull(GraphQLID)),
    "url": GraphQLField(GraphQLString),
    "contentType": GraphQLField(GraphQLString, resolve=renamed("content_type")),
    "size": GraphQLField(GraphQLInt),
    "width": GraphQLField(GraphQLInt),
    "height": GraphQLField(GraphQLInt),
    "title": GraphQLField(GraphQLString),
    "alt": GraphQLField(GraphQLString),
})

# GraphQL operator name -> the REST operator
OPERATORS = {
    "eq": "eq", "ne": "ne", "in": "in", "nin": "nin", "lt": "lt", "lte": "lte", "gt": "gt", "gte": "gte",
    "contains": "contains", "startsWith": "startswith", "exists": "exists",
}
_REST_TO_GRAPHQL = {rest: name for name, rest in OPERATORS.items()}


def _filter_input(name: str, scalar: GraphQLInputType, ops: set[str]) -> GraphQLInputObjectType:
    fields = {}
    for rest in ("eq", "ne", "in", "nin", "lt", "lte", "gt", "gte", "contains", "startswith", "exists"):
        if rest not in ops:
            continue
        if rest in ("in", "nin"):
            kind: GraphQLInputType = GraphQLList(GraphQLNonNull(scalar))
        elif rest == "exists":
            kind = GraphQLBoolean
        elif rest in ("contains", "startswith"):
            kind = GraphQLString
        else:
            kind = scalar
        fields[_REST_TO_GRAPHQL[rest]] = GraphQLInputField(kind)
    return GraphQLInputObjectType(name, fields)


_EQUALITY = {"eq", "ne", "in", "nin", "exists"}
_LIKE = {"contains", "startswith"}

StringFilter = _filter_input("StringFilter", GraphQLString, _EQUALITY | RANGE_OPS | _LIKE)  # text, slug, enum
TextFilter = _filter_input("TextFilter", GraphQLString, _EQUALITY | _LIKE)  # long_text, rich_text
IntFilter = _filter_input("IntFilter", GraphQLInt, _EQUALITY | RANGE_OPS)
FloatFilter = _filter_input("FloatFilter", GraphQLFloat, _EQUALITY | RANGE_OPS)
BooleanFilter = _filter_input("BooleanFilter", GraphQLBoolean, _EQUALITY | RANGE_OPS)
DateFilter = _filter_input("DateFilter", Date, _EQUALITY | RANGE_OPS)
DateTimeFilter = _filter_input("DateTimeFilter", DateTime, _EQUALITY | RANGE_OPS)
JSONFilter = _filter_input("JSONFilter", GraphQLString, {"exists"})
IDFilter = _filter_input("IDFilter", GraphQLID, set(ID_OPS))  # the entry's own id
TimestampFilter = _filter_input("TimestampFilter", DateTime, set(TIMESTAMP_OPS))  # publishedAt, …
LinkFilter = _filter_input("LinkFilter", GraphQLID, set(LINK_OPS))  # the id a reference or asset points to
AssetFilter = GraphQLInputObjectType("AssetFilter", {"id": GraphQLInputField(LinkFilter)})

_BY_TYPE = {
    "text": StringFilter, "slug": StringFilter, "enum": StringFilter,
    "long_text": TextFilter, "rich_text": TextFilter,
    "integer": IntFilter, "number": FloatFilter, "boolean": BooleanFilter,
    "date": DateFilter, "datetime": DateTimeFilter, "json": JSONFilter, "asset": AssetFilter,
}

SHARED_TYPES = [
    DateTime, Date, JSON, Asset, StringFilter, TextFilter, IntFilter, FloatFilter, BooleanFilter, DateFilter,
    DateTimeFilter, JSONFilter, IDFilter, TimestampFilter, LinkFilter, AssetFilter,
]


def value_filter(field: Field) -> GraphQLInputObjectType | None:
    """The filter input of a field that is not a reference (None: a reference, see schema.py)."""
    return _BY_TYPE.get(field.type)


def output_scalar(field: Field) -> Any:
    """The GraphQL type of a non-reference field's value (lists are references and assets only)."""
    scalar = {
        "text": GraphQLString, "long_text": GraphQLString, "rich_text": GraphQLString, "slug": GraphQLString,
        "enum": GraphQLString, "integer": GraphQLInt, "number": GraphQLFloat, "boolean": GraphQLBoolean,
        "date": Date, "datetime": DateTime, "json": JSON, "asset": Asset,
    }[field.type]
    if field.list:
        return GraphQLNonNull(GraphQLList(GraphQLNonNull(scalar)))
    return scalar


def sortable(field: Field) -> bool:
    return field.type in SORTABLE_TYPES


LOCALE_ARGUMENT = GraphQLArgument(GraphQLString, description="A locale code; default: the default locale.")
