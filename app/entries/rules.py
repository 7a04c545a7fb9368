"""The rules of entry values, without I/O: field input, validation, merging into the stored
per-locale form, links, what publishing requires, unique values, slugs, and the management
representation. The single-entry service and atomic bulk requests both apply exactly these."""

from __future__ import annotations

import re
from typing import Any

from unidecode import unidecode

from .. import render
from ..problems import FieldErrorsProblem, invalid
from ..schema.model import (
    KEY_TEXT_MAX,
    NON_LOCALIZED,
    RESOURCE_ID,
    SLUG_MAX,
    STRUCTURED_TYPES,
    TEXT_TYPES,
    UNIQUE_TYPES,
    ContentType,
    Locales,
    is_reserved_id,
)
from ..schema.structured import (
    missing_required,
    prune,
    walk_links,
)
from ..schema.values import (
    check_value,
    values_equal_for_unique,
)
from ..times import iso


def check_new_id(entry_id: str) -> None:
    """A client-chosen id for a new entry: the id pattern, and not a name the prerendered files use."""
    if not RESOURCE_ID.fullmatch(entry_id):
        raise invalid("/id", "ids match [A-Za-z0-9_-]{1,64}")
    if is_reserved_id(entry_id):
        raise invalid("/id", f"{entry_id!r} is reserved (it names the type's index file)")


def slugify(text: str) -> str:
    ascii_text = unidecode(text).lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    return slug[:SLUG_MAX].rstrip("-")


