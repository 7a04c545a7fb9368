"""Entry list parameters → a typed, validated `ListQuery` (filters, sort, cursor, fields, include,
depth, full-text search); every bad parameter is a 400 naming it. sql.py turns the query into SQL.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from .. import cursors
from ..problems import forbidden, malformed
from ..schema.model import (
    INT64,
    LINK_TYPES,
    SORTABLE_TYPES,
    STRUCTURED_TYPES,
    TEXT_TYPES,
    ContentType,
    Field,
)
from ..schema.values import (
    normalize_date,
    normalize_datetime,
)
from ..times import parse_rfc3339

OPS = ("eq", "ne", "in", "nin", "lt", "lte", "gt", "gte", "contains", "startswith", "exists")
RANGE_OPS = {"lt", "lte", "gt", "gte"}
LIST_OPS = {"in", "nin"}
LIKE_OPS = {"contains", "startswith"}
LIKE_TYPES = TEXT_TYPES | {"enum"}
LINK_OPS = {"eq", "ne", "in", "nin", "exists"}
ID_OPS = {"eq", "ne", "in", "nin"}
TIMESTAMP_OPS = {"eq", "ne", "lt", "lte", "gt", "gte", "exists"}
SYSTEM_TIMESTAMPS = ("published_at", "updated_at", "created_at")
SYSTEM_FIELDS = frozenset({"id", *SYSTEM_TIMESTAMPS})
STATUSES = ("draft", "published", "changed")
RANK = "_rank"  # sort key name for "text-search rank" (no field id can start with `_`)

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_DEPTH = 3
MAX_LIST_VALUES = 500  # values of one in/nin filter
MAX_FILTERS = 20  # filter conditions per request
MAX_SORT_KEYS = 5
MAX_Q = 1000
MAX_CURSOR = 16384
CURSOR_VERSION = 1

_FILTER_PARAM = re.compile(r"filter\[([^\[\]]*)\](?:\[([^\[\]]*)\])?")
_INT = re.compile(r"[+-]?\d{1,19}")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,4})?")
_SPLIT = re.compile(r"(?<!\\),")

_encode = msgspec.json.Encoder().encode


# ---------------------------------------------------------------------------------------------------
# the parsed query


@dataclass(frozen=True, kw_only=True)
class Target:
    """One field a filter reads: a content field (`field`) or, when `field` is None, system field `name`.
    `within`: the (non-list) component whose sub-field `field` is (`filter[seo.title]`)."""

    name: str
    field: Field | None
    within: Field | None = None


@dataclass(frozen=True, kw_only=True)
class Filter:
    """`filter[path][op]=value`, validated and typed.

    `value`: for `exists` a bool; for `in`/`nin` a list; otherwise one value. Content-field values are
    their JSON form (str/int/float/bool; references: the id as str), system timestamps are datetimes.
    `via` is the reference field of a one-level-deep filter (`author.name`); `targets` then lists
    (content type id, nested field) for every referenced type that has the nested field.
    """

    parameter: str
    path: str
    op: str
    value: Any
    target: Target
    via: Field | None = None
    targets: tuple[tuple[str, Target], ...] = ()

    def canonical(self) -> list[Any]:
        return [self.path, self.op, self.value]


@dataclass(frozen=True)
class Group:
    """Conditions joined by `op` ("and" | "or"): GraphQL's `AND`/`OR` (REST's filters are one AND)."""

    op: str
    items: tuple[Filter | Group, ...]

    def canonical(self) -> list[Any]:
        return [self.op, sorted((item.canonical() for item in self.items), key=lambda c: _encode(c))]


Condition = Filter | Group


def count_conditions(conditions: list[Condition] | tuple[Condition, ...]) -> int:
    """Leaf conditions, however they are grouped (the MAX_FILTERS bound counts these)."""
    return sum(count_conditions(c.items) if isinstance(c, Group) else 1 for c in conditions)


class Cursor(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """Decoded `cursor`: format version, fingerprint of the query, the last row's sort keys as text."""

    version: int
    fingerprint: str
    keys: list[str]


@dataclass(kw_only=True)
class ListQuery:
    type_id: str
    locale: str
    filters: list[Condition]  # all must hold
    sort: list[tuple[str, bool]]  # (field id | system field | "_rank", descending)
    limit: int
    cursor: Cursor | None
    fields: list[str] | None
    include: list[str]
    depth: int
    q: str | None
    status: str | None
    content_type: ContentType


