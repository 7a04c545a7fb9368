"""The content model: content types, fields and locales, and how the database keeps a schema.

Beside it: parsing.py (a PUT body → ContentType), values.py (the rules every field value must
satisfy), structured.py (walking component and blocks values)."""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from ..times import iso

TYPE_ID = re.compile(r"[a-z][a-z0-9_]{0,63}")
FIELD_ID = re.compile(r"[a-z][a-zA-Z0-9_]{0,63}")
RESOURCE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
LOCALE_CODE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
# Entry ids that would name another file of the type in the prerendered layout
# (entries/{type}/{locale}/{id}.json beside index.json); refused, case-insensitively.
RESERVED_IDS = frozenset({"index"})
SLUG_MAX = 200
# The longest value of an `indexed` or `unique` text field: 500 characters are at most 2,000 bytes
# in UTF-8, inside a btree index row's ~2,700 with the row's other columns.
KEY_TEXT_MAX = 500

FIELD_TYPES = (
    "text", "long_text", "rich_text", "slug", "integer", "number", "boolean",
    "date", "datetime", "enum", "json", "reference", "asset", "component", "blocks",
)
TEXT_TYPES = {"text", "long_text", "rich_text", "slug"}
NUMBER_TYPES = {"integer", "number"}
LINK_TYPES = {"reference", "asset"}
SORTABLE_TYPES = {"text", "slug", "integer", "number", "boolean", "date", "datetime", "enum"}
# Values that can be long: kept out of published_documents.vals (in `bulky`), so the small values
# every filter and sort reads stay uncompressed and the row fits two to a page (migration 0015).
BULKY_TYPES = {"long_text", "rich_text", "json", "component", "blocks"}
UNIQUE_TYPES = {"text", "slug", "integer", "number", "date", "datetime", "enum"}
SEARCHABLE_TYPES = {"text", "long_text", "rich_text"}
STRUCTURED_TYPES = {"component", "blocks"}  # values made of sub-fields
FIELD_KEYS = {
    "id", "type", "required", "unique", "localized", "indexed", "validations", "to", "list", "from", "values", "name",
    "fields", "blocks",
}
RESERVED_FIELD_IDS = frozenset({"id", "type", "locale", "version", "status"})
MAX_NESTING = 3  # component/blocks levels
MAX_BLOCKS = 100  # blocks in one blocks field, items in one list of components
MAX_BLOCK_TYPES = 50
MAX_SUBFIELDS = 100
# One component or blocks value, all levels together: objects × their fields. Each list is at most
# MAX_BLOCKS long, but three nested lists multiply (100³ objects); delivery renders every sub-field
# of every object, so this bounds what one value can make the server build and store.
MAX_CELLS = 10_000
VALIDATION_KEYS = {"min_length", "max_length", "pattern", "min", "max"}
NON_LOCALIZED = "_"
INT64 = (-(2**63), 2**63 - 1)


class Field(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    type: str
    name: str | None = None
    required: bool = False
    unique: bool = False
    localized: bool = False
    indexed: bool = False
    validations: dict[str, Any] = msgspec.field(default_factory=dict)
    to: builtins.list[str] | None = None
    list: bool = False
    from_: str | None = msgspec.field(default=None, name="from")
    values: builtins.list[str] | None = None
    fields: builtins.list[Field] | None = None  # component: its sub-fields
    blocks: dict[str, builtins.list[Field]] | None = None  # blocks: block name -> its fields

    @property
    def many(self) -> bool:
        """The value is a list (empty when there is none)."""
        return self.list or self.type == "blocks"

    @property
    def counted(self) -> bool:
        """An indexed scalar: its published values are kept in published_values (filtered counts)."""
        return self.indexed and self.type in SORTABLE_TYPES and not self.list

    def holds(self, types: set[str]) -> bool:
        """The field is of one of `types`, or a component/blocks field holding one at any depth."""
        return self.type in types or any(sub.holds(types) for sub in self.subfields())

    @property
    def has_links(self) -> bool:
        """References or assets in the value, at any depth."""
        return self.holds(LINK_TYPES)

    def subfields(self) -> Iterator[Field]:
        """Every field of a component, or of every block type."""
        if self.fields:
            yield from self.fields
        for block_fields in (self.blocks or {}).values():
            yield from block_fields

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "type": self.type, "required": self.required, "unique": self.unique,
            "localized": self.localized, "indexed": self.indexed, "validations": self.validations,
        }
        if self.name is not None:
            out["name"] = self.name
        if self.type in LINK_TYPES:
            out["list"] = self.list
            if self.type == "reference":
                out["to"] = self.to or []
        if self.type == "slug":
            out["from"] = self.from_
        if self.type == "enum":
            out["values"] = self.values or []
        if self.type == "component":
            out["list"] = self.list
            out["fields"] = [f.to_json() for f in self.fields or []]
        if self.type == "blocks":
            out["blocks"] = {name: [f.to_json() for f in fields] for name, fields in (self.blocks or {}).items()}
        return out


class ContentType(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    name: str
    description: str | None
    display_field: str | None
    fields: list[Field]
    version: int = 1
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def field(self, field_id: str) -> Field | None:
        for f in self.fields:
            if f.id == field_id:
                return f
        return None

    @property
    def field_map(self) -> dict[str, Field]:
        return {f.id: f for f in self.fields}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "description": self.description,
            "display_field": self.display_field, "fields": [f.to_json() for f in self.fields],
            "version": self.version, "created_at": iso(self.created_at), "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True)
class Locales:
    """Every locale (rows by code) and the default one."""

    rows: dict[str, dict[str, Any]]
    default: str

    def chain(self, code: str) -> list[str]:
        """`code` and its fallbacks, in order (a cycle or an unknown code ends the chain)."""
        chain = [code]
        seen = {code}
        current = self.rows.get(code, {}).get("fallback")
        while current and current not in seen and current in self.rows:
            chain.append(current)
            seen.add(current)
            current = self.rows[current].get("fallback")
        return chain

    @property
    def codes(self) -> list[str]:
        return list(self.rows)


def is_reserved_id(entry_id: str) -> bool:
    return entry_id.lower() in RESERVED_IDS


def stored_fields(fields: list[Field]) -> list[dict[str, Any]]:
    """Fields as the database keeps them: as `to_json`, but each `blocks` as a list of
    {"block": name, "fields": [...]}, since a jsonb object does not keep the order of its keys."""

    def one(field: dict[str, Any]) -> dict[str, Any]:
        out = dict(field)
        if "fields" in out:
            out["fields"] = [one(f) for f in out["fields"]]
        if "blocks" in out:
            out["blocks"] = [{"block": name, "fields": [one(f) for f in fs]} for name, fs in out["blocks"].items()]
        return out

    return [one(f.to_json()) for f in fields]


def _from_stored(field: Any) -> Any:
    if not isinstance(field, dict):
        return field
    out = dict(field)
    if isinstance(out.get("fields"), list):
        out["fields"] = [_from_stored(f) for f in out["fields"]]
    if isinstance(out.get("blocks"), list):
        out["blocks"] = {b["block"]: [_from_stored(f) for f in b["fields"]] for b in out["blocks"]}
    return out


def content_type_from_row(row: Any) -> ContentType:
    return ContentType(
        id=row["id"], name=row["name"], description=row["description"], display_field=row["display_field"],
        fields=msgspec.convert([_from_stored(f) for f in row["fields"]], list[Field]), version=row["version"],
        created_at=row["created_at"], updated_at=row["updated_at"],
    )
