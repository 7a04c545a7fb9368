"""A typed `ListQuery` → SQL over a source (app/query/sources.py: published documents or drafts):
filters, sort, keyset cursors, full-text search and capped totals. `fetch_page` runs one statement: the page, with
the count of the whole filtered set as a column (a second statement counts when the page is empty).

SQL safety: user input only ever reaches the database as bind parameters. The only things inlined
into SQL text are field ids, content-type ids and locale codes, and each is checked against its
identifier pattern right where it is inlined (`sources.ident`), so a quote can never get in.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import asyncpg
import msgspec

from ..problems import malformed
from ..schema.model import (
    FIELD_ID,
    KEY_TEXT_MAX,
    LINK_TYPES,
    TYPE_ID,
)
from .parse import (
    LIKE_TYPES,
    LIST_OPS,
    RANGE_OPS,
    RANK,
    SYSTEM_FIELDS,
    Condition,
    Filter,
    Group,
    ListQuery,
    Target,
    encode_cursor,
    key_names,
    query_fingerprint,
)
from .sources import DeliverySource, Params, Source, ValuesSource, ident

_CURSOR_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_CURSOR_NUMERIC = re.compile(r"-?\d{1,20}(\.\d{1,60})?")

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

    if target.within is None:
        v = source.value(field, alias)
    else:  # a sub-field of a component
        v = f"coalesce({source.value(target.within, alias)}->'{ident(field.id, FIELD_ID)}', 'null'::jsonb)"
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
    text = source.text(field, alias) if target.within is None else None
    if text is not None and "\x00" not in pattern:  # the form a trigram index (index_ddl) serves
        # The pattern is written into the statement, not bound: with a bound pattern PostgreSQL
        # switches to a generic plan after five runs, which cannot know how many rows match and, for
        # a common pattern, reads and sorts every match (1.7 s at 1M) instead of walking the order's
        # index. Each pattern is planned for itself (a millisecond or two).
        return f"{text} ILIKE {_dollar_quoted(pattern)}::text ESCAPE '\\'"
    return f"(jsonb_typeof({v}) = 'string' AND ({v} #>> '{{}}') ILIKE {p.add(pattern)}::text ESCAPE '\\')"


def _dollar_quoted(value: str) -> str:
    """`value` as a dollar-quoted SQL literal (no escapes inside: it means the same whatever
    standard_conforming_strings says), with a tag the value does not contain. Never with a NUL
    (parse.py refuses them; the caller binds such a value instead)."""
    tag = "q"
    while f"${tag}$" in value or value.endswith(f"${tag}"):
        tag += "q"
    return f"${tag}${value}${tag}$"


def _filter_sql(source: Source, flt: Condition, p: Params) -> str:
    if isinstance(flt, Group):
        if not flt.items:
            return "true" if flt.op == "and" else "false"
        joined = f" {flt.op.upper()} ".join(_filter_sql(source, item, p) for item in flt.items)
        return f"({joined})"
    if flt.via is None:
        return _condition(source, source.alias, flt.target, flt.op, flt.value, p)
    inner = source.inner_alias
    by_type = " OR ".join(
        f"({inner}.type = '{ident(type_id, TYPE_ID)}' AND {_condition(source, inner, target, flt.op, flt.value, p)})"
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


def _sort_keys(
    query: ListQuery, source: Source, q_ref: str | None, ranked: str | None = None, ranked_id: str | None = None,
) -> list[_Key]:
    """The keys ORDER BY and cursors use; `ranked`, `ranked_id`: expressions holding the rank and the
    id already read (the ranked set of `_ranked_sql`)."""
    keys: list[_Key] = []
    for name, desc in key_names(query.sort):
        if name == RANK:
            if q_ref is None:
                raise ValueError("sorting by rank needs q")
            # numeric (6 significant digits of the float4 rank) prints exactly, whatever extra_float_digits is
            expr = f"({ranked or source.rank(query.content_type, q_ref)})::numeric"
            keys.append(_Key(expr, f"{expr}::text", "::text::numeric", "numeric", desc))
        elif name == "id":
            expr = ranked_id or source.id_column()
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


# `meta.total` of a filtered list counts at most this many (then it says "gte"); an unfiltered
# list's total is exact at any size (the list_counts table).
TOTAL_BOUND = 10_000
# `q` sorted by rank ranks at most this many matches (the first the text index yields).
RANK_BOUND = 10_000


class Page(NamedTuple):
    rows: list[asyncpg.Record]
    next_cursor: str | None
    total: int
    total_relation: str = "eq"  # "gte": there are more than `total` (TOTAL_BOUND)
    along: list[asyncpg.Record] = []  # noqa: RUF012 - the rows `fetch_page`'s `along` brought; never changed


class Along(NamedTuple):
    """Rows to bring in the page's own statement, after its rows (one round trip, not two): `columns`
    (as many as the page's `select_columns`, in their order) of `source`, a FROM clause that may read
    the page's rows as `_page` (e.g. what the page includes, delivery/documents.py)."""

    columns: str
    source: str


def _with_along(page_sql: str, keys: int, along: Along) -> str:
    # The page's rows keep their order: PostgreSQL reads a materialised CTE back in the order it
    # wrote it (SQL itself promises no order without an outer ORDER BY; the sort keys are not all
    # columns here, so the outer query could not repeat it). The rows are told apart by `_along`.
    padding = "NULL, " * keys
    return (
        f"WITH _page AS MATERIALIZED ({page_sql}) SELECT *, false AS _along FROM _page"  # noqa: S608 - see module doc
        f" UNION ALL SELECT {along.columns}, {padding}NULL, true FROM {along.source}"
    )


_COUNTED_OPS = {"eq", "in", "lt", "lte", "gt", "gte"}
# on text, counted through published_values' trigram index (indexes.py values_trigram_ddl)
_COUNTED_LIKE_OPS = {"contains", "startswith"}


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _keyed(value: Any) -> bool:
    """value_counts holds a key for it (migration 0022 value_key: strings up to KEY_TEXT_MAX)."""
    return isinstance(value, bool) or (isinstance(value, str) and len(value) <= KEY_TEXT_MAX)


def _counted_by_values(query: ListQuery, source: Source, p: Params) -> tuple[str, str] | None:
    """A delivery list filtered on one indexed scalar field: (is the field ready, its count from
    the kept value counts (eq/in on strings and booleans), else from published_values by an
    index-only scan (a number range first asks the kept counts whether it is over the bound)).
    Ready: indexed_fields says every document has its row;
    else the caller counts the documents. The branch not taken never runs (an initplan runs when
    its value is needed)."""
    if not isinstance(source, DeliverySource) or query.q is not None or query.status is not None:
        return None
    if len(query.filters) != 1 or not isinstance(flt := query.filters[0], Filter):
        return None
    field = flt.target.field
    if flt.via is not None or flt.target.within is not None or field is None or not field.counted:
        return None
    if flt.op not in _COUNTED_OPS and not (flt.op in _COUNTED_LIKE_OPS and field.type in LIKE_TYPES):
        return None
    type_id, field_id = ident(query.type_id, TYPE_ID), ident(field.id, FIELD_ID)
    locale = p.add(query.locale)
    # Kept counts per value (migration 0022 value_counts): at 1M, ~2 ms of index entries less per request.
    counts = (
        f"SELECT coalesce(sum(c.n), 0) FROM value_counts c WHERE c.type = '{type_id}'"  # noqa: S608
        f" AND c.field = '{field_id}' AND c.locale = {locale}::text"
    )
    kind = _JSON_KIND.get(field.type, "string")
    if flt.op in ("eq", "in") and kind != "number" and all(_keyed(v) for v in _values(flt.value)):
        # Strings and booleans are their own keys: the exact total, whatever the number of matches.
        fast = f"{counts} AND c.key = ANY({p.json_list(_values(flt.value))})"
    else:
        condition = _condition(ValuesSource(), "v", flt.target, flt.op, flt.value, p)
        fast = (
            f"SELECT count(*) FROM (SELECT 1 FROM published_values v WHERE v.type = '{type_id}'"  # noqa: S608
            f" AND v.field = '{field_id}' AND v.locale = {locale}::text AND {condition}"
            f" LIMIT {TOTAL_BOUND + 1}) _counted"
        )
        if flt.op in RANGE_OPS and kind == "number":
            # The buckets wholly inside the range may already hold more than the bound: then no value is counted.
            side = ">" if flt.op in ("gt", "gte") else "<"
            inside = (f"{counts} AND jsonb_typeof(c.key) = 'number'"
                      f" AND c.key {side} to_jsonb(value_bucket({p.json(flt.value)}))")
            fast = f"SELECT CASE WHEN ({inside}) > {TOTAL_BOUND} THEN {TOTAL_BOUND + 1} ELSE ({fast}) END"
    ready = f"SELECT ready FROM indexed_fields WHERE type = '{type_id}' AND field = '{field_id}'"  # noqa: S608
    return ready, fast


def build_sql(query: ListQuery, source: Source, select_columns: str) -> tuple[str, str, list[Any], list[Any]]:
    """(page SQL, count SQL, the page's bind values, the count's when it runs alone)."""
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
    table = f"{source.table} {source.alias}"
    if not query.filters and query.status is None and q_ref is None:
        # The whole type (in a locale): kept count rows, whatever the size.
        count_sql = source.counted(query, p)
        alone = Params()
        standalone = (source.counted(query, alone), alone.values)
    else:
        # At most TOTAL_BOUND + 1 matches are counted, so a total never costs more than that.
        count_sql = (
            f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {' AND '.join(where)}"  # noqa: S608 - see module doc
            f" LIMIT {TOTAL_BOUND + 1}) _counted"
        )
        if (counted := _counted_by_values(query, source, p)) is not None:
            ready, fast = counted
            count_sql = f"SELECT CASE WHEN coalesce(({ready}), false) THEN ({fast}) ELSE ({count_sql}) END"
        standalone = (count_sql, list(p.values))

    if q_ref is not None and isinstance(source, DeliverySource) and any(name == RANK for name, _ in query.sort):
        # One pass over the matches gives the order and the total (the count alone: empty pages only).
        ranked_sql, values = _ranked_sql(query, source, p, where, q_ref, select_columns)
        return ranked_sql, standalone[0], values, standalone[1]
    keys = _sort_keys(query, source, q_ref)
    page_where = list(where)
    key_columns, order = _paging(query, keys, page_where, p)
    limit_ref = _page_limit(query, p)
    source_sql = table
    if q_ref is not None and any(name == RANK for name, _ in query.sort):
        # Ranking reads every match's text vector: a common word in a million documents would rank
        # them all. Only the first RANK_BOUND matches are ranked (docs/api.md says so).
        source_sql = (
            f"(SELECT * FROM {table} WHERE {' AND '.join(where)} LIMIT {RANK_BOUND}) {source.alias}"  # noqa: S608
        )
    # The count rides along as a column (one round trip, computed once: an uncorrelated subquery);
    # a page without rows has no row to carry it, and the count answers alone.
    page_sql = (
        f"SELECT {select_columns}, {key_columns}, ({count_sql}) AS _total"  # noqa: S608
        f" FROM {source_sql} WHERE {' AND '.join(page_where)} ORDER BY {order} LIMIT {limit_ref}"
    )
    return page_sql, standalone[0], p.values, standalone[1]


def _page_limit(query: ListQuery, p: Params) -> str:
    """The page's LIMIT: one row more than the page, to know whether there is a next one.

    Written into the SQL as a number when no value of the request can change the best plan (no
    filter, search or status): PostgreSQL then keeps one plan for the prepared statement, where
    `LIMIT $n` makes its generic plan look like a read of everything and it plans every execution
    anew (~100-200 us of its CPU per list). With filters it stays bound, so each execution is
    planned for its values (a rare value takes its index, a common one the sort order's)."""
    if query.filters or query.q is not None or query.status is not None:
        return f"{p.add(query.limit + 1)}::int"
    return str(int(query.limit) + 1)


def _paging(query: ListQuery, keys: list[_Key], page_where: list[str], p: Params) -> tuple[str, str]:
    """The cursor's keyset condition (appended to `page_where`), the key columns and the ORDER BY."""
    if query.cursor is not None:
        if len(query.cursor.keys) != len(keys):
            raise malformed("cursor", "is not a valid cursor")
        values = [_check_key(key.kind, text) for key, text in zip(keys, query.cursor.keys, strict=True)]
        page_where.append(_keyset(keys, values, p))
    key_columns = ", ".join(f"{key.text} AS _cursor_k{i}" for i, key in enumerate(keys))
    order = ", ".join(f"{key.expr} {'DESC' if key.desc else 'ASC'}" for key in keys)
    return key_columns, order


def _ranked_sql(
    query: ListQuery, source: Source, p: Params, where: list[str], q_ref: str, select_columns: str,
) -> tuple[str, list[Any]]:
    """Published documents sorted by rank, in one pass over the matches: the first TOTAL_BOUND + 1
    matches the text index yields are read once, into a narrow set (id, rank, position) that gives
    both the total and the order; the first RANK_BOUND of them are ranked; only the page's rows
    are then read whole."""
    keys = _sort_keys(query, source, q_ref, "_m._r", "_m._id")
    alias = source.alias
    page_where = [f"_m._n <= {RANK_BOUND}"]
    key_columns, order = _paging(query, keys, page_where, p)
    locale_ref = p.add(query.locale)
    limit_ref = _page_limit(query, p)
    matches = (
        f"WITH _m AS MATERIALIZED (SELECT {alias}.entry_id AS _id, {source.rank(query.content_type, q_ref)} AS _r,"  # noqa: S608
        f" row_number() OVER () AS _n FROM {source.table} {alias} WHERE {' AND '.join(where)}"
        f" LIMIT {TOTAL_BOUND + 1})"
    )
    joined = (
        f" JOIN {source.table} {alias} ON {alias}.entry_id = _m._id AND {alias}.locale = {locale_ref}::text"
        f" AND {alias}.type = '{ident(query.type_id, TYPE_ID)}'"
    )
    select = f"SELECT {select_columns}, {key_columns}, (SELECT count(*) FROM _m) AS _total"
    if all("_m." in key.expr for key in keys):
        # Every key is in the ranked set: the page is chosen there, and only its rows are read whole.
        page = f"(SELECT * FROM _m WHERE {' AND '.join(page_where)} ORDER BY {order} LIMIT {limit_ref}) _m"
        return f"{matches} {select} FROM {page}{joined} ORDER BY {order}", p.values
    return (
        f"{matches} {select} FROM _m{joined} WHERE {' AND '.join(page_where)} ORDER BY {order} LIMIT {limit_ref}",
        p.values,
    )


async def fetch_page(
    conn: Executor, query: ListQuery, source: Source, select_columns: str, *, along: Along | None = None,
) -> Page:
    """One page (keyset, LIMIT limit+1) and the count of the whole filtered set: one statement (two
    when the page is empty), with `along`'s rows too (`Page.along`)."""
    page_sql, count_sql, values, count_values = build_sql(query, source, select_columns)
    if along is not None:
        page_sql = _with_along(page_sql, len(key_names(query.sort)), along)
    try:
        rows = await conn.fetch(page_sql, *values)
    except asyncpg.DataError as exc:
        if query.cursor is None:
            raise
        raise malformed("cursor", "is not a valid cursor") from exc
    brought: list[asyncpg.Record] = []
    if along is not None:
        brought = [r for r in rows if r["_along"]]
        rows = [r for r in rows if not r["_along"]]
    total = int(rows[0]["_total"] if rows else await conn.fetchval(count_sql, *count_values))
    next_cursor = None
    if len(rows) > query.limit:
        rows = rows[: query.limit]
        last = rows[-1]
        key_count = len(key_names(query.sort))
        next_cursor = encode_cursor(query_fingerprint(query), [last[f"_cursor_k{i}"] for i in range(key_count)])
    if total > TOTAL_BOUND and (query.filters or query.status is not None or query.q is not None):
        return Page(list(rows), next_cursor, TOTAL_BOUND, "gte", brought)
    return Page(list(rows), next_cursor, total, "eq", brought)
