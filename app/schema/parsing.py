"""A PUT /v1/content-types body → a ContentType, or field errors pointing into the body."""

from __future__ import annotations

from typing import Any

import regex

from ..problems import FieldErrorsProblem as FieldErrors
from .model import (
    FIELD_ID,
    FIELD_KEYS,
    FIELD_TYPES,
    LINK_TYPES,
    MAX_BLOCK_TYPES,
    MAX_NESTING,
    MAX_SUBFIELDS,
    NUMBER_TYPES,
    RESERVED_FIELD_IDS,
    SORTABLE_TYPES,
    STRUCTURED_TYPES,
    TEXT_TYPES,
    UNIQUE_TYPES,
    VALIDATION_KEYS,
    ContentType,
    Field,
)
from .values import is_int, is_number, user_pattern


def parse_content_type(type_id: str, body: Any, known_types: set[str]) -> tuple[ContentType | None, FieldErrors]:
    """Validate a PUT /v1/content-types body. known_types: ids references may point to."""
    errors = FieldErrors()
    if not isinstance(body, dict):
        errors.add("", "must be a JSON object")
        return None, errors
    for key in body:
        # what GET answers besides the schema is accepted back (and ignored): GET → edit → PUT works
        if key not in {"name", "description", "display_field", "fields", "id", "version", "created_at", "updated_at",
                       "rendering"}:
            errors.add(f"/{key}", "unknown property")
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 200 or "\x00" in name:
        errors.add("/name", "is required: a string of 1 to 200 characters")
    description = body.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > 2000 or "\x00" in description):
        errors.add("/description", "must be a string of at most 2000 characters")
    raw_fields = body.get("fields", [])
    if not isinstance(raw_fields, list):
        errors.add("/fields", "must be a list")
        raw_fields = []
    if len(raw_fields) > 200:
        errors.add("/fields", "at most 200 fields")
    fields = _parse_fields(raw_fields, "/fields", errors, known_types | {type_id}, 0)
    by_id = {f.id: f for f in fields}
    for field in fields:
        if field.type == "slug" and field.from_ is not None:
            source = by_id.get(field.from_)
            if source is None or source.type not in {"text", "long_text"}:
                errors.add(f"/fields/{_position(raw_fields, field.id)}/from", "must name a text field of this type")
    display_field = body.get("display_field")
    if display_field is not None:
        if not isinstance(display_field, str) or display_field not in by_id:
            errors.add("/display_field", "must name a field of this type")
    if errors:
        return None, errors
    return (
        ContentType(
            id=type_id, name=name, description=description, display_field=display_field, fields=fields  # type: ignore[arg-type]
        ),
        errors,
    )


def _position(raw_fields: list[Any], field_id: str) -> int:
    for index, raw in enumerate(raw_fields):
        if isinstance(raw, dict) and raw.get("id") == field_id:
            return index
    return 0


