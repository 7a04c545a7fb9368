"""GraphQL delivery (`/graphql`): the generated schema, queries against the REST answers, the
direct executor against graphql-core's, limits, persisted queries and the cache, preview, key
restrictions, errors, and the schema's hot swap."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import graphql as graphql_core
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cms.app.db.pool import QUERY_LOG
from cms.graphql import execution
from cms.graphql.executor import Executor, Unsupported
from cms.graphql.routes import PUBLISHED
from tests.support import Apps, eventually, open_apps

ARTICLE_QUERY = "{ articleCollection(limit: 20) { total nextCursor items { id title rank author { name } tags { label } } } }"


async def _gql(client: Any, query: str, variables: dict[str, Any] | None = None, path: str = "/graphql",
               **extra: Any) -> Any:
    r = await client.post(path, json={"query": query, "variables": variables or {}, **extra})
    assert r.status_code == 200, r.text
    return r.json()


async def _data(client: Any, query: str, variables: dict[str, Any] | None = None) -> Any:
    got = await _gql(client, query, variables)
    assert "errors" not in got, got
    return got["data"]


async def _publish(blog: Apps, type_id: str, fields: dict[str, Any]) -> str:
    m = blog.management
    r = await m.post(f"/v1/entries/{type_id}", json={"fields": fields})
    assert r.status_code == 201, r.text
    entry_id = r.json()["data"]["id"]
    assert (await m.post(f"/v1/entries/{type_id}/{entry_id}/publish")).status_code == 200
    return str(entry_id)


async def _library(blog: Apps) -> dict[str, Any]:
    """Two authors, two tags, 14 articles with varied titles, ranks, authors and tags (two without
    author or rank), one draft, one author unpublished after being linked."""
    ada = await _publish(blog, "author", {"name": "Ada"})
    grace = await _publish(blog, "author", {"name": "Grace"})
    python = await _publish(blog, "tag", {"label": "python"})
    sql = await _publish(blog, "tag", {"label": "sql"})
    words = ["Alpha", "beta", "Gamma", "delta", "alpha two", "Beta, too"]
    articles = []
    for i in range(14):
        fields: dict[str, Any] = {"title": f"{words[i % len(words)]} {i:02d}"}
        if i % 7 != 3:
            fields["rank"] = (i * 5) % 9 - 2
        if i % 5 != 4:
            fields["author"] = {"id": ada if i % 3 else grace}
        fields["tags"] = [{"id": t} for t in ([python, sql] if i % 4 == 0 else [python] if i % 2 else [])]
        articles.append(await _publish(blog, "article", fields))
    draft = (await blog.management.post("/v1/entries/article", json={"fields": {"title": "Draft only"}})).json()
    gone = await _publish(blog, "author", {"name": "Gone"})
    linked = await _publish(blog, "article", {"title": "Links a gone author", "author": {"id": gone}})
    assert (await blog.management.post(f"/v1/entries/author/{gone}/unpublish")).status_code == 200
    return {"ada": ada, "grace": grace, "python": python, "sql": sql, "articles": [*articles, linked],
            "draft": draft["data"]["id"], "gone": gone}


# --- the schema ------------------------------------------------------------------------------------


async def test_the_schema_follows_the_content_types(blog: Apps) -> None:
    m = blog.management
    every_type = {
        "name": "Showcase", "fields": [
            {"id": "title", "type": "text"}, {"id": "slug", "type": "slug", "from": "title"},
            {"id": "body", "type": "long_text"}, {"id": "rich", "type": "rich_text"},
            {"id": "rank", "type": "integer", "indexed": True}, {"id": "score", "type": "number"},
            {"id": "flag", "type": "boolean"}, {"id": "day", "type": "date"}, {"id": "at", "type": "datetime"},
            {"id": "kind", "type": "enum", "values": ["news", "blog"]}, {"id": "meta", "type": "json"},
            {"id": "author", "type": "reference", "to": ["author"]},
            {"id": "related", "type": "reference", "to": ["author", "tag"], "list": True},
            {"id": "cover", "type": "asset"}, {"id": "gallery", "type": "asset", "list": True},
        ],
    }
    assert (await m.put("/v1/content-types/show_case", json=every_type)).status_code == 201
    d = await blog.reader()
    r = await d.get("/graphql/schema.graphql")
    assert r.status_code == 200 and r.headers["etag"] and r.headers["content-type"].startswith("application/graphql")
    schema = graphql_core.build_schema(r.text)
    show = schema.get_type("ShowCase")
    assert isinstance(show, graphql_core.GraphQLObjectType)
    types = {name: str(field.type) for name, field in show.fields.items()}
    assert types == {
        "id": "ID!", "version": "Int!", "locale": "String!", "publishedAt": "DateTime!", "updatedAt": "DateTime!",
        "createdAt": "DateTime!", "title": "String", "slug": "String", "body": "String", "rich": "String",
        "rank": "Int", "score": "Float", "flag": "Boolean", "day": "Date", "at": "DateTime", "kind": "String",
        "meta": "JSON", "author": "Author", "related": "[ShowCaseRelated!]!", "cover": "Asset",
        "gallery": "[Asset!]!",
    }
    union = schema.get_type("ShowCaseRelated")
    assert isinstance(union, graphql_core.GraphQLUnionType) and {t.name for t in union.types} == {"Author", "Tag"}
    query = schema.query_type
    assert query is not None
    assert set(query.fields["showCase"].args) == {"id", "slug", "locale"}
    assert set(query.fields["showCaseCollection"].args) == {"where", "order", "limit", "cursor", "locale"}
    assert str(query.fields["showCaseCollection"].type) == "ShowCaseCollection!"
    order = schema.get_type("ShowCaseOrder")
    assert isinstance(order, graphql_core.GraphQLEnumType)
    assert {"publishedAt_DESC", "rank_ASC", "title_DESC", "day_ASC", "id_ASC"} <= set(order.values)
    assert "meta_ASC" not in order.values and "body_ASC" not in order.values  # not sortable
    where = schema.get_type("ShowCaseFilter")
    assert isinstance(where, graphql_core.GraphQLInputObjectType)
    assert {"AND", "OR", "id", "publishedAt", "title", "rank", "author", "related", "cover"} <= set(where.fields)
    assert str(where.fields["author"].type) == "AuthorReferenceFilter"
    # a client query made against the SDL alone validates against the live schema
    client_query = graphql_core.parse(
        "query Q($w: ShowCaseFilter) { showCaseCollection(where: $w, order: [rank_DESC]) "
        "{ total items { title related { __typename ... on Author { name } ... on Tag { label } } } } }"
    )
    assert graphql_core.validate(schema, client_query) == []
    assert (await _gql(d, graphql_core.print_ast(client_query)))["data"]["showCaseCollection"]["total"] == 0
    again = await d.get("/graphql/schema.graphql", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


# --- reading ---------------------------------------------------------------------------------------


async def test_entries_references_and_their_rules(blog: Apps) -> None:
    lib = await _library(blog)
    d = await blog.reader()
    data = await _data(d, ARTICLE_QUERY)
    page = data["articleCollection"]
    assert page["total"] == 15 and page["nextCursor"] is None and len(page["items"]) == 15
    by_id = {item["id"]: item for item in page["items"]}
    assert lib["draft"] not in by_id
    assert by_id[lib["articles"][-1]]["author"] is None  # unpublished reference: null
    assert by_id[lib["articles"][0]]["tags"] == [{"label": "python"}, {"label": "sql"}]
    assert by_id[lib["articles"][1]]["author"] == {"name": "Ada"}
    one = await _data(d, "query($id: ID) { article(id: $id) { id title version publishedAt locale } }",
                      {"id": lib["articles"][2]})
    assert one["article"]["title"] == "Gamma 02" and one["article"]["version"] == 1 and one["article"]["locale"] == "en"
    rest = (await d.get(f"/api/v1/entries/article/{lib['articles'][2]}")).json()["data"]
    assert one["article"]["publishedAt"] == rest["published_at"]
    slug = rest["fields"]["slug"]
    assert (await _data(d, f'{{ article(slug: "{slug}") {{ id }} }}'))["article"]["id"] == lib["articles"][2]
    assert (await _data(d, '{ article(slug: "no-such") { id } }'))["article"] is None
    assert (await _data(d, f'{{ article(id: "{lib["draft"]}") {{ id }} }}'))["article"] is None
    both = await _gql(d, f'{{ article(id: "{lib["draft"]}", slug: "x") {{ id }} }}')
    assert both["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT" and both["data"]["article"] is None
    version = await _data(d, "{ _schemaVersion }")
    assert len(version["_schemaVersion"]) == 16


_LEAF = st.one_of(
    st.tuples(st.just("title"), st.sampled_from(["eq", "ne", "contains", "startswith", "gt", "lte"]),
              st.sampled_from(["Alpha 00", "beta", "a", "Gamma", "alpha two 04", "Beta, too 05", "z"])),
    st.tuples(st.just("rank"), st.sampled_from(["eq", "ne", "lt", "gte", "exists", "in", "nin"]),
              st.sampled_from([-2, 0, 1, 3, 6])),
    st.tuples(st.just("author"), st.sampled_from(["eq", "ne", "exists", "in"]), st.sampled_from(["ada", "grace"])),
    st.tuples(st.just("author.name"), st.sampled_from(["eq", "startswith", "ne"]), st.sampled_from(["Ada", "Gr"])),
    st.tuples(st.just("tags"), st.sampled_from(["eq", "ne", "exists"]), st.just("python")),
)
_ORDERS = st.lists(st.sampled_from(["title", "-title", "rank", "-rank", "published_at", "-published_at", "id"]),
                   min_size=0, max_size=2, unique_by=lambda s: s.lstrip("-"))
_LIST_QUERY = ("query($w: ArticleFilter, $o: [ArticleOrder!], $l: Int, $c: String) { articleCollection("
               "where: $w, order: $o, limit: $l, cursor: $c) { total nextCursor items { id } } }")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(conditions=st.lists(_LEAF, max_size=3, unique_by=lambda c: (c[0], c[1])), order=_ORDERS, limit=st.integers(1, 6))
async def test_the_answers_are_the_rest_answers(
    blog: Apps, conditions: list[tuple[str, str, Any]], order: list[str], limit: int,
) -> None:
    """Property: random where/order/limit give the ids, order, total and cursors of the REST list,
    and following the cursors walks the whole set without gaps or repeats."""
    lib = getattr(blog, "library", None)
    if lib is None:  # one seed for all the examples
        lib = blog.library = await _library(blog)  # type: ignore[attr-defined]
    d = await blog.reader()
    where = _graphql_where(conditions, lib)
    graphql_order = [f"{'publishedAt' if o.lstrip('-') == 'published_at' else o.lstrip('-')}_"
                     f"{'DESC' if o.startswith('-') else 'ASC'}" for o in order]
    params = {**_rest_params(where), "limit": str(limit), **({"sort": ",".join(order)} if order else {})}
    cursor = None
    seen: list[str] = []
    for _ in range(20):
        got = await _data(d, _LIST_QUERY, {"w": where, "o": graphql_order or None, "l": limit, "c": cursor})
        page = got["articleCollection"]
        rest = await d.get("/api/v1/entries/article", params={**params, **({"cursor": cursor} if cursor else {})})
        assert rest.status_code == 200, (rest.text, params)
        body = rest.json()
        assert [i["id"] for i in page["items"]] == [e["id"] for e in body["data"]], (where, order)
        assert page["total"] == body["meta"]["total"] and page["nextCursor"] == body["meta"]["next_cursor"]
        seen += [i["id"] for i in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == page["total"]


def _graphql_where(conditions: list[tuple[str, str, Any]], lib: dict[str, Any]) -> dict[str, Any]:
    where: dict[str, Any] = {}
    names = {"startswith": "startsWith"}
    for path, op, value in conditions:
        name = names.get(op, op)
        if op == "exists":
            value = value not in (0, "grace")  # some true, some false
        elif path in ("author", "tags"):
            value = [lib[value]] if op in ("in", "nin") else lib[value]
        elif op in ("in", "nin"):
            value = [value, value + 1]
        if path == "author.name":
            where.setdefault("author", {}).setdefault("name", {})[name] = value
        elif path in ("author", "tags"):
            where.setdefault(path, {}).setdefault("id", {})[name] = value
        else:
            where.setdefault(path, {})[name] = value
    return where


def _rest_params(where: dict[str, Any]) -> dict[str, str]:
    params: dict[str, str] = {}
    for path, ops in where.items():
        if path in ("author", "tags"):
            for nested, nested_ops in ops.items():
                key = path if nested == "id" else f"{path}.{nested}"
                for op, value in nested_ops.items():
                    params[f"filter[{key}][{op.lower()}]"] = _rest_value(value)
        else:
            for op, value in ops.items():
                params[f"filter[{path}][{op.lower()}]"] = _rest_value(value)
    return params


def _rest_value(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(_rest_value(v).replace(",", "\\,") for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- the direct executor against graphql-core's ------------------------------------------------------

PARITY_QUERIES = [
    ARTICLE_QUERY,
    "{ a: articleCollection(limit: 3, order: [rank_DESC, title_ASC]) { items { t: title __typename author { __typename id name } } } "
    "  b: authorCollection { total items { name } } __typename _schemaVersion }",
    "query($skip: Boolean!, $n: Int) { articleCollection(limit: $n) { ...Page } } "
    "fragment Page on ArticleCollection { total items { id ... on Article { title @skip(if: $skip) rank @include(if: $skip) "
    "author { ...Who } } ...More } } fragment Who on Author { name id } fragment More on Article { tags { label id } }",
    "{ articleCollection(where: {OR: [{rank: {lt: 0}}, {author: {name: {eq: \"Grace\"}}}]}, limit: 50) "
    "{ total items { title author { name } } } }",
    "{ articleCollection(where: {AND: [{title: {contains: \"a\"}}, {OR: [{rank: {exists: false}}, {tags: {id: {exists: true}}}]}]}) "
    "{ total items { title rank tags { label } } } }",
    "{ nothing: article(id: \"nope\") { id } articleCollection(limit: 1) { nextCursor items { createdAt updatedAt version locale } } }",
]


@pytest.mark.parametrize("query", PARITY_QUERIES)
async def test_the_direct_executor_answers_what_graphql_core_answers(blog: Apps, query: str) -> None:
    await _library(blog)
    built = await blog.delivery_app.state.graphql.published.current()
    document = graphql_core.parse(query)
    assert graphql_core.validate(built.schema, document) == []
    variables = {"skip": True, "n": 4} if "$skip" in query else {}
    for skip in (True, False):
        variables = {**variables, "skip": skip} if "$skip" in query else variables
        fast = _context(blog, built)
        direct = await Executor(built.schema, document, None, variables, fast).run()
        core = _context(blog, built)
        expected = await graphql_core.execute(built.schema, document, context_value=core, variable_values=variables)
        assert expected.errors is None
        assert json.dumps(direct) == json.dumps(expected.data)  # the same keys in the same order
        assert fast.tags == core.tags


async def test_the_direct_executor_leaves_what_it_does_not_cover_to_graphql_core(blog: Apps) -> None:
    await _library(blog)
    built = await blog.delivery_app.state.graphql.published.current()
    for query in ("{ __schema { queryType { name } } }", '{ article(id: "a", slug: "b") { id } }',
                  "{ articleCollection(limit: 0) { total } }"):
        with pytest.raises(Unsupported):
            await Executor(built.schema, graphql_core.parse(query), None, {}, _context(blog, built)).run()


def _context(blog: Apps, built: Any, credential: Any = None) -> Any:
    from cms.app.credentials.schemas import ANONYMOUS

    state = blog.delivery_app.state
    return execution.new_context(built, state.types, credential or ANONYMOUS, state.read_pool, PUBLISHED)


async def test_statements_are_constant_in_page_size(blog: Apps) -> None:
    await _library(blog)
    d = await blog.reader()
    counts = []
    for limit in (2, 15):
        log: list[str] = []
        token = QUERY_LOG.set(log)
        try:
            await _data(d, f"{{ articleCollection(limit: {limit}) {{ items {{ title author {{ name }} tags {{ label }} }} }} "
                           f"authorCollection {{ items {{ name }} }} }}")
        finally:
            QUERY_LOG.reset(token)
        counts.append(len([s for s in log if "published_documents" in s]))
    # two pages (each one statement, its total along) and one batch for the references of the level
    assert counts == [3, 3], counts


# --- limits ------------------------------------------------------------------------------------------


async def test_limits_are_checked_before_anything_runs(blog: Apps) -> None:
    await _library(blog)
    d = await blog.reader()
    fragments = "".join(f"fragment F{i} on Author {{ ...F{i + 1} }} " for i in range(9)) + "fragment F9 on Author { name }"
    assert "errors" not in await _gql(d, "{ articleCollection { items { author { ...F0 } } } } " + fragments)
    got = await _gql(d, "{ " + " ".join(f"a{i}: __typename" for i in range(31)) + " }")
    assert got["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX", "aliases": 31} and "data" not in got
    assert "errors" not in await _gql(d, "{ " + " ".join(f"a{i}: __typename" for i in range(30)) + " }")
    # cost: collection 1 + items 1 + 100 × (title 1 + author 1 + name 1 + tags 1 + 10 × label 1)
    got = await _gql(d, "{ articleCollection(limit: 100) { items { title author { name } tags { label } } } }")
    assert got["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX", "cost": 2 + 100 * 14}
    listed = "query($n: Int) { articleCollection(limit: $n) { items { title tags { label } } } }"
    assert (await _gql(d, listed, {"n": 100}))["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX", "cost": 1202}
    assert "errors" not in await _gql(d, listed, {"n": 83})  # 2 + 83 × 12 = 998
    assert (await _gql(d, listed, {"n": 84}))["errors"][0]["extensions"]["cost"] == 1010
    got = await _gql(d, "{ " + "__typename " * 6000 + "}")
    assert got["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    big = await d.post("/graphql", content=json.dumps({"query": "{ __typename }", "pad": "x" * 110_000}),
                       headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and big.headers["content-type"].startswith("application/problem+json")


async def test_depth_counts_fields_through_fragments(blog: Apps) -> None:
    await _library(blog)
    d = await blog.reader()
    base = await blog.management.put("/v1/content-types/node", json={
        "name": "Node", "fields": [{"id": "label", "type": "text"}, {"id": "next", "type": "reference", "to": ["node"]}],
    })
    assert base.status_code == 201
    ten = "{ nodeCollection { items { " + "next { " * 7 + "label" + " }" * 7 + " } } }"  # 10 levels of fields
    assert "errors" not in await _gql(d, ten)
    eleven = "{ nodeCollection { items { " + "next { " * 8 + "label" + " }" * 8 + " } } }"
    got = await _gql(d, eleven)
    assert got["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX", "depth": 11}
    via = "{ nodeCollection { items { ...N } } } fragment N on Node { " + "next { " * 8 + "label" + " }" * 8 + " }"
    assert (await _gql(d, via))["errors"][0]["extensions"]["depth"] == 11


# --- persisted queries, GET and the cache ---------------------------------------------------------------


def _get_params(digest: str, variables: dict[str, Any] | None = None) -> dict[str, str]:
    params = {"extensions": json.dumps({"persistedQuery": {"version": 1, "sha256Hash": digest}})}
    if variables is not None:
        params["variables"] = json.dumps(variables)
    return params


async def test_persisted_queries_over_get_are_cached_and_purged_like_rest(blog: Apps) -> None:
    lib = await _library(blog)
    d = await blog.reader()
    query = "query($n: Int) { articleCollection(limit: $n) { total items { title author { name } } } }"
    digest = hashlib.sha256(query.encode()).hexdigest()
    miss = await d.get("/graphql", params=_get_params(digest, {"n": 2}))
    assert miss.status_code == 200 and miss.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    wrong = await _gql(d, query, {"n": 2}, extensions={"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}})
    assert wrong["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_HASH_MISMATCH"
    registered = await _gql(d, query, {"n": 2}, extensions={"persistedQuery": {"version": 1, "sha256Hash": digest}})
    assert registered["data"]["articleCollection"]["total"] == 15
    posted = await d.post("/graphql", json={"query": query})
    assert posted.headers["cache-control"] == "no-store" and "surrogate-key" not in posted.headers

    hit = await d.get("/graphql", params=_get_params(digest, {"n": 2}))
    assert hit.status_code == 200 and hit.json() == registered
    assert hit.headers["cache-control"] == blog.settings.cache_control and hit.headers["etag"]
    keys = set(hit.headers["surrogate-key"].split())
    first_two = {f"entry:{item['id']}" for item in (await _data(d, "{ articleCollection(limit: 2) { items { id } } }"))[
        "articleCollection"]["items"]}
    assert {"type:article", *first_two} <= keys and any(k.startswith("entry:") and k[6:] in (lib["ada"], lib["grace"])
                                                       for k in keys)
    assert hit.headers["cache-tag"] == ",".join(hit.headers["surrogate-key"].split())
    cache = blog.delivery_app.state.cache
    served = cache.fast_hits
    again = await d.get("/graphql", params=_get_params(digest, {"n": 2}), headers={"If-None-Match": hit.headers["etag"]})
    assert again.status_code == 304 and again.content == b"" and cache.fast_hits == served + 1  # before Litestar
    # a plain GET with the query text works too, and is another cache entry
    plain = await d.get("/graphql", params={"query": query, "variables": json.dumps({"n": 2})})
    assert plain.json() == registered

    # a publish purges it: the next GET shows the new entry
    fresh = await _publish(blog, "article", {"title": "Brand new"})

    async def purged() -> None:
        got = await d.get("/graphql", params=_get_params(digest, {"n": 2}))
        assert got.json()["data"]["articleCollection"]["items"][0]["title"] == "Brand new", got.text
        assert got.headers["etag"] != hit.headers["etag"]

    await eventually(purged, timeout=5)
    assert fresh


async def test_posts_are_answered_from_the_delivery_cache_and_purged_like_gets(blog: Apps) -> None:
    """A POST stays `no-store` for HTTP caches, but this process keeps its answer under the
    request's canonical JSON, purged by the same tags: a repeat runs no query."""
    await _library(blog)
    d = await blog.reader()
    query = "query($n: Int) { articleCollection(limit: $n) { items { title author { name } } } }"
    first = await d.post("/graphql", json={"query": query, "variables": {"n": 2}})
    assert first.headers["cache-control"] == "no-store" and "errors" not in first.json()
    cache = blog.delivery_app.state.cache
    hits = cache.hits
    for body in ({"query": query, "variables": {"n": 2}}, {"variables": {"n": 2}, "query": query}):
        again = await d.post("/graphql", json=body)
        assert again.content == first.content and again.headers["cache-control"] == "no-store"
    assert cache.hits == hits + 2
    other = await d.post("/graphql", json={"query": query, "variables": {"n": 3}})  # another entry
    assert len(other.json()["data"]["articleCollection"]["items"]) == 3
    limited = blog.client("delivery", await blog.key("delivery", content_types=["article"]))
    async with limited:  # another key scope, another entry: the author stays hidden for it
        scoped = (await limited.post("/graphql", json={"query": query, "variables": {"n": 2}})).json()
        assert scoped["data"]["articleCollection"]["items"][0]["author"] is None
    fresh = await _publish(blog, "article", {"title": "Posted fresh"})

    async def purged() -> None:
        got = (await d.post("/graphql", json={"query": query, "variables": {"n": 2}})).json()
        assert got["data"]["articleCollection"]["items"][0]["title"] == "Posted fresh", got

    await eventually(purged, timeout=5)
    assert fresh


