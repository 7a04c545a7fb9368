"""The content model: content types, fields, locales and the rules every field value must satisfy."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

import msgspec
import regex

from ..problems import FieldErrorsProblem as FieldErrors
from ..times import iso, parse_rfc3339

TYPE_ID = re.compile(r"[a-z][a-z0-9_]{0,63}")
FIELD_ID = re.compile(r"[a-z][a-zA-Z0-9_]{0,63}")
RESOURCE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
LOCALE_CODE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
# Entry ids that would name another file of the type in the prerendered layout
# (entries/{type}/{locale}/{id}.json beside index.json); refused, case-insensitively.
RESERVED_IDS = frozenset({"index"})
SLUG_MAX = 200

FIELD_TYPES = (
    "text", "long_text", "rich_text", "slug", "integer", "number", "boolean",
    "date", "datetime", "enum", "json", "reference", "asset", "component", "blocks",
)
TEXT_TYPES = {"text", "long_text", "rich_text", "slug"}
NUMBER_TYPES = {"integer", "number"}
LINK_TYPES = {"reference", "asset"}
SORTABLE_TYPES = {"text", "slug", "integer", "number", "boolean", "date", "datetime", "enum"}
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

# A schema author's `pattern` runs against every value written: `regex` (re-compatible syntax) stops
# a catastrophically backtracking one after this long instead of pinning a CPU (ReDoS), and a
# request's pattern checks together get at most `PATTERN_BUDGET` seconds (a bulk of 1,000 values
# against a slow pattern would otherwise take 50 s). Callers run them off the event loop
# (`run_checks`), and `regex` releases the GIL while it matches.
PATTERN_TIMEOUT = 0.05
PATTERN_BUDGET = 1.0


class PatternBudget:
    """The time a request's pattern checks may still take (a context variable carries it)."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds


_pattern_budget: contextvars.ContextVar[PatternBudget | None] = contextvars.ContextVar("cms_pattern_budget", default=None)


@contextlib.contextmanager
def pattern_budget(seconds: float = PATTERN_BUDGET) -> Iterator[PatternBudget]:
    """Within this block (and threads started from it), pattern checks share `seconds`; inside an
    outer block (a bulk request's actions), the outer budget holds."""
    outer = _pattern_budget.get()
    if outer is not None:
        yield outer
        return
    budget = PatternBudget(seconds)
    token = _pattern_budget.set(budget)
    try:
        yield budget
    finally:
        _pattern_budget.reset(token)


def has_patterns(ct: ContentType) -> bool:
    def any_pattern(fields: Iterable[Field]) -> bool:
        return any("pattern" in f.validations or any_pattern(f.subfields()) for f in fields)

    return any_pattern(ct.fields)


async def run_checks(needed: bool, check: Callable[[], T]) -> T:
    """Run a value check: in a worker thread when `needed` (a type with patterns), else here."""
    return await asyncio.to_thread(check) if needed else check()


@functools.lru_cache(maxsize=512)
def user_pattern(pattern: str) -> regex.Pattern[str]:
    return regex.compile(pattern)


T = TypeVar("T")
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
    def has_links(self) -> bool:
        """References or assets in the value, at any depth."""
        if self.type in LINK_TYPES:
            return True
        return any(sub.has_links for sub in self.subfields())

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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_content_type(type_id: str, body: Any, known_types: set[str]) -> tuple[ContentType | None, FieldErrors]:
    """Validate a PUT /v1/content-types body. known_types: ids references may point to."""
    errors = FieldErrors()
    if not isinstance(body, dict):
        errors.add("", "must be a JSON object")
        return None, errors
    for key in body:
        if key not in {"name", "description", "display_field", "fields", "id", "version", "created_at", "updated_at"}:
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
            elif not _is_int(value) or value < 0:
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
            elif not _is_number(value):
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


# ---------------------------------------------------------------------------------------------------
# field values


def normalize_datetime(value: Any) -> str | None:
    """RFC 3339 with an offset → UTC `…Z` with milliseconds (sorts correctly as text)."""
    moment = parse_rfc3339(value)
    return iso(moment) if moment is not None else None


def normalize_date(value: Any) -> str | None:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return None
    try:
        date.fromisoformat(value)
    except ValueError:
        return None
    return value