def _parse_field(raw: Any, at: str, errors: FieldErrors, known_types: set[str], level: int = 0) -> Field | None:
    """One FIELD; `level` > 0 for a sub-field of a component or block (that many levels deep)."""
    if not isinstance(raw, dict):
        errors.add(at, "must be an object")
        return None
    before = len(errors.items)
    for key in raw:
        if key not in FIELD_KEYS:
            errors.add(f"{at}/{key}", "unknown property")
    field_id = raw.get("id")
    if not isinstance(field_id, str) or not FIELD_ID.fullmatch(field_id):
        errors.add(f"{at}/id", "must match ^[a-z][a-zA-Z0-9_]{0,63}$")
    elif field_id in RESERVED_FIELD_IDS:
        errors.add(f"{at}/id", f"{field_id!r} is reserved")
    ftype = raw.get("type")
    if ftype not in FIELD_TYPES:
        errors.add(f"{at}/type", f"must be one of {', '.join(FIELD_TYPES)}")
    elif level and ftype == "slug":
        errors.add(f"{at}/type", "slug fields belong to the content type itself, not to a component or block")
    elif ftype in STRUCTURED_TYPES and level >= MAX_NESTING:
        errors.add(f"{at}/type", f"components and blocks nest at most {MAX_NESTING} levels")
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        errors.add(f"{at}/name", "must be a string of at most 200 characters")
    flags = {}
    for flag in ("required", "unique", "localized", "indexed", "list"):
        value = raw.get(flag, False)
        if not isinstance(value, bool):
            errors.add(f"{at}/{flag}", "must be true or false")
        flags[flag] = value is True
    if level:
        for flag in ("unique", "localized", "indexed"):
            if flags[flag]:
                errors.add(f"{at}/{flag}", f"a field inside a component or block cannot be {flag}"
                           + (" (the whole field is localized or not)" if flag == "localized" else ""))
    if flags["list"] and ftype not in LINK_TYPES | {"component"}:
        errors.add(f"{at}/list", "only reference, asset and component fields can be lists")
    if flags["unique"] and ftype not in UNIQUE_TYPES:
        errors.add(f"{at}/unique", f"a {ftype} field cannot be unique")
    if flags["indexed"] and ftype not in SORTABLE_TYPES | LINK_TYPES:
        errors.add(f"{at}/indexed", f"a {ftype} field cannot be indexed")
    to = raw.get("to")
    if ftype == "reference":
        if to is None:
            to = []
        if not isinstance(to, list) or not all(isinstance(t, str) for t in to) or len(to) > 50:
            errors.add(f"{at}/to", "must be a list of content type ids")
            to = []
        else:
            for pos, target in enumerate(to):
                if target not in known_types:
                    errors.add(f"{at}/to/{pos}", f"unknown content type {target!r}")
    elif to is not None:
        errors.add(f"{at}/to", "only reference fields have `to`")
    source = raw.get("from")
    if ftype == "slug":
        if source is not None and not isinstance(source, str):
            errors.add(f"{at}/from", "must name a text field")
    elif source is not None:
        errors.add(f"{at}/from", "only slug fields have `from`")
    values = raw.get("values")
    if ftype == "enum":
        if (
            not isinstance(values, list) or not values or len(values) > 500
            or not all(isinstance(v, str) and 0 < len(v) <= 200 for v in values)
            or len(set(values)) != len(values)
        ):
            errors.add(f"{at}/values", "must be a non-empty list of distinct strings")
            values = []
    elif values is not None:
        errors.add(f"{at}/values", "only enum fields have `values`")
    sub_fields = _parse_subfields(raw, "fields", at, errors, known_types, level) if ftype == "component" else None
    if ftype != "component" and "fields" in raw:
        errors.add(f"{at}/fields", "only component fields have `fields`")
    blocks: dict[str, list[Field]] | None = None
    if ftype == "blocks":
        raw_blocks = raw.get("blocks")
        if not isinstance(raw_blocks, dict) or not raw_blocks or len(raw_blocks) > MAX_BLOCK_TYPES:
            errors.add(f"{at}/blocks", f"must be an object of 1 to {MAX_BLOCK_TYPES} block types: name -> [FIELD, ...]")
        else:
            blocks = {}
            for block_name in raw_blocks:
                if not isinstance(block_name, str) or not FIELD_ID.fullmatch(block_name):
                    errors.add(f"{at}/blocks/{block_name}", "a block name must match ^[a-z][a-zA-Z0-9_]{0,63}$")
                    continue
                parsed = _parse_subfields(raw_blocks, block_name, f"{at}/blocks", errors, known_types, level)
                if parsed is not None:
                    blocks[block_name] = parsed
    elif "blocks" in raw:
        errors.add(f"{at}/blocks", "only blocks fields have `blocks`")
    validations = raw.get("validations", {})
    if validations is None:
        validations = {}
    if not isinstance(validations, dict):
        errors.add(f"{at}/validations", "must be an object")
        validations = {}
    for key, value in validations.items():
        vat = f"{at}/validations/{key}"
        if key not in VALIDATION_KEYS:
            errors.add(vat, "unknown validation")
        elif key in ("min_length", "max_length"):
            if ftype not in TEXT_TYPES:
                errors.add(vat, f"not applicable to {ftype} fields")
            elif not is_int(value) or value < 0:
                errors.add(vat, "must be a non-negative integer")
        elif key == "pattern":
            if ftype not in TEXT_TYPES:
                errors.add(vat, f"not applicable to {ftype} fields")
            elif not isinstance(value, str) or len(value) > 500:
                errors.add(vat, "must be a regular expression of at most 500 characters")
            else:
                try:
                    user_pattern(value)
                except regex.error as exc:
                    errors.add(vat, f"invalid regular expression: {exc}")
        elif key in ("min", "max"):
            counted = ftype == "blocks" or (ftype in LINK_TYPES | {"component"} and flags["list"])
            if ftype not in NUMBER_TYPES and not counted:
                errors.add(vat, f"not applicable to {ftype} fields")
            elif not is_number(value):
                errors.add(vat, "must be a number")
    if len(errors.items) > before:
        return None
    return Field(
        id=field_id, type=ftype, name=name, required=flags["required"], unique=flags["unique"],  # type: ignore[arg-type]
        localized=flags["localized"], indexed=flags["indexed"], validations=dict(validations),
        to=list(to or []) if ftype == "reference" else None, list=flags["list"],
        from_=source if ftype == "slug" else None, values=list(values or []) if ftype == "enum" else None,
        fields=sub_fields, blocks=blocks,
    )


def _parse_subfields(
    raw: dict[str, Any], key: str, at: str, errors: FieldErrors, known_types: set[str], level: int,
) -> list[Field] | None:
    """`raw[key]`: the [FIELD, ...] of a component or of one block type, one level deeper."""
    items = raw.get(key)
    where = f"{at}/{key}"
    if not isinstance(items, list) or len(items) > MAX_SUBFIELDS:
        errors.add(where, f"must be a list of at most {MAX_SUBFIELDS} fields")
        return None
    return _parse_fields(items, where, errors, known_types, level + 1)


def _parse_fields(items: list[Any], at: str, errors: FieldErrors, known_types: set[str], level: int) -> list[Field]:
    """A [FIELD, ...] at pointer `at`; a repeated id is an error at its second occurrence."""
    out: list[Field] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        field = _parse_field(item, f"{at}/{index}", errors, known_types, level)
        if field is None:
            continue
        if field.id in seen:
            errors.add(f"{at}/{index}/id", f"duplicate field id {field.id!r}")
            continue
        seen.add(field.id)
        out.append(field)
    return out
