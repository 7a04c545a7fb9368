"""Walking component and blocks values: their links, leaves, required sub-fields, text, and what a
changed schema no longer defines. Tolerant of raw input (bulk looks for links before validating)."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from typing import Any

from .model import LINK_TYPES, SEARCHABLE_TYPES, STRUCTURED_TYPES, Field


def _items(field: Field, value: Any) -> Iterator[tuple[builtins.list[Field], dict[str, Any], str]]:
    """The objects of a component or blocks value with their fields and the pointer part that
    leads to their sub-fields' values (`/0`, `/2/fields`; "" for a single component)."""
    if field.type == "component":
        items = value if field.list and isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if isinstance(item, dict):
                yield field.fields or [], item, f"/{index}" if field.list else ""
    elif field.type == "blocks" and isinstance(value, list):
        kinds = field.blocks or {}
        for index, block in enumerate(value):
            if known_block(block, kinds) and isinstance(block.get("fields"), dict):
                yield kinds[block["block"]], block["fields"], f"/{index}/fields"


def known_block(block: Any, kinds: dict[str, builtins.list[Field]]) -> bool:
    """A block (stored, or raw input not validated yet) of one of the field's block types."""
    return isinstance(block, dict) and isinstance(block.get("block"), str) and block["block"] in kinds


def walk_links(field: Field, value: Any) -> Iterator[tuple[Field, dict[str, Any]]]:
    """Every reference or asset link in a value of `field`, at any depth, in document order, with the
    (sub-)field that holds it."""
    if value is None:
        return
    if field.type in LINK_TYPES:
        for link in value if isinstance(value, list) else [value]:
            if isinstance(link, dict):
                yield field, link
        return
    for fields, item, _ in _items(field, value):
        for sub in fields:
            if sub.has_links:
                yield from walk_links(sub, item.get(sub.id))


def map_values(field: Field, value: Any, leaf: Callable[[Field, Any], Any]) -> Any:
    """A copy of `value` in which every leaf value (one that is not a component or blocks) is
    `leaf(its field, it)`, absent ones included (None); the shape of components and blocks kept."""
    if field.type not in STRUCTURED_TYPES:
        return leaf(field, value)
    if value is None:
        return [] if field.many else None

    def each(fields: builtins.list[Field], item: dict[str, Any]) -> dict[str, Any]:
        return {sub.id: map_values(sub, item.get(sub.id), leaf) for sub in fields}

    if field.type == "component":
        if field.list:
            return [each(field.fields or [], item) for item in value if isinstance(item, dict)]
        return each(field.fields or [], value) if isinstance(value, dict) else None
    kinds = field.blocks or {}
    return [
        {"block": block["block"], "fields": each(kinds[block["block"]], block.get("fields") or {})}
        for block in value if known_block(block, kinds)
    ]


def map_links(field: Field, value: Any, replace: Callable[[Field, Any], Any]) -> Any:
    """A copy of `value` with each link replaced by `replace(its field, link)`; the rest as it is."""
    if value is None:
        return None
    if field.type in LINK_TYPES:
        return [replace(field, link) for link in value] if isinstance(value, list) else replace(field, value)
    if field.type not in STRUCTURED_TYPES or not field.has_links:
        return value

    def each(fields: builtins.list[Field], item: dict[str, Any]) -> dict[str, Any]:
        by_id = {sub.id: sub for sub in fields}
        return {k: map_links(by_id[k], v, replace) if k in by_id else v for k, v in item.items()}

    if field.type == "component":
        if field.list:
            return [each(field.fields or [], item) if isinstance(item, dict) else item for item in value]
        return each(field.fields or [], value) if isinstance(value, dict) else value
    kinds = field.blocks or {}
    return [
        dict(block, fields=each(kinds[block["block"]], block["fields"]))
        if known_block(block, kinds) and isinstance(block.get("fields"), dict) else block
        for block in value
    ]


def missing_required(field: Field, value: Any, at: str) -> Iterator[str]:
    """Pointers (below `at`, the value's own pointer) of required sub-fields without a value."""
    for fields, item, part in _items(field, value):
        for sub in fields:
            sub_value = item.get(sub.id)
            where = f"{at}{part}/{sub.id}"
            if sub.required and (sub_value is None or sub_value == "" or sub_value == []):
                yield where
            elif sub.type in STRUCTURED_TYPES and sub_value is not None:
                yield from missing_required(sub, sub_value, where)


def prune(field: Field, value: Any) -> Any:
    """A stored value without what `field` no longer defines (removed sub-fields, removed block
    types), so the rest can be checked against it; other values as they are."""
    if field.type not in STRUCTURED_TYPES or value is None:
        return value

    def each(fields: builtins.list[Field], item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        by_id = {sub.id: sub for sub in fields}
        return {k: prune(by_id[k], v) for k, v in item.items() if k in by_id}

    if field.type == "component":
        if field.list:
            return [each(field.fields or [], item) for item in value] if isinstance(value, list) else value
        return each(field.fields or [], value)
    if not isinstance(value, list):
        return value
    kinds = field.blocks or {}
    return [
        dict(block, fields=each(kinds[block["block"]], block.get("fields")))
        for block in value if not isinstance(block, dict) or known_block(block, kinds)
    ]


def text_values(field: Field, value: Any) -> Iterator[str]:
    """The searchable text in a value, at any depth."""
    if value is None:
        return
    if field.type in SEARCHABLE_TYPES:
        if isinstance(value, str):
            yield value
        return
    for fields, item, _ in _items(field, value):
        for sub in fields:
            yield from text_values(sub, item.get(sub.id))