def fields_input(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("", "must be a JSON object with \"fields\"")
    unknown = set(body) - {"fields", "id", "type", "locale", "version"}
    if unknown:
        raise invalid(f"/{sorted(unknown)[0]}", "unknown property")
    fields = body.get("fields", {})
    if not isinstance(fields, dict):
        raise invalid("/fields", "must be an object")
    return fields


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def validate_fields(
    ct: ContentType, given: dict[str, Any], errors: FieldErrorsProblem
) -> dict[str, Any]:
    """Validated, stored form of the given field values (None = clear)."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        field = ct.field(key) if isinstance(key, str) else None
        if field is None:
            errors.add(f"/fields/{key}", "unknown field")
            continue
        if value is None or (field.many and value == []):
            out[key] = None
            continue
        checked = check_value(field, value, f"/fields/{key}", errors)
        if checked is not None:
            out[key] = checked
    return out


def still_valid(ct: ContentType, data: dict[str, Any]) -> dict[str, Any]:
    """Stored values (an old version's) that the current schema still has and accepts; the rest dropped."""
    out: dict[str, Any] = {}
    for key, per_locale in data.items():
        field = ct.field(key)
        if field is None:
            continue
        kept = {}
        for code, value in per_locale.items():
            scratch = FieldErrorsProblem()
            # sub-fields and block types the schema no longer has are dropped, the rest kept
            checked = check_value(field, prune(field, value), "", scratch)
            if not scratch and checked is not None:
                kept[code] = checked
        if kept:
            out[key] = kept
    return out


def conform(ct: ContentType, locales: Locales, data: dict[str, Any] | None) -> dict[str, Any] | None:
    """Stored values in the shape the current schema and locales give them: fields the type no longer
    has dropped, sub-fields and block types it no longer has pruned, values moved between `_` and the
    default locale where `localized` flipped, values of deleted locales dropped. Idempotent. A schema
    change applies it to every entry in the background (app/schema/rerenders.py); every write applies
    it first to the entry it changes, so a write never meets the previous shape."""
    if data is None:
        return None
    out: dict[str, Any] = {}
    for field in ct.fields:
        per_locale = data.get(field.id)
        if not per_locale:
            continue
        if field.localized:
            if NON_LOCALIZED in per_locale:
                per_locale = {locales.default: per_locale[NON_LOCALIZED]}
            else:
                per_locale = {code: v for code, v in per_locale.items() if code in locales.rows}
        elif NON_LOCALIZED not in per_locale:
            per_locale = {NON_LOCALIZED: per_locale.get(locales.default, next(iter(per_locale.values())))}
        if field.type in STRUCTURED_TYPES:
            per_locale = {code: prune(field, v) for code, v in per_locale.items()}
        if per_locale:
            out[field.id] = per_locale
    return out


def apply_values(data: dict[str, Any], ct: ContentType, values: dict[str, Any], locale: str) -> dict[str, Any]:
    data = {k: dict(v) for k, v in data.items()}
    for key, value in values.items():
        field = ct.field(key)
        assert field is not None
        slot = locale if field.localized else NON_LOCALIZED
        per_locale = data.setdefault(key, {})
        if value is None or value == "":
            per_locale.pop(slot, None)
        else:
            per_locale[slot] = value
        if not per_locale:
            data.pop(key)
    return data


def unique_rows(ct: ContentType, data: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for field in ct.fields:
        if field.type not in UNIQUE_TYPES or not (field.unique or field.type == "slug"):
            continue
        for locale, value in (data.get(field.id) or {}).items():
            rows.append((field.id, locale, values_equal_for_unique(value)))
    return rows


def publish_problems(ct: ContentType, data: dict[str, Any], default: str, at: str = "") -> FieldErrorsProblem:
    problems = FieldErrorsProblem()
    for field in ct.fields:
        if field.type in TEXT_TYPES and field.indexed:
            # stored before the field was indexed (or before the bound): it could not be published
            for value in (data.get(field.id) or {}).values():
                if isinstance(value, str) and len(value) > KEY_TEXT_MAX:
                    problems.add(f"{at}/fields/{field.id}", f"must be at most {KEY_TEXT_MAX} characters to be published:"
                                 " the field's values are kept in database indexes")
                    break
        if not field.required:
            continue
        per_locale = data.get(field.id) or {}
        value = per_locale.get(default if field.localized else NON_LOCALIZED)
        if value is None or value == "" or value == []:
            problems.add(f"{at}/fields/{field.id}", f"is required (in the default locale {default})")
    # Required fields inside components and blocks: where their component or block is present.
    for field in ct.fields:
        if field.type not in STRUCTURED_TYPES:
            continue
        for code, value in (data.get(field.id) or {}).items():
            if code in (default, NON_LOCALIZED):
                for where in missing_required(field, value, f"{at}/fields/{field.id}"):
                    problems.add(where, f"is required (in the default locale {default})")
    return problems


def links(ct: ContentType, data: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, str]]]:
    refs: list[tuple[str, dict[str, Any]]] = []
    assets: list[tuple[str, str]] = []
    for field in ct.fields:
        if not field.has_links:
            continue
        for value in (data.get(field.id) or {}).values():
            # inside components and blocks too, recorded under the top-level field
            for holder, link in walk_links(field, value):
                if holder.type == "reference":
                    refs.append((field.id, link))
                else:
                    assets.append((field.id, link["id"]))
    return refs, assets


def management_entry(row: Any, ct: ContentType, locale: str, locales: Locales) -> dict[str, Any]:
    data = row["data"]
    fields: dict[str, Any] = {}
    for field in ct.fields:
        per_locale = data.get(field.id) or {}
        if locale == "*":
            if field.localized:
                fields[field.id] = dict(per_locale)
            else:
                value = per_locale.get(NON_LOCALIZED)
                fields[field.id] = {locales.default: value} if value is not None else {}
            continue
        value = per_locale.get(locale if field.localized else NON_LOCALIZED)
        fields[field.id] = value if value is not None else ([] if field.many else None)
    if row["published_version"] is None:
        status = "draft"
    elif row["published_version"] == row["version"]:
        status = "published"
    else:
        status = "changed"
    document = render.entry_document(
        entry_id=row["id"], type_id=row["type"], locale=locale, version=row["version"],
        created_at=row["created_at"], updated_at=row["updated_at"], published_at=row["published_at"], fields=fields,
    )
    document.update(
        status=status, published_version=row["published_version"], first_published_at=iso(row["first_published_at"])
    )
    return document


def entry_event(row: Any, ct: ContentType, locales: Locales, version: int | None = None) -> dict[str, Any]:
    return {"id": row["id"], "type": ct.id, "version": version or row["version"], "locales": locales.codes}


def version_fields(ct: ContentType, data: dict[str, Any], locales: Locales) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, per_locale in data.items():
        field = ct.field(key)
        if field is not None and not field.localized:
            fields[key] = {locales.default: per_locale.get(NON_LOCALIZED)}
        else:
            fields[key] = dict(per_locale)
    return fields


def version_json(row: Any) -> dict[str, Any]:
    return {"version": row["version"], "created_at": iso(row["created_at"]), "actor": row["actor"], "action": row["action"]}