async def test_a_second_process_finds_persisted_queries_in_redis(blog: Apps, database_url: str, services: Any,
                                                                  tmp_path: Any) -> None:
    await _library(blog)
    d = await blog.reader()
    query = "{ authorCollection { total } }"
    digest = hashlib.sha256(query.encode()).hexdigest()
    await _gql(d, query, extensions={"persistedQuery": {"version": 1, "sha256Hash": digest}})
    async with open_apps(database_url, services.redis_url, tmp_path / "other") as other:
        reader = other.client("delivery", blog.delivery_key)
        got = await reader.get("/graphql", params=_get_params(digest))
        assert got.json() == {"data": {"authorCollection": {"total": 2}}}


# --- preview, keys, errors ------------------------------------------------------------------------------------


async def test_preview_reads_drafts_and_is_never_cached(blog: Apps) -> None:
    lib = await _library(blog)
    preview = blog.client("delivery", await blog.key("preview"))
    query = '{ articleCollection(where: {title: {eq: "Draft only"}}) { total items { id title publishedAt } } }'
    r = await preview.post("/preview/graphql", json={"query": query})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert r.json()["data"]["articleCollection"] == {
        "total": 1, "items": [{"id": lib["draft"], "title": "Draft only", "publishedAt": None}],
    }
    got = await preview.get("/preview/graphql", params={"query": query})
    assert got.json() == r.json() and got.headers["cache-control"] == "no-store" and "etag" not in got.headers
    d = await blog.reader()
    assert (await _data(d, query))["articleCollection"]["total"] == 0
    refused = await d.post("/preview/graphql", json={"query": query})
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("application/problem+json")
    assert (await blog.client("delivery").post("/graphql", json={"query": query})).status_code == 401