def check_value(field: Field, value: Any, at: str, errors: FieldErrors) -> Any:
    """Validate one non-null value of `field`; return its stored form (or None after an error)."""
    ftype = field.type
    v = field.validations
    if ftype in TEXT_TYPES:
        if not isinstance(value, str):
            errors.add(at, "must be a string")
            return None
        if "\x00" in value:
            errors.add(at, "must not contain NUL characters")
            return None
        if ftype == "slug" and value and (len(value) > SLUG_MAX or not SLUG.fullmatch(value)):
            errors.add(at, "must be a slug: lower-case letters, digits and single hyphens, at most 200 characters")
            return None
        if "min_length" in v and len(value) < v["min_length"]:
            errors.add(at, f"must be at least {v['min_length']} characters")
        if "max_length" in v and len(value) > v["max_length"]:
            errors.add(at, f"must be at most {v['max_length']} characters")
        if "pattern" in v:
            budget = _pattern_budget.get()
            if budget is not None and budget.left <= 0:
                errors.add(at, f"could not be checked against the pattern {v['pattern']}: this request's pattern "
                               f"checks used their {PATTERN_BUDGET:g} s; send fewer values per request")
                return value
            started = time.monotonic()
            try:
                limit = PATTERN_TIMEOUT if budget is None else max(0.001, min(PATTERN_TIMEOUT, budget.left))
                matched = user_pattern(v["pattern"]).search(value, timeout=limit, concurrent=True) is not None
            except regex.error as exc:  # saved before patterns were checked with `regex`
                errors.add(at, f"the type's pattern {v['pattern']} is not a valid regular expression ({exc}); "
                               "fix the content type")
            except TimeoutError:
                errors.add(at, f"could not be checked against the pattern {v['pattern']} in time; "
                               "the pattern backtracks too much for this value")
            else:
                if not matched:
                    errors.add(at, f"must match the pattern {v['pattern']}")
            finally:
                if budget is not None:
                    budget.left -= time.monotonic() - started
        return value
    if ftype == "integer":
        if not _is_int(value) and not (isinstance(value, float) and value.is_integer()):
            errors.add(at, "must be an integer")
            return None
        value = int(value)
        if not INT64[0] <= value <= INT64[1]:
            errors.add(at, "is out of range for a 64-bit integer")
            return None
        _check_range(v, value, at, errors)
        return value
    if ftype == "number":
        if not _is_number(value):
            errors.add(at, "must be a finite number")
            return None
        _check_range(v, value, at, errors)
        return value
    if ftype == "boolean":
        if not isinstance(value, bool):
            errors.add(at, "must be true or false")
            return None
        return value
    if ftype == "date":
        normalized = normalize_date(value)
        if normalized is None:
            errors.add(at, "must be a date YYYY-MM-DD")
        return normalized
    if ftype == "datetime":
        normalized = normalize_datetime(value)
        if normalized is None:
            errors.add(at, "must be an RFC 3339 date-time with a time zone offset")
        return normalized
    if ftype == "enum":
        if not isinstance(value, str) or value not in (field.values or []):
            errors.add(at, f"must be one of {', '.join(field.values or [])}")
            return None
        return value
    if ftype == "json":
        return value
    if ftype in STRUCTURED_TYPES and _cells(field, value, MAX_CELLS) > MAX_CELLS:
        errors.add(at, f"too large: its components and blocks hold more than {MAX_CELLS} fields in all")
        return None
    if ftype == "component":
        if not field.list:
            return _check_object(field.fields or [], value, at, errors)
        items = _check_count(field, value, at, errors)
        return None if items is None else [_check_object(field.fields or [], item, f"{at}/{i}", errors)
                                           for i, item in enumerate(items)]
    if ftype == "blocks":
        items = _check_count(field, value, at, errors)
        return None if items is None else [_check_block(field, item, f"{at}/{i}", errors) for i, item in enumerate(items)]
    if ftype in LINK_TYPES:
        if field.list:
            if not isinstance(value, list):
                errors.add(at, "must be a list")
                return None
            if "min" in v and len(value) < v["min"]:
                errors.add(at, f"must have at least {v['min']} items")
            if "max" in v and len(value) > v["max"]:
                errors.add(at, f"must have at most {v['max']} items")
            if len(value) > 1000:
                errors.add(at, "at most 1000 items")
                return None
            return [_check_link(field, item, f"{at}/{i}", errors) for i, item in enumerate(value)]
        return _check_link(field, value, at, errors)
    errors.add(at, "unsupported field type")
    return None


def _cells(field: Field, value: Any, budget: int) -> int:
    """Fields of all the objects in a component or blocks value, at every level (counting stops
    past `budget`)."""
    if field.type == "component":
        items = value if field.list and isinstance(value, list) else [value]
        kinds = [(field.fields or [], item) for item in items[: budget + 1] if isinstance(item, dict)]
    elif field.type == "blocks" and isinstance(value, list):
        blocks = field.blocks or {}
        kinds = [(blocks[b["block"]], b.get("fields")) for b in value[: budget + 1] if _known_block(b, blocks)]
    else:
        return 0
    total = 0
    for fields, item in kinds:
        total += max(1, len(fields))
        if isinstance(item, dict):
            for sub in fields:
                if sub.type in STRUCTURED_TYPES and sub.id in item:
                    total += _cells(sub, item[sub.id], budget - total)
        if total > budget:
            break
    return total


