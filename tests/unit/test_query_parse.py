"""parse_list_query without a database: every bad parameter is a 400 naming it; good ones parse typed."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cms.app.problems import ProblemError
from cms.app.query.indexes import index_ddl
from cms.app.query.parse import (
    RANK,
    ListQuery,
    decode_cursor,
    encode_cursor,
    parse_list_query,
    query_fingerprint,
)
from cms.app.query.sources import DeliverySource, DraftSource
from cms.app.query.sql import build_sql
from cms.app.schema.model import (
    ContentType,
    Field,
)
from tests.support import AUTHOR_TYPE, TAG_TYPE, article_type

ARTICLE = article_type(Field(id="gallery", type="asset", list=True))
TYPES = {"author": AUTHOR_TYPE, "tag": TAG_TYPE, "article": ARTICLE}


def parse(params: dict[str, Any], *, allow_status: bool = False, default_sort: str = "-published_at",
          locale: str = "en") -> ListQuery:
    return parse_list_query(params, ARTICLE, TYPES, locale=locale, default_sort=default_sort,
                            allow_status=allow_status)


def bad(params: dict[str, Any], parameter: str, **kw: Any) -> ProblemError:
    with pytest.raises(ProblemError) as info:
        parse(params, **kw)
    assert info.value.status == 400
    assert info.value.code == "malformed"
    assert info.value.errors == [{"parameter": parameter, "detail": info.value.errors[0]["detail"]}]
    return info.value


def test_defaults() -> None:
    q = parse({})
    assert q.type_id == "article" and q.locale == "en"
    assert q.filters == [] and q.sort == [("published_at", True)]
    assert q.limit == 20 and q.cursor is None and q.fields is None and q.include == [] and q.depth == 1
    assert q.q is None and q.status is None


def test_unknown_parameters_are_ignored() -> None:
    assert parse({"foo": "bar", "locale": "de", "filterx": "1"}).filters == []


@pytest.mark.parametrize(
    "name, value",
    [
        ("filter[nope][eq]", "1"),  # unknown field
        ("filter[rank][like]", "1"),  # unknown operator
        ("filter[rank][contains]", "1"),  # contains on integer
        ("filter[flag][startswith]", "t"),
        ("filter[meta][eq]", "{}"),  # json: exists only
        ("filter[meta][gt]", "1"),
        ("filter[body][gt]", "a"),  # long_text is not sortable
        ("filter[rich][lt]", "a"),
        ("filter[author][gt]", "x"),  # references: eq ne in nin exists
        ("filter[author][contains]", "x"),
        ("filter[tags][lt]", "x"),
        ("filter[id][gt]", "x"),
        ("filter[id][contains]", "x"),
        ("filter[published_at][contains]", "2024"),
        ("filter[rank][gt]", "abc"),
        ("filter[rank][eq]", "1.5"),
        ("filter[rank][eq]", "99999999999999999999"),
        ("filter[rank][in]", "1,2,x"),
        ("filter[score][gt]", "1e999"),
        ("filter[score][gt]", "nan"),
        ("filter[score][eq]", "inf"),
        ("filter[flag][eq]", "yes"),
        ("filter[flag][eq]", "True"),
        ("filter[day][eq]", "2024-1-1"),
        ("filter[day][eq]", "2024-02-30"),
        ("filter[at][gt]", "2024-01-01"),
        ("filter[at][gt]", "2024-01-01T00:00:00"),  # no offset
        ("filter[published_at][gt]", "yesterday"),
        ("filter[updated_at][lt]", "2024-13-01T00:00:00Z"),
        ("filter[rank][exists]", "yes"),
        ("filter[title][eq]", "a\x00b"),
        ("filter[title][contains]", "\x00"),
        ("filter[title]]", "x"),
        ("filter[title][eq][x]", "x"),
        ("filter", "x"),
        ("filter[a.b.c][eq]", "x"),
        ("filter[.name][eq]", "x"),
        ("filter[title.name][eq]", "x"),  # not a reference
        ("filter[cover.title][eq]", "x"),  # assets are not entries
        ("filter[author.nope][eq]", "x"),  # not in any target type
        ("filter[author.age][gt]", "old"),  # value parsed for the nested field's type
        ("filter[author.name][gt]", "a\x00"),
        ("filter[tags.label][lt]", "\x00"),
        ("filter[rank][in]", ",".join(["1"] * 501)),
    ],
)
def test_bad_filters_name_the_parameter(name: str, value: str) -> None:
    bad({name: value}, name)


@pytest.mark.parametrize("value", ["0", "101", "-1", str(10**20), "abc", "", " 5", "5.0", "1e1", "+5"])
def test_bad_limit(value: str) -> None:
    bad({"limit": value}, "limit")


@pytest.mark.parametrize("value", ["1", "20", "100", "007"])
def test_good_limit(value: str) -> None:
    assert parse({"limit": value}).limit == int(value)


@pytest.mark.parametrize("value", ["0", "4", "-1", "x", ""])
def test_bad_depth(value: str) -> None:
    bad({"depth": value}, "depth")


def test_depth() -> None:
    assert parse({"depth": "3"}).depth == 3


@pytest.mark.parametrize(
    "value", ["nope", "meta", "body", "rich", "author", "tags", "cover", "title,nope", "title,,slug", "-", "rank,-rank"]
)
def test_bad_sort(value: str) -> None:
    bad({"sort": value}, "sort")


def test_sort() -> None:
    assert parse({"sort": "-published_at,title"}).sort == [("published_at", True), ("title", False)]
    assert parse({"sort": "kind,-rank,id"}).sort == [("kind", False), ("rank", True), ("id", False)]
    assert parse({"sort": ""}).sort == [("published_at", True)]
    assert parse({}, default_sort="-updated_at").sort == [("updated_at", True)]
    for name in ("text", "slug", "integer", "number", "boolean", "date", "datetime", "enum"):
        field = next(f.id for f in ARTICLE.fields if f.type == name)
        assert parse({"sort": f"-{field}"}).sort == [(field, True)]


def test_q_without_sort_sorts_by_rank() -> None:
    q = parse({"q": "  docker  "})
    assert q.q == "docker" and q.sort == [(RANK, True)]
    assert parse({"q": "docker", "sort": "title"}).sort == [("title", False)]
    assert parse({"q": ""}).q is None
    bad({"q": "a\x00"}, "q")
    bad({"q": "x" * 1001}, "q")


def test_include_and_fields() -> None:
    assert parse({"include": "author,tags"}).include == ["author", "tags"]
    assert parse({"include": "*"}).include == ["author", "tags", "cover", "gallery"]
    assert parse({"include": ""}).include == []
    bad({"include": "title"}, "include")
    bad({"include": "nope"}, "include")
    bad({"include": "author,"}, "include")
    assert parse({"fields": "title,slug,id"}).fields == ["title", "slug"]
    assert parse({"fields": "title,title"}).fields == ["title"]
    bad({"fields": "title,nope"}, "fields")


def test_status() -> None:
    assert parse({"status": "changed"}, allow_status=True).status == "changed"
    assert parse({"status": "bogus"}).status is None  # not a parameter of delivery lists
    bad({"status": "bogus"}, "status", allow_status=True)


def test_filters_parse_typed() -> None:
    q = parse({
        "filter[rank][gt]": "5", "filter[score][lte]": "1.5", "filter[flag]": "true", "filter[day][eq]": "2024-02-29",
        "filter[at][gte]": "2024-01-01T01:00:00+01:00", "filter[published_at][lt]": "2024-01-01T00:00:00.123456Z",
        "filter[title][in]": r"a\,b,c,", "filter[meta][exists]": "false", "filter[author][in]": "a1,a2",
        "filter[author.name][contains]": "ad", "filter[tags.label][eq]": "x", "filter[id][nin]": "x,y",
    })
    got = {f.parameter: (f.path, f.op, f.value) for f in q.filters}
    assert got == {
        "filter[rank][gt]": ("rank", "gt", 5),
        "filter[score][lte]": ("score", "lte", 1.5),
        "filter[flag]": ("flag", "eq", True),
        "filter[day][eq]": ("day", "eq", "2024-02-29"),
        "filter[at][gte]": ("at", "gte", "2024-01-01T00:00:00.000Z"),
        "filter[published_at][lt]": ("published_at", "lt", datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)),
        "filter[title][in]": ("title", "in", ["a,b", "c", ""]),
        "filter[meta][exists]": ("meta", "exists", False),
        "filter[author][in]": ("author", "in", ["a1", "a2"]),
        "filter[author.name][contains]": ("author.name", "contains", "ad"),
        "filter[tags.label][eq]": ("tags.label", "eq", "x"),
        "filter[id][nin]": ("id", "nin", ["x", "y"]),
    }
    nested = next(f for f in q.filters if f.path == "author.name")
    assert nested.via is not None and nested.via.id == "author" and [t for t, _ in nested.targets] == ["author"]


def test_multidict_last_wins() -> None:
    class Multi:
        def items(self) -> list[tuple[str, str]]:
            return [("limit", "5"), ("limit", "7"), ("filter[rank][gt]", "1"), ("filter[rank][gt]", "2")]

    q = parse_list_query(Multi(), ARTICLE, TYPES, locale="en", default_sort="-published_at")  # type: ignore[arg-type]
    assert q.limit == 7 and [f.value for f in q.filters] == [2]
    assert parse({"limit": ["3", "9"]}).limit == 9


def test_nested_filter_over_untyped_reference_checks_every_type() -> None:
    any_ref = ContentType(
        id="post", name="Post", description=None, display_field=None,
        fields=[Field(id="rel", type="reference", to=[])],
    )
    types = {**TYPES, "post": any_ref}
    q = parse_list_query({"filter[rel.label][eq]": "x"}, any_ref, types, locale="en", default_sort="-published_at")
    assert [t for t, _ in q.filters[0].targets] == ["tag"]
    with pytest.raises(ProblemError):
        parse_list_query({"filter[rel.zzz][eq]": "x"}, any_ref, types, locale="en", default_sort="-published_at")


# --- cursors ---------------------------------------------------------------------------------------


def cursor_error(value: str, params: dict[str, Any] | None = None) -> None:
    with pytest.raises(ProblemError) as info:
        parse({**(params or {}), "cursor": value})
    assert info.value.status == 400
    assert info.value.errors is not None and info.value.errors[0]["parameter"] == "cursor"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "value",
    [
        "x", "abc", "!!!", "====", "a b", "\x00", "%00", "é", "A" * 20000,
        b64(b"not json"), b64(b"{}"), b64(b"[]"), b64(b"null"), b64(b"[1]"), b64(b'[1, "x"]'),
        b64(b'[1, "x", "y"]'), b64(b'[1, "x", [1]]'), b64(b'[2, "x", []]'), b64(b'["1", "x", []]'),
        b64(b'[1, "x", [], 4]'), b64(b'{"version": 1, "fingerprint": "x", "keys": []}'),
        b64(b"\xff\xfe"), b64(b'[1, "x", ["\\u0000"]]'),
        b64(b'[1, "x", []]') + "=", b64(b'[1, "x", []]') + "==",
    ],
)
def test_garbage_cursor(value: str) -> None:
    cursor_error(value)


def test_cursor_must_round_trip_exactly() -> None:
    q = parse({})
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for pad in range(3):
        good = encode_cursor(query_fingerprint(q), ['"x"', "abc" + "d" * pad])
        assert parse({"cursor": good}).cursor is not None
        raw = base64.urlsafe_b64decode(good + "=" * (-len(good) % 4))
        if len(raw) % 3 == 0:
            continue
        # the same bytes spelled differently (unused low bits of the last character set) are refused
        tweaked = good[:-1] + alphabet[alphabet.index(good[-1]) + 1]
        assert base64.urlsafe_b64decode(tweaked + "=" * (-len(tweaked) % 4)) == raw
        cursor_error(tweaked)


def test_cursor_is_bound_to_the_query() -> None:
    base = {"filter[rank][gt]": "1", "sort": "title", "q": "x"}
    made = parse(base)
    cursor = encode_cursor(query_fingerprint(made), ['"a"', "id1"])
    assert parse({**base, "cursor": cursor, "limit": "5", "include": "*", "fields": "title"}).cursor is not None
    # filter order does not matter
    two = {"filter[rank][gt]": "1", "filter[rank][lt]": "9", "sort": "title"}
    c2 = encode_cursor(query_fingerprint(parse(two)), ['"a"', "id1"])
    assert parse({"sort": "title", "filter[rank][lt]": "9", "filter[rank][gt]": "1", "cursor": c2}).cursor
    for other in (
        {**base, "filter[rank][gt]": "2"},
        {**base, "filter[rank][gte]": "1", "filter[rank][gt]": "1"},
        {**base, "sort": "-title"},
        {**base, "q": "y"},
        {"filter[rank][gt]": "1", "sort": "title"},
    ):
        cursor_error(cursor, other)
    with pytest.raises(ProblemError):
        parse({**base, "cursor": cursor}, locale="de")
    with pytest.raises(ProblemError):
        parse_list_query({"cursor": cursor}, AUTHOR_TYPE, TYPES, locale="en", default_sort="-published_at")
    status = parse({"status": "draft"}, allow_status=True)
    c3 = encode_cursor(query_fingerprint(status), ["2024-01-01T00:00:00.000000Z", "x"])
    assert parse({"status": "draft", "cursor": c3}, allow_status=True).cursor is not None
    with pytest.raises(ProblemError):
        parse({"status": "changed", "cursor": c3}, allow_status=True)
    # wrong number of keys for the sort
    cursor_error(encode_cursor(query_fingerprint(made), ['"a"']), base)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(min_size=1, max_size=200),
    st.binary(min_size=1, max_size=200).map(b64),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
        max_leaves=10,
    ).map(lambda v: b64(msgspec.json.encode(v))),
    st.tuples(st.integers(-2, 3), st.text(max_size=40), st.lists(st.text(max_size=10), max_size=4)).map(
        lambda t: b64(msgspec.json.encode(list(t)))
    ),
))
def test_fuzzed_cursors_are_400(value: str) -> None:
    with pytest.raises(ProblemError) as info:
        parse({"cursor": value})
    assert info.value.status == 400 and info.value.errors is not None
    assert info.value.errors[0]["parameter"] == "cursor"


def test_decode_cursor_round_trip() -> None:
    text = encode_cursor("f" * 32, ['"a,b"', "2024-01-01T00:00:00.000000Z", "id"])
    cursor = decode_cursor(text)
    assert cursor.fingerprint == "f" * 32 and cursor.keys == ['"a,b"', "2024-01-01T00:00:00.000000Z", "id"]


# --- SQL text --------------------------------------------------------------------------------------


def test_user_input_never_reaches_sql_text() -> None:
    evil = "x' OR '1'='1; DROP TABLE entries; --"
    q = parse({
        "filter[title][eq]": evil, "filter[title][contains]": evil, "filter[id][in]": evil,
        "filter[author.name][ne]": evil, "filter[tags][nin]": evil, "q": evil, "sort": "title",
    })
    for source in (DeliverySource(), DraftSource(["de", "en"])):
        page_sql, count_sql, values, _ = build_sql(q, source, "*")
        # A trigram-served LIKE pattern is the one value written into the text, dollar-quoted (so
        # PostgreSQL plans each pattern): outside those literals, no user input.
        outside = [re.sub(r"\$(q+)\$.*?\$\1\$", "", sql, flags=re.S) for sql in (page_sql, count_sql)]
        assert all("DROP" not in sql for sql in outside), outside
        assert any("DROP" in str(v) for v in values)
    assert "$q$%x' OR '1'='1; DROP TABLE entries; --%$q$" in build_sql(q, DeliverySource(), "*")[0]


def test_mixed_directions_use_the_expanded_or_form() -> None:
    q = parse({"sort": "kind,-rank"})
    q.cursor = decode_cursor(encode_cursor(query_fingerprint(q), ['"news"', "3", "id1"]))
    page_sql, _, values, _ = build_sql(q, DeliverySource(), "d.entry_id")
    assert " OR " in page_sql and values[-3:] == ['"news"', "3", "id1"]
    same = parse({"sort": "-kind,-rank"})
    same.cursor = decode_cursor(encode_cursor(query_fingerprint(same), ['"news"', "3", "id1"]))
    page_sql, _, _, _ = build_sql(same, DeliverySource(), "d.entry_id")
    assert ") < (" in page_sql


def test_draft_values_follow_the_chain() -> None:
    src = DraftSource(["de", "en"])
    title, body = ARTICLE.field("title"), ARTICLE.field("body")
    assert title is not None and body is not None
    assert src.value(title) == "coalesce(e.data->'title'->'de', e.data->'title'->'en', 'null'::jsonb)"
    assert src.value(body) == "coalesce(e.data->'body'->'_', 'null'::jsonb)"
    assert DeliverySource().value(title) == "coalesce(d.vals->'title', 'null'::jsonb)"
    with pytest.raises(ValueError):
        DraftSource(["en'; --"])


def test_index_ddl() -> None:
    ddl = index_ddl("article", "title")
    assert ddl == (
        'CREATE INDEX IF NOT EXISTS "pd_idx_article_title" ON published_documents '
        "(locale, (coalesce(vals->'title', 'null'::jsonb)), entry_id) WHERE type = 'article'"
    )
    long_ddl = index_ddl("t" * 64, "f" * 64)
    name = long_ddl.split('"')[1]
    assert len(name) <= 63 and name == index_ddl("t" * 64, "f" * 64).split('"')[1]
    assert name != index_ddl("t" * 64, "f" * 63 + "g").split('"')[1]
    with pytest.raises(ValueError):
        index_ddl("article", "x'y")


def test_the_page_limit_is_written_into_the_sql_where_no_value_can_change_the_plan() -> None:
    """With `LIMIT $n` PostgreSQL's generic plan would cost reading every match, so it plans each
    execution anew: as a number, an unfiltered list keeps one plan (bench/README.md). A filter's or
    a search's values decide the plan, so there the limit stays bound and each execution is planned."""
    for params, written in (
        ({"limit": "20"}, True), ({"limit": "20", "sort": "title"}, True),
        ({"limit": "20", "filter[rank][gte]": "3"}, False), ({"limit": "20", "q": "magna"}, False),
        ({"limit": "20", "q": "magna", "sort": "title"}, False),
    ):
        page_sql, _, values, _ = build_sql(parse(params), DeliverySource(), "d.entry_id")
        assert bool(re.search(r"LIMIT 21\b", page_sql)) is written, page_sql
        assert bool(re.search(r"LIMIT \$\d+::int", page_sql)) is not written, page_sql
        assert (21 in values) is not written
