"""The list query engine against PostgreSQL: every operator on both sources, sort, search, cursors."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cms.app.problems import ProblemError
from cms.app.query.indexes import index_ddl
from cms.app.query.parse import ListQuery, encode_cursor, parse_list_query, query_fingerprint
from cms.app.query.sources import DeliverySource, DraftSource, Source
from cms.app.query.sql import Page, fetch_page
from cms.app.schema.model import (
    ContentType,
    Field,
)
from tests.support import AUTHOR_TYPE, TAG_TYPE, article_type

ARTICLE = article_type()
TYPES = {"author": AUTHOR_TYPE, "tag": TAG_TYPE, "article": ARTICLE}
CHAINS = {"en": ["en"], "de": ["de", "en"]}
SEARCHABLE = {"text", "long_text", "rich_text"}


def T(day: int, hour: int = 0) -> datetime:
    return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=day - 1, hours=hour)


def draft_data(ct: ContentType, fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in ct.fields:
        if f.id in fields:
            out[f.id] = fields[f.id] if f.localized else {"_": fields[f.id]}
    return out


def resolved(ct: ContentType, fields: dict[str, Any], chain: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in ct.fields:
        value = fields.get(f.id)
        if f.localized and value is not None:
            value = next((value[c] for c in chain if value.get(c) is not None), None)
        if value is not None:
            out[f.id] = value
    return out


def search_text(ct: ContentType, vals: dict[str, Any]) -> str:
    return " ".join(str(vals[f.id]) for f in ct.fields if f.type in SEARCHABLE and f.id in vals)


async def put(
    conn: Any, ct: ContentType, entry_id: str, fields: dict[str, Any], *, published: dict[str, Any] | None | bool = True,
    published_at: datetime | None = None, updated_at: datetime | None = None, created_at: datetime | None = None,
) -> None:
    """An entry (draft = `fields`) and, unless published is False, its published documents in en and de."""
    created_at = created_at or T(1)
    updated_at = updated_at or created_at
    live = fields if published is True else published or None
    changed = live is not None and live is not fields
    await conn.execute(
        """INSERT INTO entries (id, type, data, version, published_version, published_at, created_at, updated_at)
           VALUES ($1, $2, $3::text::jsonb, $4, $5, $6, $7, $8)""",
        entry_id, ct.id, msgspec.json.encode(draft_data(ct, fields)).decode(), 2 if changed else 1,
        None if live is None else 1, published_at if live is not None else None, created_at, updated_at,
    )
    if live is None:
        return
    for locale, chain in CHAINS.items():
        vals = resolved(ct, live, chain)
        await conn.execute(
            """INSERT INTO published_documents
                 (entry_id, locale, type, version, body, etag, vals, search, published_at, updated_at, created_at)
               VALUES ($1, $2, $3, 1, $4, 'x', $5::text::jsonb, to_tsvector('simple', $6), $7, $8, $9)""",
            entry_id, locale, ct.id, b"{}", msgspec.json.encode(vals).decode(), search_text(ct, vals),
            published_at or T(1), updated_at, created_at,
        )


async def install_types(conn: Any, *types: ContentType) -> None:
    for ct in types:
        await conn.execute(
            "INSERT INTO content_types (id, name, fields) VALUES ($1, $2, $3::text::jsonb)",
            ct.id, ct.name, msgspec.json.encode([f.to_json() for f in ct.fields]).decode(),
        )


def ref(entry_id: str, type_id: str) -> dict[str, str]:
    return {"id": entry_id, "type": type_id}


async def seed(conn: Any) -> None:
    await conn.execute("INSERT INTO locales (code, name, fallback) VALUES ('de', 'Deutsch', 'en')")
    await install_types(conn, AUTHOR_TYPE, TAG_TYPE, ARTICLE)
    await put(conn, AUTHOR_TYPE, "a1", {"name": {"en": "Ada"}, "age": 36}, published_at=T(1))
    await put(conn, AUTHOR_TYPE, "a2", {"name": {"en": "Linus"}, "age": 50}, published_at=T(1))
    await put(conn, AUTHOR_TYPE, "a3", {"name": {"en": "Ghost"}, "age": 99}, published=False)
    await put(conn, TAG_TYPE, "t1", {"label": "python"}, published_at=T(1))
    await put(conn, TAG_TYPE, "t2", {"label": "sql"}, published_at=T(1))
    t1, t2 = ref("t1", "tag"), ref("t2", "tag")
    articles: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("art1", {
            "title": {"en": "Hello World", "de": "Hallo Welt"}, "slug": "hello-world", "body": "intro to docker",
            "rich": "Rich **text**", "rank": 1, "score": 1.5, "flag": True, "day": "2024-01-01",
            "at": "2024-01-01T10:00:00.000Z", "kind": "news", "meta": {"a": 1}, "author": ref("a1", "author"),
            "tags": [t1], "cover": {"id": "as1"},
        }, {}),
        ("art2", {
            "title": {"en": "Second post"}, "slug": "second-post", "body": "postgres tips 100%", "rank": 2,
            "score": 2.5, "flag": False, "day": "2024-02-01", "at": "2024-02-01T10:00:00.000Z", "kind": "blog",
            "author": ref("a2", "author"), "tags": [t1, t2],
        }, {}),
        ("art3", {
            "title": {"en": "third_one, with comma"}, "slug": "third", "body": "docker docker docker", "rank": 3,
            "score": -1, "flag": True, "day": "2024-03-01", "at": "2024-03-01T10:00:00.000Z", "kind": "news",
            "author": ref("a1", "author"), "tags": [],
        }, {}),
        ("art4", {"title": {"en": "O'Reilly 50% off \\ back_slash"}, "meta": None}, {}),
        ("art5", {"title": {"en": "hello again"}, "rank": 2, "kind": "blog", "author": ref("a3", "author")}, {}),
        ("art6", {"title": {"en": "New title"}, "rank": 10, "author": ref("a2", "author")},
         {"published": {"title": {"en": "Old title"}, "rank": 10, "author": ref("a2", "author")}}),
        ("art7", {"title": {"en": "Unpublished hello"}, "rank": 5}, {"published": False}),
    ]
    for n, (entry_id, fields, extra) in enumerate(articles, start=1):
        await put(conn, ARTICLE, entry_id, fields, published_at=T(n), created_at=T(n), updated_at=T(10 + n),
                  **extra)


def source_for(name: str, locale: str = "en") -> Source:
    return DeliverySource() if name == "delivery" else DraftSource(CHAINS[locale])


def id_column(name: str) -> str:
    return "d.entry_id AS id" if name == "delivery" else "e.id AS id"


def query(params: dict[str, Any], *, ct: ContentType = ARTICLE, locale: str = "en", source: str = "delivery",
          allow_status: bool = False) -> ListQuery:
    default = "-published_at" if source == "delivery" else "-updated_at"
    return parse_list_query(params, ct, TYPES, locale=locale, default_sort=default, allow_status=allow_status)


async def ids(conn: Any, params: dict[str, Any], source: str, **kw: Any) -> tuple[list[str], int]:
    q = query({"limit": "100", **params}, source=source, **kw)
    page = await fetch_page(conn, q, source_for(source, kw.get("locale", "en")), id_column(source))
    assert page.next_cursor is None
    return [row["id"] for row in page.rows], page.total


async def all_pages(conn: Any, params: dict[str, Any], source: str, limits: list[int], **kw: Any) -> list[str]:
    out: list[str] = []
    cursor: str | None = None
    turn = 0
    while True:
        p = {**params, "limit": str(limits[turn % len(limits)])}
        if cursor:
            p["cursor"] = cursor
        page = await fetch_page(conn, query(p, source=source, **kw), source_for(source, kw.get("locale", "en")),
                                id_column(source))
        out.extend(row["id"] for row in page.rows)
        cursor = page.next_cursor
        turn += 1
        if cursor is None:
            return out
        assert turn < 100


def A(*numbers: int) -> set[str]:
    return {f"art{n}" for n in numbers}


PUB = A(1, 2, 3, 4, 5, 6)
DRAFT = A(1, 2, 3, 4, 5, 6, 7)
EVIL = [
    "' OR 1=1 --", "x'); DROP TABLE entries; --", "\" OR \"\"=\"", "%", "%%", "_", "\\", "' || (SELECT 1) || '",
    "$1", "1; SELECT pg_sleep(5)", "null", "{}", "[]", "\u00e9\u4e2d\U0001f600",
]

# (params, expected for delivery, expected for drafts: None = same)
CASES: list[tuple[dict[str, str], set[str], set[str] | None]] = [
    ({"filter[title][eq]": "Hello World"}, A(1), None),
    ({"filter[title]": "Hello World"}, A(1), None),
    ({"filter[title][eq]": "hello world"}, set(), None),
    ({"filter[title][ne]": "Hello World"}, A(2, 3, 4, 5, 6), A(2, 3, 4, 5, 6, 7)),
    ({"filter[title][in]": "Hello World,third_one\\, with comma"}, A(1, 3), None),
    ({"filter[title][nin]": "Hello World,third_one\\, with comma"}, A(2, 4, 5, 6), A(2, 4, 5, 6, 7)),
    ({"filter[title][contains]": "HELLO"}, A(1, 5), A(1, 5, 7)),
    ({"filter[title][contains]": "%"}, A(4), None),
    ({"filter[title][contains]": "0% o"}, A(4), None),
    ({"filter[title][contains]": "%%"}, set(), None),
    ({"filter[title][contains]": "_"}, A(3, 4), None),
    ({"filter[title][contains]": "\\"}, A(4), None),
    ({"filter[title][contains]": "'"}, A(4), None),
    ({"filter[title][startswith]": "he"}, A(1, 5), None),
    ({"filter[title][startswith]": "%"}, set(), None),
    ({"filter[title][eq]": "Old title"}, A(6), set()),
    ({"filter[title][eq]": "New title"}, set(), A(6)),
    ({"filter[rank][eq]": "2"}, A(2, 5), None),
    ({"filter[rank][ne]": "2"}, A(1, 3, 4, 6), A(1, 3, 4, 6, 7)),
    ({"filter[rank][in]": "1,3"}, A(1, 3), None),
    ({"filter[rank][nin]": "1,3"}, A(2, 4, 5, 6), A(2, 4, 5, 6, 7)),
    ({"filter[rank][lt]": "2"}, A(1), None),
    ({"filter[rank][lte]": "2"}, A(1, 2, 5), None),
    ({"filter[rank][gt]": "2"}, A(3, 6), A(3, 6, 7)),
    ({"filter[rank][gte]": "10"}, A(6), None),
    ({"filter[rank][gt]": "-9223372036854775808"}, A(1, 2, 3, 5, 6), A(1, 2, 3, 5, 6, 7)),
    ({"filter[rank][exists]": "true"}, A(1, 2, 3, 5, 6), A(1, 2, 3, 5, 6, 7)),
    ({"filter[rank][exists]": "false"}, A(4), None),
    ({"filter[rank][gte]": "2", "filter[rank][lt]": "10"}, A(2, 3, 5), A(2, 3, 5, 7)),
    ({"filter[score][gt]": "0"}, A(1, 2), None),
    ({"filter[score][lt]": "0"}, A(3), None),
    ({"filter[score][eq]": "1.5"}, A(1), None),
    ({"filter[score][eq]": "2.50"}, A(2), None),
    ({"filter[score][gte]": "-1e0"}, A(1, 2, 3), None),
    ({"filter[flag][eq]": "true"}, A(1, 3), None),
    ({"filter[flag]": "false"}, A(2), None),
    ({"filter[flag][ne]": "true"}, A(2, 4, 5, 6), A(2, 4, 5, 6, 7)),
    ({"filter[flag][exists]": "false"}, A(4, 5, 6), A(4, 5, 6, 7)),
    ({"filter[flag][gt]": "false"}, A(1, 3), None),
    ({"filter[day][gte]": "2024-02-01"}, A(2, 3), None),
    ({"filter[day][lt]": "2024-02-01"}, A(1), None),
    ({"filter[day][in]": "2024-03-01,2024-01-01"}, A(1, 3), None),
    ({"filter[at][gt]": "2024-01-31T23:00:00-02:00"}, A(2, 3), None),
    ({"filter[at][eq]": "2024-01-01T11:00:00+01:00"}, A(1), None),
    ({"filter[at][lte]": "2024-02-01T10:00:00Z"}, A(1, 2), None),
    ({"filter[kind][eq]": "news"}, A(1, 3), None),
    ({"filter[kind][contains]": "LO"}, A(2, 5), None),
    ({"filter[kind][startswith]": "N"}, A(1, 3), None),
    ({"filter[kind][in]": "blog,zzz"}, A(2, 5), None),
    ({"filter[kind][gt]": "c"}, A(1, 3), None),
    ({"filter[body][contains]": "DOCKER"}, A(1, 3), None),
    ({"filter[body][eq]": "postgres tips 100%"}, A(2), None),
    ({"filter[rich][contains]": "**text"}, A(1), None),
    ({"filter[slug][startswith]": "second"}, A(2), None),
    ({"filter[slug][lte]": "hello-world"}, A(1), None),
    ({"filter[meta][exists]": "true"}, A(1), None),
    ({"filter[meta][exists]": "false"}, A(2, 3, 4, 5, 6), A(2, 3, 4, 5, 6, 7)),
    ({"filter[author][eq]": "a1"}, A(1, 3), None),
    ({"filter[author][ne]": "a1"}, A(2, 4, 5, 6), A(2, 4, 5, 6, 7)),
    ({"filter[author][in]": "a1,a2"}, A(1, 2, 3, 6), None),
    ({"filter[author][nin]": "a1,a2"}, A(4, 5), A(4, 5, 7)),
    ({"filter[author][exists]": "true"}, A(1, 2, 3, 5, 6), None),
    ({"filter[author][exists]": "false"}, A(4), A(4, 7)),
    ({"filter[tags][eq]": "t1"}, A(1, 2), None),
    ({"filter[tags][in]": "t2,tX"}, A(2), None),
    ({"filter[tags][in]": "t1,t2"}, A(1, 2), None),
    ({"filter[tags][ne]": "t1"}, A(3, 4, 5, 6), A(3, 4, 5, 6, 7)),
    ({"filter[tags][nin]": "t2,tX"}, A(1, 3, 4, 5, 6), A(1, 3, 4, 5, 6, 7)),
    ({"filter[tags][exists]": "true"}, A(1, 2), None),
    ({"filter[tags][exists]": "false"}, A(3, 4, 5, 6), A(3, 4, 5, 6, 7)),
    ({"filter[cover][eq]": "as1"}, A(1), None),
    ({"filter[cover][ne]": "as1"}, A(2, 3, 4, 5, 6), A(2, 3, 4, 5, 6, 7)),
    ({"filter[cover][exists]": "false"}, A(2, 3, 4, 5, 6), A(2, 3, 4, 5, 6, 7)),
    ({"filter[author.name][eq]": "Ada"}, A(1, 3), None),
    ({"filter[author.name][contains]": "lin"}, A(2, 6), None),
    ({"filter[author.name][ne]": "Ada"}, A(2, 6), A(2, 5, 6)),
    ({"filter[author.name][eq]": "Ghost"}, set(), A(5)),
    ({"filter[author.age][gt]": "40"}, A(2, 6), A(2, 5, 6)),
    ({"filter[author.age][exists]": "true"}, A(1, 2, 3, 6), A(1, 2, 3, 5, 6)),
    ({"filter[author.id][in]": "a1,a3"}, A(1, 3), A(1, 3, 5)),
    ({"filter[tags.label][eq]": "sql"}, A(2), None),
    ({"filter[tags.label][startswith]": "PY"}, A(1, 2), None),
    ({"filter[tags.label][ne]": "python"}, A(2), None),
    ({"filter[tags.label][in]": "sql,python"}, A(1, 2), None),
    ({"filter[id][eq]": "art1"}, A(1), None),
    ({"filter[id][ne]": "art1"}, A(2, 3, 4, 5, 6), A(2, 3, 4, 5, 6, 7)),
    ({"filter[id][in]": "art1,art3,zzz"}, A(1, 3), None),
    ({"filter[id][nin]": "art1,art3"}, A(2, 4, 5, 6), A(2, 4, 5, 6, 7)),
    ({"filter[published_at][gte]": "2024-01-03T00:00:00Z"}, A(3, 4, 5, 6), None),
    ({"filter[published_at][lt]": "2024-01-02T00:00:00+00:00"}, A(1), None),
    ({"filter[published_at][eq]": "2024-01-02T01:00:00+01:00"}, A(2), None),
    ({"filter[published_at][ne]": "2024-01-02T00:00:00Z"}, A(1, 3, 4, 5, 6), A(1, 3, 4, 5, 6, 7)),
    ({"filter[published_at][exists]": "false"}, set(), A(7)),
    ({"filter[published_at][exists]": "true"}, PUB, PUB),
    ({"filter[created_at][lt]": "2024-01-03T00:00:00Z"}, A(1, 2), None),
    ({"filter[updated_at][gt]": "2024-01-15T00:00:00Z"}, A(6), A(6, 7)),
    ({"filter[updated_at][lte]": "2024-01-12T00:00:00Z"}, A(1, 2), None),
    ({"filter[rank][gte]": "2", "filter[kind][eq]": "blog"}, A(2, 5), None),
    ({}, PUB, DRAFT),
]


@pytest.mark.parametrize("source", ["delivery", "draft"])
async def test_every_operator(db: asyncpg.Pool, source: str) -> None:
    async with db.acquire() as conn:
        await seed(conn)
        failures = []
        for params, delivery, draft in CASES:
            expected = delivery if source == "delivery" or draft is None else draft
            got, total = await ids(conn, params, source)
            if set(got) != expected or total != len(expected) or len(got) != len(set(got)):
                failures.append((params, sorted(expected), sorted(got), total))
        assert failures == []


@pytest.mark.parametrize("source", ["delivery", "draft"])
async def test_localized_values_fall_back(db: asyncpg.Pool, source: str) -> None:
    async with db.acquire() as conn:
        await seed(conn)
        assert (await ids(conn, {"filter[title][eq]": "Hallo Welt"}, source, locale="de"))[0] == ["art1"]
        assert (await ids(conn, {"filter[title][eq]": "Hello World"}, source, locale="de"))[0] == []
        assert (await ids(conn, {"filter[title][eq]": "Second post"}, source, locale="de"))[0] == ["art2"]
        assert (await ids(conn, {"filter[author.name][eq]": "Ada"}, source, locale="de"))[0] == ["art3", "art1"]


async def test_status(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await seed(conn)
        for status, expected in (("draft", ["art7"]), ("published", ["art5", "art4", "art3", "art2", "art1"]),
                                 ("changed", ["art6"])):
            got, total = await ids(conn, {"status": status}, "draft", allow_status=True)
            assert got == expected and total == len(expected)


@pytest.mark.parametrize(
    "sort, delivery, draft",
    [
        ("rank", [4, 1, 2, 5, 3, 6], [4, 1, 2, 5, 3, 7, 6]),
        ("-rank", [6, 3, 5, 2, 1, 4], [6, 7, 3, 5, 2, 1, 4]),
        ("kind,-rank", [6, 4, 5, 2, 3, 1], [6, 7, 4, 5, 2, 3, 1]),
        ("-kind,rank", [1, 3, 2, 5, 4, 6], [1, 3, 2, 5, 4, 7, 6]),
        ("flag,-score", [6, 5, 4, 2, 1, 3], [7, 6, 5, 4, 2, 1, 3]),
        (None, [6, 5, 4, 3, 2, 1], None),
        ("-published_at", [6, 5, 4, 3, 2, 1], [6, 5, 4, 3, 2, 1, 7]),
        ("published_at", [1, 2, 3, 4, 5, 6], [7, 1, 2, 3, 4, 5, 6]),
        ("-updated_at", [6, 5, 4, 3, 2, 1], [7, 6, 5, 4, 3, 2, 1]),
        ("created_at,id", [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7]),
        ("-id", [6, 5, 4, 3, 2, 1], [7, 6, 5, 4, 3, 2, 1]),
        ("day,-at", [6, 5, 4, 1, 2, 3], [7, 6, 5, 4, 1, 2, 3]),
    ],
)
@pytest.mark.parametrize("source", ["delivery", "draft"])
async def test_sort_and_pages(db: asyncpg.Pool, source: str, sort: str | None, delivery: list[int],
                              draft: list[int] | None) -> None:
    if sort is None and source == "draft":
        draft = [7, 6, 5, 4, 3, 2, 1]  # default for drafts is -updated_at
    expected = [f"art{n}" for n in (delivery if source == "delivery" else draft or delivery)]
    params = {} if sort is None else {"sort": sort}
    async with db.acquire() as conn:
        await seed(conn)
        assert (await ids(conn, params, source))[0] == expected
        for limits in ([1], [2], [3], [100], [1, 3, 2], [5, 1]):
            assert await all_pages(conn, params, source, limits) == expected, limits


@pytest.mark.parametrize("source", ["delivery", "draft"])
async def test_full_text_search(db: asyncpg.Pool, source: str) -> None:
    async with db.acquire() as conn:
        await seed(conn)
        assert await ids(conn, {"q": "docker"}, source) == (["art3", "art1"], 2)
        assert await all_pages(conn, {"q": "docker"}, source, [1]) == ["art3", "art1"]
        assert (await ids(conn, {"q": "docker", "sort": "rank"}, source))[0] == ["art1", "art3"]
        assert (await ids(conn, {"q": "docker -intro"}, source))[0] == ["art3"]
        hello, total = await ids(conn, {"q": "HELLO"}, source)
        assert set(hello) == (A(1, 5) if source == "delivery" else A(1, 5, 7)) and total == len(hello)
        assert await all_pages(conn, {"q": "hello"}, source, [1]) == hello
        hello_ranked = (await ids(conn, {"q": "hello", "filter[rank][gt]": "1"}, source))[0]
        assert set(hello_ranked) == (A(5) if source == "delivery" else A(5, 7))
        assert await ids(conn, {"q": "nothing-matches-this"}, source) == ([], 0)
        for evil in [*EVIL, "!!!", '"', "-", "a & b | !c", "<->"]:
            await ids(conn, {"q": evil}, source)


@pytest.mark.parametrize("source", ["delivery", "draft"])
async def test_injection_looking_values_match_nothing(db: asyncpg.Pool, source: str) -> None:
    async with db.acquire() as conn:
        await seed(conn)
        for value in EVIL:
            for name in ("filter[title][eq]", "filter[title][contains]", "filter[title][startswith]",
                         "filter[title][in]", "filter[kind][eq]", "filter[slug][eq]", "filter[author][eq]",
                         "filter[tags][in]", "filter[id][eq]", "filter[author.name][eq]", "filter[tags.label][in]"):
                got, total = await ids(conn, {name: value}, source)
                if value not in ("%", "_", "\\"):
                    assert (got, total) == ([], 0), (name, value)
        assert await conn.fetchval("SELECT count(*) FROM entries") == 12


@pytest.mark.parametrize("source", ["delivery", "draft"])
async def test_cursor_errors(db: asyncpg.Pool, source: str) -> None:
    async with db.acquire() as conn:
        await seed(conn)
        first = await fetch_page(conn, query({"sort": "rank", "limit": "2"}, source=source), source_for(source),
                                 id_column(source))
        assert first.next_cursor and first.total == (6 if source == "delivery" else 7)
        # the same cursor with another limit is fine
        page = await fetch_page(conn, query({"sort": "rank", "limit": "3", "cursor": first.next_cursor},
                                            source=source), source_for(source), id_column(source))
        assert [r["id"] for r in page.rows] == ["art2", "art5", "art3"]
        for other in ({"sort": "-rank"}, {"sort": "rank", "filter[rank][gt]": "0"}, {"sort": "rank", "q": "x"},
                      {"sort": "kind"}):
            with pytest.raises(ProblemError) as info:
                query({**other, "cursor": first.next_cursor}, source=source)
            assert info.value.status == 400 and info.value.errors[0]["parameter"] == "cursor"  # type: ignore[index]
        with pytest.raises(ProblemError):
            query({"sort": "rank", "cursor": first.next_cursor}, source=source, locale="de")
        # forged cursors with the right fingerprint but keys the database would choke on
        forged: list[tuple[dict[str, str], list[str]]] = [
            ({"sort": "rank"}, ["not json", "art1"]),
            ({"sort": "rank"}, ["1e999999", "art1"]),
            ({"sort": "rank"}, ['"\\u0000"', "art1"]),
            ({"sort": "-published_at"}, ["yesterday", "art1"]),
            ({"sort": "-published_at"}, ["2024-13-01T00:00:00.000000Z", "art1"]),
            ({"sort": "-published_at"}, ["2024-01-01 00:00:00+00", "art1"]),
            ({"q": "docker"}, ["abc", "art1"]),
            ({"q": "docker"}, ["nan", "art1"]),
            ({"q": "docker"}, ["1e99999", "art1"]),
            ({"sort": "id"}, ["x" * 2000]),
        ]
        for params, keys in forged:
            q = query(params, source=source)
            cursor = encode_cursor(query_fingerprint(q), keys)
            with pytest.raises(ProblemError) as info:
                await fetch_page(conn, query({**params, "cursor": cursor}, source=source), source_for(source),
                                 id_column(source))
            assert info.value.status == 400 and info.value.errors[0]["parameter"] == "cursor"  # type: ignore[index]
        # odd but well-formed keys simply position the page
        for params, keys in (({"sort": "rank"}, ['{"a": [1]}', "zzz"]), ({"sort": "rank"}, ['"x"', "'; --"]),
                             ({"sort": "-published_at"}, ["-infinity", "a"]), ({"q": "docker"}, ["0.05", "a"])):
            q = query({**params, "cursor": encode_cursor(query_fingerprint(query(params, source=source)), keys)},
                      source=source)
            await fetch_page(conn, q, source_for(source), id_column(source))


async def test_pages_stay_stable_while_rows_are_added(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await seed(conn)
        params = {"sort": "rank", "limit": "2"}
        one = await fetch_page(conn, query(params), DeliverySource(), "d.entry_id AS id")
        assert [r["id"] for r in one.rows] == ["art4", "art1"]
        await put(conn, ARTICLE, "art0", {"title": {"en": "new"}, "rank": 0}, published_at=T(9))
        await put(conn, ARTICLE, "art9", {"title": {"en": "new"}, "rank": 2}, published_at=T(9))
        two = await fetch_page(conn, query({**params, "cursor": one.next_cursor}), DeliverySource(),
                               "d.entry_id AS id")
        assert [r["id"] for r in two.rows] == ["art2", "art5"] and two.total == 8
        three = await fetch_page(conn, query({**params, "cursor": two.next_cursor}), DeliverySource(),
                                 "d.entry_id AS id")
        assert [r["id"] for r in three.rows] == ["art9", "art3"]


class Counting:
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.calls = 0

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        self.calls += 1
        return await self.conn.fetch(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self.calls += 1
        return await self.conn.fetchval(sql, *args)


async def test_one_statement_per_page_and_caller_columns(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await seed(conn)
        counting = Counting(conn)
        q = query({"filter[author.name][eq]": "Ada", "q": "docker", "limit": "1"})
        page = await fetch_page(counting, q, DeliverySource(), "d.entry_id, d.body, d.etag, d.vals")
        assert counting.calls == 1 and page.total == 2 and page.next_cursor  # the count rides along
        row = page.rows[0]
        assert row["entry_id"] == "art3" and row["etag"] == "x" and row["vals"]["rank"] == 3
        counting.calls = 0
        page = await fetch_page(counting, query({"status": "changed"}, source="draft", allow_status=True),
                                DraftSource(["en"]), "e.*")
        assert counting.calls == 1 and [r["id"] for r in page.rows] == ["art6"] and page.rows[0]["version"] == 2
        counting.calls = 0  # past the last page: no row carries the count, a second statement counts
        after_all = encode_cursor(query_fingerprint(query({"sort": "id"})), ["zzzz"])
        past = await fetch_page(counting, query({"sort": "id", "cursor": after_all}), DeliverySource(), "d.entry_id")
        assert counting.calls == 2 and past.rows == [] and past.total == 6 and past.next_cursor is None
        # a pool works as well as a connection
        assert (await fetch_page(db, query({}), DeliverySource(), "d.entry_id")).total == 6


async def test_index_ddl_is_used(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await seed(conn)
        ddl = index_ddl("article", "rank")
        await conn.execute(ddl)
        await conn.execute(ddl)  # IF NOT EXISTS
        assert await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE indexname = 'pd_idx_article_rank'") == 1
        from cms.app.query.sql import build_sql

        q = query({"sort": "rank", "filter[rank][gt]": "1"})
        page_sql, _, values, _ = build_sql(q, DeliverySource(), "d.entry_id")
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            await conn.execute("SET LOCAL enable_bitmapscan = off")
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {page_sql}", *values))
        assert "pd_idx_article_rank" in plan


# --- property: paging through == one unpaginated, Python-ordered list -----------------------------

ITEM = ContentType(
    id="item", name="Item", description=None, display_field=None,
    fields=[
        Field(id="a", type="integer"), Field(id="b", type="text"), Field(id="c", type="boolean"),
        Field(id="d", type="datetime"), Field(id="loc", type="text", localized=True),
    ],
)
ITEM_TYPES = {"item": ITEM}
STAMPS = [T(1), T(1) + timedelta(microseconds=1), T(2), T(2, 5)]
WORDS = ["a", "b", "B", "ab", "a-b", "a b", "é", "Z", ""]
ID_CHARS = "aAbB0_-"


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    entry_ids = draw(st.lists(st.text(ID_CHARS, min_size=1, max_size=3), min_size=3, max_size=18, unique=True))
    rows = []
    for entry_id in entry_ids:
        rows.append({
            "id": entry_id,
            "a": draw(st.none() | st.integers(-2, 2)),
            "b": draw(st.none() | st.sampled_from(WORDS)),
            "c": draw(st.none() | st.booleans()),
            "d": draw(st.none() | st.sampled_from(["2024-01-01T00:00:00.000Z", "2024-01-01T00:00:00.001Z",
                                                   "2023-12-31T23:59:59.999Z"])),
            "loc": draw(st.fixed_dictionaries({}, optional={"de": st.sampled_from(WORDS[:4]),
                                                            "en": st.sampled_from(WORDS[:4])})),
            "published_at": draw(st.none() | st.sampled_from(STAMPS)),
            "updated_at": draw(st.sampled_from(STAMPS)),
        })
    keys = draw(st.lists(st.sampled_from(["a", "b", "c", "d", "loc", "published_at", "updated_at", "id"]),
                         min_size=1, max_size=2, unique=True))
    sort = ",".join(("-" if draw(st.booleans()) else "") + k for k in keys)
    flt = draw(st.sampled_from([
        {}, {"filter[a][gt]": "0"}, {"filter[a][ne]": "1"}, {"filter[b][in]": "a,B,a b"}, {"filter[c][eq]": "true"},
        {"filter[d][exists]": "false"}, {"filter[b][contains]": "A"}, {"filter[loc][nin]": "a"},
        {"filter[a][lte]": "0", "filter[c][ne]": "false"},
    ]))
    limits = draw(st.lists(st.integers(1, 7), min_size=1, max_size=4))
    return {"rows": rows, "sort": sort, "filter": flt, "limits": limits}


def value_of(row: dict[str, Any], name: str, source: str) -> Any:
    if name == "loc":
        return row["loc"].get("de", row["loc"].get("en"))
    if name == "published_at" and source == "delivery":
        return row["published_at"] or T(1)
    return row[name]


def matches(row: dict[str, Any], flt: dict[str, str], source: str) -> bool:
    ok = True
    for name, text in flt.items():
        field, op = name[len("filter["):-1].split("][")
        v = value_of(row, field, source)
        if op == "gt":
            ok &= v is not None and v > int(text)
        elif op == "lte":
            ok &= v is not None and v <= int(text)
        elif op == "ne":
            want: Any = {"true": True, "false": False}.get(text, text)
            want = int(text) if field == "a" else want
            ok &= v != want
        elif op == "eq":
            ok &= v is True
        elif op == "in":
            ok &= v in text.split(",")
        elif op == "nin":
            ok &= v not in text.split(",")
        elif op == "exists":
            ok &= v is None
        elif op == "contains":
            ok &= v is not None and text.lower() in v.lower()
    return bool(ok)


async def run_scenario(url: str, scenario: dict[str, Any]) -> None:
    conn = await asyncpg.connect(url)  # no JSON codecs: the engine must not depend on them
    try:
        await conn.execute("DELETE FROM published_documents; DELETE FROM entries; DELETE FROM content_types")
        await install_types(conn, ITEM)
        rows = scenario["rows"]
        for row in rows:
            fields = {k: row[k] for k in ("a", "b", "c", "d") if row[k] is not None}
            fields["loc"] = row["loc"]
            await put(conn, ITEM, row["id"], fields, published_at=row["published_at"], updated_at=row["updated_at"])
        strings = sorted({s for row in rows for s in (row["id"], row["b"], row["d"], value_of(row, "loc", "x"))
                          if isinstance(s, str)})
        ordered = [r[0] for r in await conn.fetch("SELECT s FROM unnest($1::text[]) s ORDER BY s", strings)]
        collation = {s: i for i, s in enumerate(ordered)}

        keys = [(k.lstrip("-"), k.startswith("-")) for k in scenario["sort"].split(",")]
        if all(name != "id" for name, _ in keys):
            keys.append(("id", keys[-1][1]))

        for source in ("delivery", "draft"):
            def compare(x: dict[str, Any], y: dict[str, Any], source: str = source) -> int:
                for name, desc in keys:
                    vx, vy = value_of(x, name, source), value_of(y, name, source)
                    kx = (0,) if vx is None else (1, collation[vx] if isinstance(vx, str) else vx)
                    ky = (0,) if vy is None else (1, collation[vy] if isinstance(vy, str) else vy)
                    if kx != ky:
                        return (-1 if kx < ky else 1) * (-1 if desc else 1)
                return 0

            expected = [r["id"] for r in sorted((r for r in rows if matches(r, scenario["filter"], source)),
                                                key=functools.cmp_to_key(compare))]
            params = {**scenario["filter"], "sort": scenario["sort"]}
            got: list[str] = []
            cursor = None
            turn = 0
            while True:
                p = {**params, "limit": str(scenario["limits"][turn % len(scenario["limits"])])}
                if cursor:
                    p["cursor"] = cursor
                q = parse_list_query(p, ITEM, ITEM_TYPES, locale="de", default_sort="-updated_at")
                page: Page = await fetch_page(conn, q, source_for(source, "de"), id_column(source))
                assert page.total == len(expected), (source, page.total, expected)
                got.extend(r["id"] for r in page.rows)
                cursor = page.next_cursor
                turn += 1
                if cursor is None:
                    break
                assert turn <= len(rows) + 1
            assert got == expected, (source, scenario["sort"], scenario["filter"])
    finally:
        await conn.close()


def test_paging_property(database_url: str) -> None:
    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(scenarios())
    def check(scenario: dict[str, Any]) -> None:
        asyncio.run(run_scenario(database_url, scenario))

    check()


async def test_long_values_are_kept_apart_and_old_documents_still_match(db: asyncpg.Pool) -> None:
    """Migration 0015: long text, json, components and blocks live in `bulky`, so `vals` stays small;
    documents stored before (long values in `vals`, as `put` here stores them) match the same way."""
    from cms.app.render import render_entry

    rendered = render_entry({
        "id": "x", "published_data": {"title": {"en": "T"}, "body": {"_": "long"}, "meta": {"_": {"a": 1}},
                                      "rank": {"_": 3}},
        "published_version": 1, "created_at": T(1), "updated_at": T(1), "published_at": T(1),
    }, ARTICLE, "en", ["en"], {})
    assert rendered.vals == {"title": "T", "rank": 3} and rendered.bulky == {"body": "long", "meta": {"a": 1}}
    async with db.acquire() as conn:
        await seed(conn)
        cases = [{"filter[body][contains]": "docker"}, {"filter[meta][exists]": "true"}, {"filter[rank][gte]": "2"}]
        before = [await ids(conn, c, "delivery") for c in cases]
        assert before[0][1] == 2 and before[1][1] == 1
        await conn.execute(
            """UPDATE published_documents SET bulky = jsonb_strip_nulls(jsonb_build_object('body', vals->'body',
                      'rich', vals->'rich', 'meta', vals->'meta')), vals = vals - 'body' - 'rich' - 'meta'""")
        assert [await ids(conn, c, "delivery") for c in cases] == before
