"""The rules every field value must satisfy (checked on every save), and users' `pattern`s run
under a time budget."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
import regex

from ..problems import FieldErrorsProblem as FieldErrors
from ..times import iso, parse_rfc3339
from .model import (
    INT64,
    KEY_TEXT_MAX,
    LINK_TYPES,
    MAX_BLOCKS,
    MAX_CELLS,
    RESOURCE_ID,
    SLUG,
    SLUG_MAX,
    STRUCTURED_TYPES,
    TEXT_TYPES,
    ContentType,
    Field,
)
from .structured import known_block

T = TypeVar("T")

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


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return (isinstance(value, int | float)) and not isinstance(value, bool) and math.isfinite(value)


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
        if (field.indexed or field.unique) and len(value) > KEY_TEXT_MAX:
            # Such values are keys of btree indexes, whose rows hold at most ~2.7 KB: a longer
            # value could be saved but never published (or registered as unique).
            errors.add(at, f"must be at most {KEY_TEXT_MAX} characters: the field is "
                           f"{'indexed' if field.indexed else 'unique'}, and its values are kept in database indexes")
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
        if not is_int(value) and not (isinstance(value, float) and value.is_integer()):
            errors.add(at, "must be an integer")
            return None
        value = int(value)
        if not INT64[0] <= value <= INT64[1]:
            errors.add(at, "is out of range for a 64-bit integer")
            return None
        _check_range(v, value, at, errors)
        return value
    if ftype == "number":
        if not is_number(value):
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
        kinds = [(blocks[b["block"]], b.get("fields")) for b in value[: budget + 1] if known_block(b, blocks)]
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
    """Text form of a unique field's value, as stored in entry_unique_values. A number takes the form
    PostgreSQL gives it (schema/repository.py _UNIQUE_TEXT: `trim_scale(numeric)::text`, which checks
    and registers values in SQL when a schema change makes a field unique): plain digits, no
    exponent, no trailing zeros, so 2, 2.0, 2e0 and 1.5e-07 / 0.00000015 meet as one value."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        exact = Decimal(repr(value))  # the digits JSON (and so jsonb) holds for the float
        if exact == 0:
            return "0"
        text = format(exact, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return msgspec.json.encode(value).decode()