def query_fingerprint(query: ListQuery) -> str:
    """What a cursor is bound to: type, locale, filters, sort, q and status (not limit)."""
    canon = [
        CURSOR_VERSION, query.type_id, query.locale,
        sorted((f.canonical() for f in query.filters), key=lambda c: _encode(c)),
        [[name, desc] for name, desc in query.sort], query.q, query.status,
    ]
    return hashlib.sha256(_encode(canon)).hexdigest()[:32]


# ---------------------------------------------------------------------------------------------------
# parsing


def parse_list_query(
    params: Mapping[str, Any],
    ct: ContentType,
    types: dict[str, ContentType],
    *,
    locale: str,
    default_sort: str,
    allow_status: bool = False,
    conditions: tuple[Condition, ...] = (),
    allowed: frozenset[str] | None = None,
) -> ListQuery:
    """Validate list parameters against content type `ct`; raise a 400 `malformed` naming the parameter.
    `conditions`: parsed ones to hold as well (GraphQL's `where`), counted in the same bound.
    `allowed`: the content types the credential may read (None: all); a filter through a reference
    into any other type is a 403."""
    flat = _flatten(params)

    filters: list[Condition] = list(conditions)
    if count_conditions(filters) > MAX_FILTERS:
        raise malformed("where", f"at most {MAX_FILTERS} filter conditions")
    for name, value in flat.items():
        if name == "filter" or name.startswith("filter["):
            if count_conditions(filters) == MAX_FILTERS:
                raise malformed(name, f"at most {MAX_FILTERS} filter conditions")
            filters.append(_parse_filter(name, _text(name, value), ct, types, allowed))

    q = flat.get("q")
    if q is not None:
        q = _text("q", q).strip()
        if len(q) > MAX_Q:
            raise malformed("q", f"at most {MAX_Q} characters")
        q = q or None

    status = None
    if allow_status and flat.get("status") not in (None, ""):
        status = _text("status", flat["status"])
        if status not in STATUSES:
            raise malformed("status", f"must be one of {', '.join(STATUSES)}")

    sort_text = _text("sort", flat["sort"]) if flat.get("sort") not in (None, "") else None
    if sort_text is not None:
        sort = _parse_sort(sort_text, ct, "sort")
    elif q is not None:
        sort = [(RANK, True)]
    else:
        sort = _parse_sort(default_sort, ct, "sort")

    query = ListQuery(
        type_id=ct.id,
        locale=locale,
        filters=filters,
        sort=sort,
        limit=_parse_int(flat, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        cursor=None,
        fields=_parse_fields(flat, ct),
        include=_parse_include(flat, ct),
        depth=_parse_int(flat, "depth", 1, 1, MAX_DEPTH),
        q=q,
        status=status,
        content_type=ct,
    )
    raw_cursor = flat.get("cursor")
    if raw_cursor not in (None, ""):
        cursor = decode_cursor(_text("cursor", raw_cursor))
        if cursor.fingerprint != query_fingerprint(query):
            raise malformed("cursor", "was made for other filters, sort, search, status, locale or type")
        if len(cursor.keys) != len(key_names(query.sort)):
            raise malformed("cursor", "is not a valid cursor")
        query.cursor = cursor
    return query


def _flatten(params: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in params.items():  # a MultiDict yields every pair: the last one wins
        if isinstance(value, list | tuple):
            if not value:
                continue
            value = value[-1]
        flat[str(name)] = value
    return flat


def _text(parameter: str, value: Any) -> str:
    if not isinstance(value, str):
        raise malformed(parameter, "must be a string")
    if "\x00" in value:
        raise malformed(parameter, "must not contain NUL characters")
    return value


def _parse_int(flat: dict[str, Any], parameter: str, default: int, low: int, high: int) -> int:
    raw = flat.get(parameter)
    if raw is None:
        return default
    text = _text(parameter, raw)
    if not re.fullmatch(r"\d{1,4}", text) or not low <= int(text) <= high:
        raise malformed(parameter, f"must be an integer from {low} to {high}")
    return int(text)


def _split_list(text: str) -> list[str]:
    return [item.replace("\\,", ",") for item in _SPLIT.split(text)]


def _parse_fields(flat: dict[str, Any], ct: ContentType) -> list[str] | None:
    raw = flat.get("fields")
    if raw is None:
        return None
    text = _text("fields", raw)
    if text == "":
        return []
    out: list[str] = []
    for name in text.split(","):
        name = name.strip()
        if ct.field(name) is None:
            if name in SYSTEM_FIELDS | {"type", "locale", "version", "status"}:
                continue  # system fields are always present
            raise malformed("fields", f"unknown field {name!r}")
        if name not in out:
            out.append(name)
    return out


def _parse_include(flat: dict[str, Any], ct: ContentType) -> list[str]:
    raw = flat.get("include")
    if raw is None:
        return []
    text = _text("include", raw).strip()
    if text == "":
        return []
    if text == "*":
        return [f.id for f in ct.fields if f.has_links]
    out: list[str] = []
    for name in text.split(","):
        name = name.strip()
        field = ct.field(name)
        if field is None:
            raise malformed("include", f"unknown field {name!r}")
        if not field.has_links:
            raise malformed("include", f"{name!r} is not a reference or asset field (nor holds one)")
        if name not in out:
            out.append(name)
    return out


def _parse_sort(text: str, ct: ContentType, parameter: str) -> list[tuple[str, bool]]:
    sort: list[tuple[str, bool]] = []
    seen: set[str] = set()
    items = text.split(",")
    if len(items) > MAX_SORT_KEYS:
        raise malformed(parameter, f"at most {MAX_SORT_KEYS} sort keys")
    for item in items:
        item = item.strip()
        desc = item.startswith("-")
        name = item[1:] if desc else item
        if not name:
            raise malformed(parameter, "empty sort key")
        if name not in SYSTEM_FIELDS:
            field = ct.field(name)
            if field is None:
                raise malformed(parameter, f"unknown field {name!r}")
            if field.type not in SORTABLE_TYPES:
                raise malformed(parameter, f"{field.type} field {name!r} is not sortable")
        if name in seen:
            raise malformed(parameter, f"{name!r} is given twice")
        seen.add(name)
        sort.append((name, desc))
    return sort


def key_names(sort: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Sort keys plus the `id` tie-breaker (in the direction of the last key) unless id is sorted on."""
    if any(name == "id" for name, _ in sort):
        return list(sort)
    return [*sort, ("id", sort[-1][1] if sort else False)]


def _target(name: str, ct: ContentType) -> Target | None:
    if name in SYSTEM_FIELDS:
        return Target(name=name, field=None)
    field = ct.field(name)
    return Target(name=name, field=field) if field is not None else None


def _parse_filter(
    parameter: str, raw: str, ct: ContentType, types: dict[str, ContentType], allowed: frozenset[str] | None
) -> Filter:
    match = _FILTER_PARAM.fullmatch(parameter)
    if match is None:
        raise malformed(parameter, "expected filter[field][op]")
    path, op = match.group(1), match.group(2)
    return parse_condition(parameter, path, op or "eq", raw, ct, types, allowed)


def parse_condition(
    parameter: str, path: str, op: str, raw: str | list[str], ct: ContentType, types: dict[str, ContentType],
    allowed: frozenset[str] | None = None,
) -> Filter:
    """One condition on `path` (`field` or `reference.field`): what `filter[path][op]=raw` means.
    `raw`: the parameter's text, or for `in`/`nin` the values already split (GraphQL lists).
    A credential limited to `allowed` types may not filter through a reference that can point to
    another type (403, checked before the nested field, so the answer says nothing about that
    type): such a filter would read the other type one guess at a time."""
    if op not in OPS:
        raise malformed(parameter, f"unknown operator {op!r}; one of {', '.join(OPS)}")
    parts = path.split(".")
    if len(parts) > 2 or not all(parts):
        raise malformed(parameter, "a filter names a field or reference.field (one level deep)")
    target = _target(parts[0], ct)
    if target is None:
        raise malformed(parameter, f"unknown field {parts[0]!r}")
    if len(parts) == 1:
        return Filter(parameter=parameter, path=path, op=op, value=_parse_value(parameter, target, op, raw),
                      target=target)

    via = target.field
    if via is not None and via.type == "component" and not via.list:
        sub = next((f for f in via.fields or [] if f.id == parts[1]), None)
        if sub is None:
            raise malformed(parameter, f"the component {parts[0]!r} has no field {parts[1]!r}")
        if sub.type in STRUCTURED_TYPES:
            raise malformed(parameter, f"{parts[1]!r} is a {sub.type}: filters reach one level into a component")
        inner = Target(name=path, field=sub, within=via)
        return Filter(parameter=parameter, path=path, op=op, value=_parse_value(parameter, inner, op, raw), target=inner)
    if via is None or via.type != "reference":
        raise malformed(parameter, f"{parts[0]!r} is not a reference field (nor a component)")
    nested = parts[1]
    candidates = via.to or sorted(types)
    if allowed is not None and not set(candidates) <= allowed:
        raise forbidden(f"{parts[0]!r} can reference content types this credential may not read")
    found: list[tuple[str, Target]] = []
    for type_id in candidates:
        other = types.get(type_id)
        if other is None:
            continue
        nested_target = _target(nested, other)
        if nested_target is not None:
            found.append((type_id, nested_target))
    if not found:
        raise malformed(parameter, f"no content type referenced by {parts[0]!r} has a field {nested!r}")
    first = found[0][1]
    kind = first.field.type if first.field else first.name
    for _, other_target in found[1:]:
        if (other_target.field.type if other_target.field else other_target.name) != kind or (
            other_target.field is not None and first.field is not None
            and other_target.field.list != first.field.list
        ):
            raise malformed(parameter, f"{nested!r} has different types in the referenced content types")
    value = _parse_value(parameter, first, op, raw)
    return Filter(parameter=parameter, path=path, op=op, value=value, target=first, via=via, targets=tuple(found))


def _parse_value(parameter: str, target: Target, op: str, raw: str | list[str]) -> Any:
    field = target.field
    if field is None:
        allowed = ID_OPS if target.name == "id" else TIMESTAMP_OPS
        kind = "id" if target.name == "id" else "timestamp"
    elif field.type in LINK_TYPES:
        allowed, kind = LINK_OPS, "link"
    elif field.type in ("json", "component", "blocks"):
        allowed, kind = {"exists"}, "json"
    else:
        allowed = {"eq", "ne", "in", "nin", "exists"}
        if field.type in SORTABLE_TYPES:
            allowed |= RANGE_OPS
        if field.type in LIKE_TYPES:
            allowed |= LIKE_OPS
        kind = field.type
    if op not in allowed:
        what = f"{field.type} field" if field is not None else "system field"
        raise malformed(parameter, f"operator {op!r} is not valid for {what} {target.name!r}")
    if isinstance(raw, list) and op not in LIST_OPS:
        raise malformed(parameter, "must be one value")
    if op == "exists":
        if raw not in ("true", "false"):
            raise malformed(parameter, "must be true or false")
        return raw == "true"
    if op in LIST_OPS:
        items = raw if isinstance(raw, list) else _split_list(raw)
        if len(items) > MAX_LIST_VALUES:
            raise malformed(parameter, f"at most {MAX_LIST_VALUES} values")
        return [_parse_one(parameter, kind, item) for item in items]
    assert isinstance(raw, str)
    return _parse_one(parameter, kind, raw)


def _parse_one(parameter: str, kind: str, text: str) -> Any:
    if "\x00" in text:  # (GraphQL's `where` comes here without _text; PostgreSQL text holds no NUL)
        raise malformed(parameter, "must not contain NUL characters")
    if kind in LIKE_TYPES or kind in ("id", "link"):
        return text
    if kind == "integer":
        if not _INT.fullmatch(text) or not INT64[0] <= int(text) <= INT64[1]:
            raise malformed(parameter, f"{text!r} is not a 64-bit integer")
        return int(text)
    if kind == "number":
        if not _NUMBER.fullmatch(text):
            raise malformed(parameter, f"{text!r} is not a number")
        if re.fullmatch(r"[+-]?\d{1,18}", text):
            return int(text)
        number = float(text)
        if not math.isfinite(number):
            raise malformed(parameter, f"{text!r} is out of range")
        return number
    if kind == "boolean":
        if text not in ("true", "false"):
            raise malformed(parameter, "must be true or false")
        return text == "true"
    if kind == "date":
        value = normalize_date(text)
        if value is None:
            raise malformed(parameter, f"{text!r} is not a date YYYY-MM-DD")
        return value
    if kind == "datetime":
        value = normalize_datetime(text)
        if value is None:
            raise malformed(parameter, f"{text!r} is not an RFC 3339 date-time with offset")
        return value
    if kind == "timestamp":
        moment = parse_rfc3339(text)
        if moment is None:
            raise malformed(parameter, f"{text!r} is not an RFC 3339 date-time with offset")
        return moment
    raise malformed(parameter, "cannot filter on this field")  # pragma: no cover - json only has exists


# ---------------------------------------------------------------------------------------------------
# cursors


def encode_cursor(fingerprint: str, keys: list[str]) -> str:
    return cursors.encode(Cursor(version=CURSOR_VERSION, fingerprint=fingerprint, keys=keys))


def decode_cursor(text: str) -> Cursor:
    """Strict: anything but a cursor this module wrote (byte for byte) is a 400 on `cursor`."""
    cursor = cursors.decode(text, Cursor, max_length=MAX_CURSOR)
    if cursor.version != CURSOR_VERSION or any("\x00" in key for key in cursor.keys):
        raise malformed("cursor", "is not a valid cursor")
    return cursor
