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
from collections.abc import Callable, Iterator
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
    "date", "datetime", "enum", "json", "reference", "asset",
)
TEXT_TYPES = {"text", "long_text", "rich_text", "slug"}
NUMBER_TYPES = {"integer", "number"}
LINK_TYPES = {"reference", "asset"}
SORTABLE_TYPES = {"text", "slug", "integer", "number", "boolean", "date", "datetime", "enum"}
UNIQUE_TYPES = {"text", "slug", "integer", "number", "date", "datetime", "enum"}
SEARCHABLE_TYPES = {"text", "long_text", "rich_text"}
FIELD_KEYS = {"id", "type", "required", "unique", "localized", "indexed", "validations", "to", "list", "from", "values", "name"}
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
    return any("pattern" in f.validations for f in ct.fields)


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
    fields: list[Field] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_fields):
        field = _parse_field(raw, f"/fields/{index}", errors, known_types | {type_id})
        if field is None:
            continue
        if field.id in seen:
            errors.add(f"/fields/{index}/id", f"duplicate field id {field.id!r}")
            continue
        seen.add(field.id)
        fields.append(field)
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


def _parse_field(raw: Any, at: str, errors: FieldErrors, known_types: set[str]) -> Field | None:
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
    elif field_id in {"id", "type", "locale", "version", "status"}:
        errors.add(f"{at}/id", f"{field_id!r} is reserved")
    ftype = raw.get("type")
    if ftype not in FIELD_TYPES:
        errors.add(f"{at}/type", f"must be one of {', '.join(FIELD_TYPES)}")
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        errors.add(f"{at}/name", "must be a string of at most 200 characters")
    flags = {}
    for flag in ("required", "unique", "localized", "indexed", "list"):
        value = raw.get(flag, False)
        if not isinstance(value, bool):
            errors.add(f"{at}/{flag}", "must be true or false")
        flags[flag] = value is True
    if flags["list"] and ftype not in LINK_TYPES:
        errors.add(f"{at}/list", "only reference and asset fields can be lists")
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
            if ftype not in NUMBER_TYPES and not (ftype in LINK_TYPES and flags["list"]):
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
    )


def content_type_from_row(row: Any) -> ContentType:
    return ContentType(
        id=row["id"], name=row["name"], description=row["description"], display_field=row["display_field"],
        fields=msgspec.convert(row["fields"], list[Field]), version=row["version"],
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
