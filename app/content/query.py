"""Entry lists: filters, sort, keyset cursors and full-text search over published documents or drafts.

`parse_list_query` turns query parameters into a validated `ListQuery` (every bad parameter is a 400
naming it); `fetch_page` runs it against a `DeliverySource` (published_documents) or a `DraftSource`
(entries) with exactly two statements: the page and the count of the whole filtered set.

SQL safety: user input only ever reaches the database as bind parameters. The only things inlined
into SQL text are field ids, content-type ids and locale codes, and each is checked against its
identifier pattern right where it is inlined (`_ident`), so a quote can never get in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import asyncpg
import msgspec

from cms.app.content.schemas import (
    FIELD_ID,
    INT64,
    LINK_TYPES,
    LOCALE_CODE,
    SEARCHABLE_TYPES,
    SORTABLE_TYPES,
    TEXT_TYPES,
    TYPE_ID,
    ContentType,
    Field,
    normalize_date,
    normalize_datetime,
)
from cms.app.problems import malformed

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
MAX_LIST_VALUES = 100
MAX_Q = 1000
MAX_CURSOR = 16384
CURSOR_VERSION = 1

_FILTER_PARAM = re.compile(r"filter\[([^\[\]]*)\](?:\[([^\[\]]*)\])?")
_INT = re.compile(r"[+-]?\d{1,19}")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,4})?")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_CURSOR_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_CURSOR_NUMERIC = re.compile(r"-?\d{1,20}(\.\d{1,60})?")
_SPLIT = re.compile(r"(?<!\\),")

_encode = msgspec.json.Encoder().encode


# ---------------------------------------------------------------------------------------------------
# the parsed query


@dataclass(frozen=True, kw_only=True)
class Target:
    """One field a filter reads: a content field (`field`) or, when `field` is None, system field `name`."""

    name: str
    field: Field | None


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


class Cursor(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """Decoded `cursor`: format version, fingerprint of the query, the last row's sort keys as text."""

    version: int
    fingerprint: str
    keys: list[str]


@dataclass(kw_only=True)
class ListQuery:
    type_id: str
    locale: str
    filters: list[Filter]
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
) -> ListQuery:
    """Validate list parameters against content type `ct`; raise a 400 `malformed` naming the parameter."""
    flat = _flatten(params)

    filters: list[Filter] = []
    for name, value in flat.items():
        if name == "filter" or name.startswith("filter["):
            filters.append(_parse_filter(name, _text(name, value), ct, types))

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
        if len(cursor.keys) != len(_key_names(query.sort)):
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
        return [f.id for f in ct.fields if f.type in LINK_TYPES]
    out: list[str] = []
    for name in text.split(","):
        name = name.strip()
        field = ct.field(name)
        if field is None:
            raise malformed("include", f"unknown field {name!r}")
        if field.type not in LINK_TYPES:
            raise malformed("include", f"{name!r} is not a reference or asset field")
        if name not in out:
            out.append(name)
    return out


def _parse_sort(text: str, ct: ContentType, parameter: str) -> list[tuple[str, bool]]:
    sort: list[tuple[str, bool]] = []
    seen: set[str] = set()
    for item in text.split(","):
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