async def test_a_key_limited_to_some_types_reads_only_those(blog: Apps) -> None:
    lib = await _library(blog)
    limited = blog.client("delivery", await blog.key("delivery", content_types=["article", "tag"]))
    got = await _gql(limited, f'{{ article(id: "{lib["articles"][1]}") {{ title author {{ name }} tags {{ label }} }} }}')
    assert "data" in got, got
    assert got["data"]["article"] == {"title": "beta 01", "author": None, "tags": [{"label": "python"}]}
    assert [e["extensions"]["code"] for e in got["errors"]] == ["FORBIDDEN"]
    assert got["errors"][0]["path"] == ["article", "author"] and got["errors"][0]["locations"]
    listed = await _gql(limited, "{ authorCollection { total } }")
    assert listed["data"] is None and listed["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # a GET answer is cached per key scope: the unrestricted key gets its own
    query = f'{{ article(id: "{lib["articles"][1]}") {{ author {{ name }} }} }}'
    limited_get = await limited.get("/graphql", params={"query": query})
    full_get = await (await blog.reader()).get("/graphql", params={"query": query})
    assert limited_get.json()["data"]["article"]["author"] is None
    assert full_get.json()["data"]["article"]["author"] == {"name": "Ada"}
    assert "surrogate-key" not in limited_get.headers  # an answer with errors is not cached


async def test_bad_requests_are_graphql_errors_never_5xx(blog: Apps) -> None:
    await _library(blog)
    d = await blog.reader()
    cases = [
        ({"query": "{ articleCollection { items { nope } } }"}, "GRAPHQL_VALIDATION_FAILED"),
        ({"query": "{ articleCollection { "}, "GRAPHQL_PARSE_FAILED"),
        ({"query": '{ articleCollection(where: {rank: {eq: 1.5}}) { total } }'}, "GRAPHQL_VALIDATION_FAILED"),
        ({"query": '{ articleCollection(where: {title: {gt: "a"}, publishedAt: {gt: "yesterday"}}) { total } }'},
         "BAD_USER_INPUT"),
        ({"query": '{ articleCollection(locale: "xx") { total } }'}, "BAD_USER_INPUT"),
        ({"query": "{ articleCollection(limit: 500) { total } }"}, "BAD_USER_INPUT"),
        ({"query": '{ articleCollection(cursor: "garbage") { total } }'}, "BAD_USER_INPUT"),
        ({"query": "query($n: Int!) { articleCollection(limit: $n) { total } }", "variables": {"n": "x"}},
         "BAD_USER_INPUT"),
        ({"query": "query($n: Int!) { articleCollection(limit: $n) { total } }"}, "BAD_USER_INPUT"),
        ({"query": "query A { __typename } query B { __typename }"}, "BAD_USER_INPUT"),
        ({"query": "query A { __typename }", "operationName": "Z"}, "BAD_USER_INPUT"),
        ({"query": "mutation { x }"}, "GRAPHQL_VALIDATION_FAILED"),
        ({"variables": {}}, "BAD_REQUEST"),
        ({"query": 5}, "BAD_REQUEST"),
        ({"query": "{ __typename }", "variables": [1]}, "BAD_REQUEST"),
        ({"query": "{ __typename }", "extensions": {"persistedQuery": {"sha256Hash": "abc"}}}, "BAD_USER_INPUT"),
    ]
    deep_or = {"OR": [{"OR": [{"OR": [{"OR": [{"OR": [{"OR": [{"OR": [{"rank": {"eq": 1}}]}]}]}]}]}]}]}
    cases.append(({"query": "query($w: ArticleFilter) { articleCollection(where: $w) { total } }",
                   "variables": {"w": deep_or}}, "BAD_USER_INPUT"))
    for nul in ({"title": {"contains": "a\x00b"}}, {"title": {"eq": "\x00"}}, {"tags": {"id": {"eq": "t\x00"}}}):
        cases.append(({"query": "query($w: ArticleFilter) { articleCollection(where: $w) { total } }",
                       "variables": {"w": nul}}, "BAD_USER_INPUT"))  # (PostgreSQL text holds no NUL)
    many = {"OR": [{"rank": {"eq": i}} for i in range(21)]}
    cases.append(({"query": "query($w: ArticleFilter) { articleCollection(where: $w) { total } }",
                   "variables": {"w": many}}, "BAD_USER_INPUT"))
    for body, code in cases:
        r = await d.post("/graphql", json=body)
        assert r.status_code == 200, (body, r.text)
        errors = r.json()["errors"]
        assert errors[0]["extensions"]["code"] == code, (body, errors)
        assert "Traceback" not in r.text
    for raw in (b"{not json", b"[1, 2]"):
        r = await d.post("/graphql", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and r.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    r = await d.get("/graphql", params={"query": "{ __typename }", "variables": "{oops"})
    assert r.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    r = await d.post("/graphql", content=b"{ __typename }", headers={"Content-Type": "application/graphql"})
    assert r.json() == {"data": {"__typename": "Query"}}
    assert (await _gql(d, "{ articleCollection(where: {OR: []}) { total } }"))["data"]["articleCollection"]["total"] == 0
    assert (await _gql(d, "{ articleCollection(where: {AND: []}) { total } }"))["data"]["articleCollection"]["total"] == 15


async def test_introspection_and_graphiql_can_be_switched_off(apps_with: Any) -> None:
    for flag, allowed in (("1", True), ("0", False)):
        async with apps_with(CMS_GRAPHQL_INTROSPECTION=flag) as apps:
            d = await apps.reader()
            got = await _gql(d, "{ __schema { queryType { name } } }")
            if allowed:
                assert got == {"data": {"__schema": {"queryType": {"name": "Query"}}}}
                # the standard introspection (GraphiQL, codegen tools) nests past depth 10: allowed
                full = await _gql(d, graphql_core.get_introspection_query(descriptions=True))
                client = graphql_core.build_client_schema(full["data"])
                assert client.query_type is not None and "_schemaVersion" in client.query_type.fields
                abuse = "{ __schema { types { " + "fields { type { " * 10 + "name" + " } }" * 10 + " } } }"
                got = await _gql(d, abuse)
                assert got["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX", "depth": 23}
            else:
                assert got["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
            page = await apps.delivery.get("/graphql", headers={"Accept": "text/html", "Authorization": ""})
            assert page.status_code == (200 if allowed else 404)
            if allowed:
                assert "graphiql" in page.text.lower() and page.headers["content-type"].startswith("text/html")


# --- hot swap -------------------------------------------------------------------------------------------------------


async def test_the_schema_follows_content_type_changes_in_every_process(blog: Apps, database_url: str, services: Any,
                                                                        tmp_path: Any) -> None:
    d = await blog.reader()
    before = (await _data(d, "{ _schemaVersion }"))["_schemaVersion"]
    old = await blog.delivery_app.state.graphql.published.current()
    async with open_apps(database_url, services.redis_url, tmp_path / "second") as second:
        other = second.client("delivery", blog.delivery_key)
        assert (await _data(other, "{ _schemaVersion }"))["_schemaVersion"] == before
        m = blog.management
        body = {"name": "Event", "fields": [{"id": "name", "type": "text"}]}
        assert (await m.put("/v1/content-types/event", json=body)).status_code == 201
        await _publish(blog, "event", {"name": "Launch"})
        ct = (await m.get("/v1/content-types/author")).json()["data"]
        ct["fields"].append({"id": "bio", "type": "long_text"})
        changed = await m.put("/v1/content-types/author", json={k: ct[k] for k in ("name", "fields")},
                              headers={"If-Match": f'"{ct["version"]}"'})
        assert changed.status_code == 200, changed.text

        for client in (d, other):
            async def swapped(client: Any = client) -> None:
                got = await _gql(client, "{ eventCollection { items { name } } authorCollection { items { bio } } _schemaVersion }")
                assert "errors" not in got, got
                assert got["data"]["eventCollection"]["items"] == [{"name": "Launch"}]
                assert got["data"]["_schemaVersion"] != before

            await eventually(swapped, timeout=2)
    # a request that started on the old schema finishes on it
    context = _context(blog, old)
    answer = await execution.run(execution.Request("{ _schemaVersion authorCollection { total } }"), old,
                                 blog.delivery_app.state.graphql.documents, blog.delivery_app.state.graphql.persisted,
                                 context)
    assert json.loads(answer.body)["data"]["_schemaVersion"] == before


async def test_references_resolved_per_answer_are_bounded_like_rest_includes(apps_with: Any) -> None:
    from tests.support import ARTICLE, AUTHOR, TAG

    for bound, refused in (("6", False), ("5", True)):
        async with apps_with(CMS_DELIVERY_MAX_INCLUDES=bound) as apps:
            for type_id, body in (("author", AUTHOR), ("tag", TAG), ("article", ARTICLE)):
                assert (await apps.management.put(f"/v1/content-types/{type_id}", json=body)).status_code in (200, 201)
            if bound == "6":  # one database for both rounds: seed once
                ada = await _publish(apps, "author", {"name": "Ada"})
                tag = await _publish(apps, "tag", {"label": "t"})
                for i in range(3):  # 3 × (author + 1 tag) = 6 references resolved
                    await _publish(apps, "article", {"title": f"A{i}", "author": {"id": ada}, "tags": [{"id": tag}]})
            d = await apps.reader()
            got = await _gql(d, "{ articleCollection { items { author { name } tags { label } } } }")
            if refused:
                assert got["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX" and "6" not in got["errors"][0]["message"]
                assert "more than 5 referenced entries" in got["errors"][0]["message"]
            else:
                assert "errors" not in got and len(got["data"]["articleCollection"]["items"]) == 3
            # the same through graphql-core's executor (an introspection field sends it there)
            got = await _gql(d, '{ __type(name: "Query") { name } articleCollection { items { author { name } tags { label } } } }')
            assert ("errors" in got) == refused, got
            if refused:
                assert {e["extensions"]["code"] for e in got["errors"]} == {"QUERY_TOO_COMPLEX"}