def _check_count(field: Field, value: Any, at: str, errors: FieldErrors) -> list[Any] | None:
    """A list of components or blocks: a list, within `validations.min`/`max` and MAX_BLOCKS."""
    if not isinstance(value, list):
        errors.add(at, "must be a list")
        return None
    if len(value) > MAX_BLOCKS:
        errors.add(at, f"at most {MAX_BLOCKS} items")
        return None
    v = field.validations
    if "min" in v and len(value) < v["min"]:
        errors.add(at, f"must have at least {v['min']} items")
    if "max" in v and len(value) > v["max"]:
        errors.add(at, f"must have at most {v['max']} items")
    return value


def _check_object(fields: list[Field], value: Any, at: str, errors: FieldErrors) -> dict[str, Any] | None:
    """A component's value (or a block's `fields`): known sub-fields only; absent ones are left out."""
    if not isinstance(value, dict):
        errors.add(at, "must be an object")
        return None
    by_id = {f.id: f for f in fields}
    out: dict[str, Any] = {}
    for key, item in value.items():
        sub = by_id.get(key)
        if sub is None:
            errors.add(f"{at}/{key}", "unknown field")
            continue
        if item is None or item == "" or (sub.many and item == []):  # as at the top level: no value
            continue
        checked = check_value(sub, item, f"{at}/{key}", errors)
        if checked is not None:
            out[key] = checked
    return out


def _check_block(field: Field, value: Any, at: str, errors: FieldErrors) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        errors.add(at, 'must be an object {"block": name, "fields": {...}}')
        return None
    extra = set(value) - {"block", "fields"}
    if extra:
        errors.add(f"{at}/{sorted(extra)[0]}", "unknown property of a block")
        return None
    kinds = field.blocks or {}
    name = value.get("block")
    if not isinstance(name, str) or name not in kinds:
        errors.add(f"{at}/block", f"must be one of {', '.join(kinds)}")
        return None
    checked = _check_object(kinds[name], value.get("fields", {}), f"{at}/fields", errors)
    return None if checked is None else {"block": name, "fields": checked}


def _check_range(v: dict[str, Any], value: float, at: str, errors: FieldErrors) -> None:
    if "min" in v and value < v["min"]:
        errors.add(at, f"must be at least {v['min']}")
    if "max" in v and value > v["max"]:
        errors.add(at, f"must be at most {v['max']}")


def _check_link(field: Field, value: Any, at: str, errors: FieldErrors) -> Any:
    if not isinstance(value, dict):
        errors.add(at, "must be an object with an id")
        return None
    link_id = value.get("id")
    if not isinstance(link_id, str) or not RESOURCE_ID.fullmatch(link_id):
        errors.add(f"{at}/id", "must be an id matching [A-Za-z0-9_-]{1,64}")
        return None
    if field.type == "asset":
        extra = set(value) - {"id", "type"}
        if extra or value.get("type", "asset") != "asset":
            errors.add(at, "an asset link is {\"id\": …}")
            return None
        return {"id": link_id}
    extra = set(value) - {"id", "type"}
    if extra:
        errors.add(f"{at}/{sorted(extra)[0]}", "unknown property of a reference")
        return None
    targets = field.to or []
    link_type = value.get("type")
    if link_type is None:
        if len(targets) != 1:
            errors.add(f"{at}/type", "is required: this field may point to several content types")
            return None
        link_type = targets[0]
    if not isinstance(link_type, str) or (targets and link_type not in targets):
        errors.add(f"{at}/type", f"must be one of {', '.join(targets)}")
        return None
    return {"id": link_id, "type": link_type}


def values_equal_for_unique(value: Any) -> str:
    """Text form of a unique field's value, as stored in entry_unique_values."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


# ---------------------------------------------------------------------------------------------------
# walking values with sub-fields (components and blocks)


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
            if _known_block(block, kinds) and isinstance(block.get("fields"), dict):
                yield kinds[block["block"]], block["fields"], f"/{index}/fields"


def _known_block(block: Any, kinds: dict[str, builtins.list[Field]]) -> bool:
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
        for block in value if _known_block(block, kinds)
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
        if _known_block(block, kinds) and isinstance(block.get("fields"), dict) else block
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
        for block in value if not isinstance(block, dict) or _known_block(block, kinds)
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