def _key_names(sort: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Sort keys plus the `id` tie-breaker (in the direction of the last key) unless id is sorted on."""
    if any(name == "id" for name, _ in sort):
        return list(sort)
    return [*sort, ("id", sort[-1][1] if sort else False)]


def _target(name: str, ct: ContentType) -> Target | None:
    if name in SYSTEM_FIELDS:
        return Target(name=name, field=None)
    field = ct.field(name)
    return Target(name=name, field=field) if field is not None else None


def _parse_filter(parameter: str, raw: str, ct: ContentType, types: dict[str, ContentType]) -> Filter:
    match = _FILTER_PARAM.fullmatch(parameter)
    if match is None:
        raise malformed(parameter, "expected filter[field][op]")
    path, op = match.group(1), match.group(2)
    if op is None:
        op = "eq"
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
    if via is None or via.type != "reference":
        raise malformed(parameter, f"{parts[0]!r} is not a reference field")
    nested = parts[1]
    candidates = via.to or sorted(types)
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


def _parse_value(parameter: str, target: Target, op: str, raw: str) -> Any:
    field = target.field
    if field is None:
        allowed = ID_OPS if target.name == "id" else TIMESTAMP_OPS
        kind = "id" if target.name == "id" else "timestamp"
    elif field.type in LINK_TYPES:
        allowed, kind = LINK_OPS, "link"
    elif field.type == "json":
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
    if op == "exists":
        if raw not in ("true", "false"):
            raise malformed(parameter, "must be true or false")
        return raw == "true"
    if op in LIST_OPS:
        items = _split_list(raw)
        if len(items) > MAX_LIST_VALUES:
            raise malformed(parameter, f"at most {MAX_LIST_VALUES} values")
        return [_parse_one(parameter, kind, item) for item in items]
    return _parse_one(parameter, kind, raw)


def _parse_one(parameter: str, kind: str, text: str) -> Any:
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


def parse_rfc3339(text: str) -> datetime | None:
    """RFC 3339 with offset → aware UTC datetime, microsecond precision (None if it does not parse)."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        moment = datetime.fromisoformat(f"{year}-{month}-{day}T{hour}:{minute}:{second}.{micro}{offset}")
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return moment


# ---------------------------------------------------------------------------------------------------
# cursors


def encode_cursor(fingerprint: str, keys: list[str]) -> str:
    raw = _encode(Cursor(version=CURSOR_VERSION, fingerprint=fingerprint, keys=keys))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(text: str) -> Cursor:
    """Strict: anything but a cursor this module wrote (byte for byte) is a 400 on `cursor`."""
    bad = malformed("cursor", "is not a valid cursor")
    if len(text) > MAX_CURSOR or not _B64URL.fullmatch(text):
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise bad from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        raise bad
    try:
        cursor = msgspec.json.decode(raw, type=Cursor)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise bad from None
    if cursor.version != CURSOR_VERSION or any("\x00" in key for key in cursor.keys):
        raise bad
    return cursor


# ---------------------------------------------------------------------------------------------------
# SQL sources


def _ident(value: str, pattern: re.Pattern[str]) -> str:
    """A validated identifier, safe to inline between single quotes."""
    if not pattern.fullmatch(value) or "'" in value:
        raise ValueError(f"refusing to inline {value!r} into SQL")
    return value


class Source:
    """Where rows come from and how field values read as SQL expressions."""

    table: str
    alias: str
    inner_alias = "r"

    def scope(self, query: ListQuery, params: Params) -> list[str]:
        raise NotImplementedError

    def value(self, field: Field, alias: str | None = None) -> str:
        """jsonb expression of `field`'s value; 'null'::jsonb when there is none (never SQL NULL)."""
        raise NotImplementedError

    def id_column(self, alias: str | None = None) -> str:
        raise NotImplementedError

    def system(self, name: str, alias: str | None = None) -> str:
        """The column of system field `name` (id or a timestamp) as used in filters."""
        alias = alias or self.alias
        if name == "id":
            return self.id_column(alias)
        if name not in SYSTEM_TIMESTAMPS:
            raise ValueError(f"unknown system field {name!r}")
        return f"{alias}.{name}"

    def system_sort(self, name: str) -> str:
        """The expression ordered by for a system timestamp; must never be SQL NULL."""
        return self.system(name)

    def search_match(self, ct: ContentType, q_ref: str) -> str:
        raise NotImplementedError

    def rank(self, ct: ContentType, q_ref: str) -> str:
        raise NotImplementedError

    def referenced(self, id_condition: Callable[[str], str], by_type: str) -> str:
        """EXISTS over referenced rows (inner alias `r`) matching `id_condition(r's id column)`."""
        raise NotImplementedError

    def status(self, status: str) -> str:
        raise malformed("status", "is not available here")


class DeliverySource(Source):
    """Published content: `published_documents d`, fallback-resolved values in `d.vals`."""

    table = "published_documents"
    alias = "d"

    def scope(self, query: ListQuery, params: Params) -> list[str]:
        # The type is inlined so partial indexes (`WHERE type = '…'`) of index_ddl() are usable.
        return [f"d.type = '{_ident(query.type_id, TYPE_ID)}'", f"d.locale = {params.add(query.locale)}::text"]

    def value(self, field: Field, alias: str | None = None) -> str:
        return f"coalesce({alias or self.alias}.vals->'{_ident(field.id, FIELD_ID)}', 'null'::jsonb)"

    def id_column(self, alias: str | None = None) -> str:
        return f"{alias or self.alias}.entry_id"

    def search_match(self, ct: ContentType, q_ref: str) -> str:
        return f"d.search @@ websearch_to_tsquery('simple', {q_ref}::text)"

    def rank(self, ct: ContentType, q_ref: str) -> str:
        return f"ts_rank(d.search, websearch_to_tsquery('simple', {q_ref}::text))"

    def referenced(self, id_condition: Callable[[str], str], by_type: str) -> str:
        return (
            f"EXISTS (SELECT 1 FROM published_documents r WHERE {id_condition('r.entry_id')}"  # noqa: S608
            f" AND r.locale = d.locale AND ({by_type}))"
        )


class DraftSource(Source):
    """Latest drafts: `entries e`; localized values fall back along `chain` (locale codes, first wins)."""

    table = "entries"
    alias = "e"

    def __init__(self, chain: list[str]) -> None:
        if not chain:
            raise ValueError("a locale fallback chain needs at least one locale")
        self.chain = [_ident(code, LOCALE_CODE) for code in chain]

    def scope(self, query: ListQuery, params: Params) -> list[str]:
        return [f"e.type = '{_ident(query.type_id, TYPE_ID)}'"]

    def value(self, field: Field, alias: str | None = None) -> str:
        base = f"{alias or self.alias}.data->'{_ident(field.id, FIELD_ID)}'"
        if not field.localized:
            return f"coalesce({base}->'_', 'null'::jsonb)"
        parts = [f"{base}->'{code}'" for code in self.chain]
        return f"coalesce({', '.join(parts)}, 'null'::jsonb)"

    def id_column(self, alias: str | None = None) -> str:
        return f"{alias or self.alias}.id"

    def system_sort(self, name: str) -> str:
        if name == "published_at":  # never-published drafts sort lowest, like fields with no value
            return "coalesce(e.published_at, '-infinity'::timestamptz)"
        return self.system(name)

    def _vector(self, ct: ContentType) -> str:
        texts = [f"({self.value(f)}) #>> '{{}}'" for f in ct.fields if f.type in SEARCHABLE_TYPES] or ["''"]
        return f"to_tsvector('simple', concat_ws(' ', {', '.join(texts)}))"

    def search_match(self, ct: ContentType, q_ref: str) -> str:
        return f"{self._vector(ct)} @@ websearch_to_tsquery('simple', {q_ref}::text)"

    def rank(self, ct: ContentType, q_ref: str) -> str:
        return f"ts_rank({self._vector(ct)}, websearch_to_tsquery('simple', {q_ref}::text))"

    def referenced(self, id_condition: Callable[[str], str], by_type: str) -> str:
        return f"EXISTS (SELECT 1 FROM entries r WHERE {id_condition('r.id')} AND ({by_type}))"  # noqa: S608

    def status(self, status: str) -> str:
        return {
            "draft": "e.published_version IS NULL",
            "published": "e.published_version IS NOT NULL AND e.published_version = e.version",
            "changed": "e.published_version IS NOT NULL AND e.published_version <> e.version",
        }[status]


def index_ddl(type_id: str, field_id: str) -> str:
    """CREATE INDEX for sorting/filtering delivery lists of `type_id` on `field_id` (matches DeliverySource)."""
    _ident(type_id, TYPE_ID)
    _ident(field_id, FIELD_ID)
    name = f"pd_idx_{type_id}_{field_id}"
    if len(name) > 63:
        digest = hashlib.sha256(f"{type_id}\x00{field_id}".encode()).hexdigest()[:12]
        name = f"{name[:50]}_{digest}"
    return (
        f'CREATE INDEX IF NOT EXISTS "{name}" ON published_documents '
        f"(locale, (coalesce(vals->'{field_id}', 'null'::jsonb)), entry_id) WHERE type = '{type_id}'"
    )


# ---------------------------------------------------------------------------------------------------
# SQL building


class Params:
    """Bind parameters: add() returns the `$n` placeholder."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"

    def json(self, value: Any) -> str:
        return f"{self.add(_encode(value).decode())}::text::jsonb"

    def json_list(self, values: list[Any]) -> str:
        return f"{self.add([_encode(v).decode() for v in values])}::text[]::jsonb[]"


_JSON_KIND = {"integer": "number", "number": "number", "boolean": "boolean"}
_COMPARE = {"eq": "=", "ne": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


def _condition(source: Source, alias: str, target: Target, op: str, value: Any, p: Params) -> str:
    field = target.field
    if field is None:
        column = source.system(target.name, alias)
        if target.name == "id":
            if op == "eq":
                return f"{column} = {p.add(value)}::text"
            if op == "ne":
                return f"{column} <> {p.add(value)}::text"
            array = f"{p.add(value)}::text[]"
            return f"{column} = ANY({array})" if op == "in" else f"NOT ({column} = ANY({array}))"
        if op == "exists":
            return f"{column} IS NOT NULL" if value else f"{column} IS NULL"
        if op == "ne":
            return f"{column} IS DISTINCT FROM {p.add(value)}::timestamptz"
        return f"{column} {_COMPARE[op]} {p.add(value)}::timestamptz"

    v = source.value(field, alias)
    if field.type in LINK_TYPES:
        if field.list:
            if op == "exists":
                present = f"(jsonb_typeof({v}) = 'array' AND {v} <> '[]'::jsonb)"
                return present if value else f"NOT {present}"
            if op in ("eq", "ne"):
                contains = f"{v} @> {p.json([{'id': value}])}"
            else:
                contains = f"{v} @> ANY({p.json_list([[{'id': item}] for item in value])})"
            return contains if op in ("eq", "in") else f"NOT ({contains})"
        link = f"({v}->>'id')"
        if op == "exists":
            return f"jsonb_typeof({v}) = 'object'" if value else f"jsonb_typeof({v}) <> 'object'"
        if op == "eq":
            return f"{link} = {p.add(value)}::text"
        if op == "ne":
            return f"{link} IS DISTINCT FROM {p.add(value)}::text"
        array = f"{p.add(value)}::text[]"
        return f"{link} = ANY({array})" if op == "in" else f"NOT coalesce({link} = ANY({array}), false)"

    if op == "exists":
        return f"{v} <> 'null'::jsonb" if value else f"{v} = 'null'::jsonb"
    if op in ("eq", "ne"):
        return f"{v} {_COMPARE[op]} {p.json(value)}"
    if op in LIST_OPS:
        any_of = f"{v} = ANY({p.json_list(value)})"
        return any_of if op == "in" else f"NOT ({any_of})"
    if op in RANGE_OPS:
        kind = _JSON_KIND.get(field.type, "string")
        return f"(jsonb_typeof({v}) = '{kind}' AND {v} {_COMPARE[op]} {p.json(value)})"
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%" if op == "contains" else f"{escaped}%"
    return f"(jsonb_typeof({v}) = 'string' AND ({v} #>> '{{}}') ILIKE {p.add(pattern)}::text ESCAPE '\\')"


def _filter_sql(source: Source, flt: Filter, p: Params) -> str:
    if flt.via is None:
        return _condition(source, source.alias, flt.target, flt.op, flt.value, p)
    inner = source.inner_alias
    by_type = " OR ".join(
        f"({inner}.type = '{_ident(type_id, TYPE_ID)}' AND {_condition(source, inner, target, flt.op, flt.value, p)})"
        for type_id, target in flt.targets
    )
    v = source.value(flt.via)
    if flt.via.list:
        elements = f"CASE WHEN jsonb_typeof({v}) = 'array' THEN {v} ELSE '[]'::jsonb END"

        def id_condition(column: str) -> str:
            return f"{column} IN (SELECT x->>'id' FROM jsonb_array_elements({elements}) x)"  # noqa: S608
    else:

        def id_condition(column: str) -> str:
            return f"{column} = ({v}->>'id')"

    return source.referenced(id_condition, by_type)


class _Key(NamedTuple):
    expr: str  # what ORDER BY and the keyset compare
    text: str  # how it is selected into the cursor (text)
    cast: str  # how the cursor text is bound back
    kind: str  # jsonb | timestamp | id | numeric
    desc: bool


def _sort_keys(query: ListQuery, source: Source, q_ref: str | None) -> list[_Key]:
    keys: list[_Key] = []
    for name, desc in _key_names(query.sort):
        if name == RANK:
            if q_ref is None:
                raise ValueError("sorting by rank needs q")
            # numeric (6 significant digits of the float4 rank) prints exactly, whatever extra_float_digits is
            expr = f"({source.rank(query.content_type, q_ref)})::numeric"
            keys.append(_Key(expr, f"{expr}::text", "::text::numeric", "numeric", desc))
        elif name == "id":
            expr = source.id_column()
            keys.append(_Key(expr, expr, "::text", "id", desc))
        elif name in SYSTEM_FIELDS:
            expr = source.system_sort(name)
            text = (
                f"CASE WHEN isfinite({expr}) THEN to_char(({expr}) AT TIME ZONE 'UTC', "
                f"'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') ELSE ({expr})::text END"
            )
            keys.append(_Key(expr, text, "::text::timestamptz", "timestamp", desc))
        else:
            field = query.content_type.field(name)
            if field is None:
                raise ValueError(f"unknown sort field {name!r}")
            expr = source.value(field)
            keys.append(_Key(expr, f"({expr})::text", "::text::jsonb", "jsonb", desc))
    return keys


def _check_key(kind: str, text: str) -> str:
    """A cursor key that the database will accept for its cast (or a 400)."""
    bad = malformed("cursor", "is not a valid cursor")
    if kind == "jsonb":
        try:
            msgspec.json.decode(text)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise bad from None
        if "\\u0000" in text:
            raise bad  # PostgreSQL's jsonb cannot hold NUL
        return text  # as PostgreSQL wrote it: re-encoding could round a long decimal
    if kind == "timestamp":
        if text in ("-infinity", "infinity"):
            return text
        if not _CURSOR_TS.fullmatch(text):
            raise bad
        try:
            datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError:
            raise bad from None
        return text
    if kind == "numeric":
        if not _CURSOR_NUMERIC.fullmatch(text):
            raise bad
        return text
    if len(text) > 1024:
        raise bad
    return text


def _keyset(keys: list[_Key], values: list[str], p: Params) -> str:
    refs = [f"{p.add(value)}{key.cast}" for key, value in zip(keys, values, strict=True)]
    if len({key.desc for key in keys}) == 1:
        op = "<" if keys[0].desc else ">"
        return f"({', '.join(k.expr for k in keys)}) {op} ({', '.join(refs)})"
    branches = []
    for i, key in enumerate(keys):
        equal = [f"{keys[j].expr} = {refs[j]}" for j in range(i)]
        equal.append(f"{key.expr} {'<' if key.desc else '>'} {refs[i]}")
        branches.append(f"({' AND '.join(equal)})")
    return f"({' OR '.join(branches)})"


class Executor(Protocol):
    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...


class Page(NamedTuple):
    rows: list[asyncpg.Record]
    next_cursor: str | None
    total: int


def build_sql(query: ListQuery, source: Source, select_columns: str) -> tuple[str, str, list[Any], int]:
    """(page SQL, count SQL, bind values, how many of them the count uses)."""
    p = Params()
    where = source.scope(query, p)
    for flt in query.filters:
        where.append(_filter_sql(source, flt, p))
    if query.status is not None:
        where.append(source.status(query.status))
    q_ref = None
    if query.q is not None:
        q_ref = p.add(query.q)
        where.append(source.search_match(query.content_type, q_ref))
    count_params = len(p.values)
    table = f"{source.table} {source.alias}"
    count_sql = f"SELECT count(*) FROM {table} WHERE {' AND '.join(where)}"  # noqa: S608 - see module doc

    keys = _sort_keys(query, source, q_ref)
    page_where = list(where)
    if query.cursor is not None:
        if len(query.cursor.keys) != len(keys):
            raise malformed("cursor", "is not a valid cursor")
        values = [_check_key(key.kind, text) for key, text in zip(keys, query.cursor.keys, strict=True)]
        page_where.append(_keyset(keys, values, p))
    key_columns = ", ".join(f"{key.text} AS _cursor_k{i}" for i, key in enumerate(keys))
    order = ", ".join(f"{key.expr} {'DESC' if key.desc else 'ASC'}" for key in keys)
    limit_ref = p.add(query.limit + 1)
    page_sql = (
        f"SELECT {select_columns}, {key_columns} FROM {table} WHERE {' AND '.join(page_where)}"  # noqa: S608
        f" ORDER BY {order} LIMIT {limit_ref}::int"
    )
    return page_sql, count_sql, p.values, count_params


async def fetch_page(conn: Executor, query: ListQuery, source: Source, select_columns: str) -> Page:
    """One page (keyset, LIMIT limit+1) and the count of the whole filtered set: two statements."""
    page_sql, count_sql, values, count_params = build_sql(query, source, select_columns)
    try:
        rows = await conn.fetch(page_sql, *values)
    except asyncpg.DataError as exc:
        if query.cursor is None:
            raise
        raise malformed("cursor", "is not a valid cursor") from exc
    total = await conn.fetchval(count_sql, *values[:count_params])
    next_cursor = None
    if len(rows) > query.limit:
        rows = rows[: query.limit]
        last = rows[-1]
        key_count = len(_key_names(query.sort))
        next_cursor = encode_cursor(query_fingerprint(query), [last[f"_cursor_k{i}"] for i in range(key_count)])
    return Page(rows=list(rows), next_cursor=next_cursor, total=int(total))


__all__ = [
    "Cursor", "DeliverySource", "DraftSource", "Filter", "ListQuery", "Page", "Source",
    "Target", "build_sql", "decode_cursor", "encode_cursor", "fetch_page", "index_ddl", "parse_list_query",
    "parse_rfc3339", "query_fingerprint",
]
