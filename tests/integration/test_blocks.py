"""Typed components and blocks: schema, validation with pointers inside, required at publish,
references inside (include, publish checks, dependent re-render, type-restricted keys), delivery
REST, GraphQL, filters on a component's sub-field, schema changes inside, bulk, and a property-based
round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cms.storage.objects import LocalObjectStore
from tests.integration.test_pipeline import new_entry, settle
from tests.support import Hosts

PAGE = {
    "name": "Page",
    "fields": [
        {"id": "title", "type": "text", "required": True},
        {"id": "slug", "type": "slug", "from": "title"},
        {"id": "body", "type": "blocks", "validations": {"max": 30}, "blocks": {
            "hero": [{"id": "title", "type": "text", "required": True}, {"id": "subtitle", "type": "text"}],
            "quote": [{"id": "text", "type": "long_text", "required": True}, {"id": "by", "type": "text"}],
            "cta": [{"id": "label", "type": "text", "validations": {"max_length": 40}},
                    {"id": "target", "type": "reference", "to": ["page"]}],
            "divider": [],
        }},
    ],
}
ARTICLE = {
    "name": "Article",
    "fields": [
        {"id": "title", "type": "text", "required": True},
        {"id": "seo", "type": "component", "fields": [
            {"id": "title", "type": "text", "required": True, "validations": {"max_length": 70}},
            {"id": "description", "type": "text"},
            {"id": "noindex", "type": "boolean"},
        ]},
        {"id": "specs", "type": "component", "list": True, "validations": {"max": 10}, "fields": [
            {"id": "label", "type": "text", "required": True}, {"id": "value", "type": "integer"},
        ]},
        {"id": "related", "type": "component", "fields": [
            {"id": "pages", "type": "reference", "list": True, "to": ["page"]},
        ]},
    ],
}


@pytest.fixture
async def pages(apps: Any) -> Any:
    for type_id, body in (("page", PAGE), ("article", ARTICLE)):
        r = await apps.management.put(f"/v1/content-types/{type_id}", json=body)
        assert r.status_code == 201, r.text
    return apps


def _pointers(r: Any) -> list[str]:
    return sorted(e["pointer"] for e in r.json().get("errors", []))


async def test_schema_takes_components_and_blocks_and_refuses_what_cannot_be(pages: Any) -> None:
    m = pages.management
    saved = (await m.get("/v1/content-types/page")).json()["data"]
    body = next(f for f in saved["fields"] if f["id"] == "body")
    assert list(body["blocks"]) == ["hero", "quote", "cta", "divider"]
    assert body["blocks"]["cta"][1]["to"] == ["page"] and body["blocks"]["divider"] == []
    seo = next(f for f in (await m.get("/v1/content-types/article")).json()["data"]["fields"] if f["id"] == "seo")
    assert [f["id"] for f in seo["fields"]] == ["title", "description", "noindex"] and seo["list"] is False

    def nest(levels: int) -> dict[str, Any]:
        field: dict[str, Any] = {"id": "leaf", "type": "text"}
        for n in range(levels):
            field = {"id": f"c{n}", "type": "component", "fields": [field]}
        return field

    assert (await m.put("/v1/content-types/deep", json={"name": "D", "fields": [nest(3)]})).status_code == 201
    too_deep = await m.put("/v1/content-types/deeper", json={"name": "D", "fields": [nest(4)]})
    assert too_deep.status_code == 422 and _pointers(too_deep) == ["/fields/0/fields/0/fields/0/fields/0/type"]
    bad = await m.put("/v1/content-types/bad", json={"name": "B", "fields": [
        {"id": "seo", "type": "component", "fields": [
            {"id": "title", "type": "text", "localized": True}, {"id": "slug", "type": "slug"},
            {"id": "n", "type": "integer", "unique": True}, {"id": "desc", "type": "text"}, {"id": "desc", "type": "text"},
        ]},
        {"id": "body", "type": "blocks", "blocks": {"Bad-Name": [], "ok": [{"id": "x", "type": "nope"}]}},
        {"id": "empty", "type": "blocks", "blocks": {}},
        {"id": "text", "type": "text", "fields": []},
    ]})
    assert bad.status_code == 422
    assert _pointers(bad) == sorted([
        "/fields/0/fields/0/localized", "/fields/0/fields/1/type", "/fields/0/fields/2/unique",
        "/fields/0/fields/4/id", "/fields/1/blocks/Bad-Name", "/fields/1/blocks/ok/0/type", "/fields/2/blocks",
        "/fields/3/fields",
    ])


async def test_values_are_validated_with_pointers_inside(pages: Any) -> None:
    m = pages.management
    r = await m.post("/v1/entries/page", json={"fields": {"title": "Home", "body": [
        {"block": "hero", "fields": {"title": 5}},
        {"block": "banner", "fields": {}},
        {"block": "cta", "fields": {"label": "x" * 41, "target": {"id": "p1", "type": "article"}, "extra": 1}},
        {"block": "quote"},
        "not a block",
        {"block": "divider", "fields": {}, "colour": "red"},
    ]}})
    assert r.status_code == 422
    assert _pointers(r) == sorted([
        "/fields/body/0/fields/title", "/fields/body/1/block", "/fields/body/2/fields/label",
        "/fields/body/2/fields/target/type", "/fields/body/2/fields/extra", "/fields/body/4", "/fields/body/5/colour",
    ])
    r = await m.post("/v1/entries/article", json={"fields": {
        "title": "A", "seo": {"title": "t" * 71, "robots": "no"}, "specs": [{"label": "w", "value": 1}, {"value": "x"}],
    }})
    assert r.status_code == 422
    assert _pointers(r) == ["/fields/seo/robots", "/fields/seo/title", "/fields/specs/1/value"]
    too_many = await m.post("/v1/entries/page", json={"fields": {"title": "T", "body": [{"block": "divider"}] * 31}})
    assert too_many.status_code == 422 and _pointers(too_many) == ["/fields/body"]
    over_bound = await m.post("/v1/entries/article", json={"fields": {"title": "T", "specs": [{"label": "l"}] * 101}})
    assert over_bound.status_code == 422 and _pointers(over_bound) == ["/fields/specs"]


async def test_publish_checks_required_fields_and_references_inside(pages: Any) -> None:
    m = pages.management
    r = await m.post("/v1/entries/page", json={"fields": {"title": "Home", "body": [
        {"block": "divider"}, {"block": "hero", "fields": {"subtitle": "no title"}},
        {"block": "cta", "fields": {"label": "Go", "target": {"id": "nowhere"}}},
    ]}})
    assert r.status_code == 201, r.text
    page_id = r.json()["data"]["id"]
    refused = await m.post(f"/v1/entries/page/{page_id}/publish")
    assert refused.status_code == 422
    assert "/fields/body/1/fields/title" in _pointers(refused)
    fixed = await m.patch(f"/v1/entries/page/{page_id}", json={"fields": {"body": [
        {"block": "hero", "fields": {"title": "Welcome"}},
        {"block": "cta", "fields": {"label": "Go", "target": {"id": "nowhere"}}},
    ]}})
    assert fixed.status_code == 200, fixed.text
    missing_target = await m.post(f"/v1/entries/page/{page_id}/publish")
    assert missing_target.status_code == 422, missing_target.text
    assert "nowhere" in missing_target.text
    article = await m.post("/v1/entries/article", json={"fields": {"title": "A", "seo": {"description": "d"}}})
    article_id = article.json()["data"]["id"]
    refused = await m.post(f"/v1/entries/article/{article_id}/publish")
    assert refused.status_code == 422 and _pointers(refused) == ["/fields/seo/title"]
    # PATCH merges into a component (JSON merge patch: null clears a sub-field).
    merged = await m.patch(f"/v1/entries/article/{article_id}", json={"fields": {"seo": {"title": "T", "description": None}}})
    assert merged.status_code == 200 and merged.json()["data"]["fields"]["seo"] == {"title": "T"}
    assert (await m.post(f"/v1/entries/article/{article_id}/publish")).status_code == 200


async def test_delivery_renders_inline_and_includes_references_inside(pages: Any) -> None:
    about = await new_entry(pages, "page", {"title": "About"})
    home = await new_entry(pages, "page", {"title": "Home", "body": [
        {"block": "hero", "fields": {"title": "Welcome"}},
        {"block": "cta", "fields": {"label": "Read", "target": {"id": about}}},
        {"block": "divider"},
    ]})
    article = await new_entry(pages, "article", {
        "title": "A", "seo": {"title": "SEO A"}, "specs": [{"label": "w", "value": 3}],
        "related": {"pages": [{"id": about}, {"id": home}]},
    })
    reader = await pages.reader()
    plain = (await reader.get(f"/api/v1/entries/page/{home}")).json()["data"]["fields"]
    assert plain["body"] == [
        {"block": "hero", "fields": {"title": "Welcome", "subtitle": None}},
        {"block": "cta", "fields": {"label": "Read", "target": {"id": about, "type": "page"}}},
        {"block": "divider", "fields": {}},
    ]
    for include in ("body", "*"):
        for extra in ("", "&fields=body"):  # the byte-splicing path and the decoded one
            got = (await reader.get(f"/api/v1/entries/page/{home}?include={include}{extra}")).json()["data"]
            target = got["fields"]["body"][1]["fields"]["target"]
            assert target["id"] == about and target["fields"]["title"] == "About", (include, extra)
    listed = (await reader.get("/api/v1/entries/page?include=body&filter[title][eq]=Home")).json()["data"]
    assert listed[0]["fields"]["body"][1]["fields"]["target"]["fields"]["title"] == "About"
    deep = (await reader.get(f"/api/v1/entries/article/{article}?include=related&depth=2")).json()["data"]
    assert [p["fields"]["title"] for p in deep["fields"]["related"]["pages"]] == ["About", "Home"]
    assert deep["fields"]["related"]["pages"][1]["fields"]["body"][1]["fields"]["target"]["fields"]["title"] == "About"
    got = (await reader.get(f"/api/v1/entries/article/{article}")).json()["data"]["fields"]
    assert got["seo"] == {"title": "SEO A", "description": None, "noindex": None}
    assert got["specs"] == [{"label": "w", "value": 3}]
    # A component's sub-field filters; an unknown one is a 400.
    found = (await reader.get("/api/v1/entries/article?filter[seo.title][eq]=SEO A")).json()
    assert [e["id"] for e in found["data"]] == [article]
    assert (await reader.get("/api/v1/entries/article?filter[seo.title][eq]=nope")).json()["data"] == []
    assert (await reader.get("/api/v1/entries/article?filter[seo.nope][eq]=x")).status_code == 400
    assert (await reader.get("/api/v1/entries/article?filter[specs.label][eq]=w")).status_code == 400
    # Full-text search sees text inside blocks.
    searched = (await reader.get("/api/v1/entries/page?q=Welcome")).json()["data"]
    assert [e["id"] for e in searched] == [home]
    # The management API shows the stored form, empty blocks as [].
    m = (await pages.management.get(f"/v1/entries/page/{about}")).json()["data"]
    assert m["fields"]["body"] == []


async def test_a_type_restricted_key_sees_references_inside_blocks_as_links(pages: Any) -> None:
    m = pages.management
    r = await m.put("/v1/content-types/landing", json={"name": "Landing", "fields": [
        {"id": "title", "type": "text"},
        {"id": "body", "type": "blocks", "blocks": {"teaser": [{"id": "article", "type": "reference", "to": ["article"]}]}},
    ]})
    assert r.status_code == 201, r.text
    article = await new_entry(pages, "article", {"title": "Secret", "seo": {"title": "s"}})
    landing = await new_entry(pages, "landing", {"title": "L", "body": [{"block": "teaser", "fields": {"article": {"id": article}}}]})
    limited = pages.client("delivery", await pages.key("delivery", content_types=["landing"]))
    async with limited:
        got = (await limited.get(f"/api/v1/entries/landing/{landing}?include=*")).json()["data"]
        assert got["fields"]["body"][0]["fields"]["article"] == {"id": article, "type": "article"}
    full = (await (await pages.reader()).get(f"/api/v1/entries/landing/{landing}?include=*")).json()["data"]
    assert full["fields"]["body"][0]["fields"]["article"]["fields"]["title"] == "Secret"


async def test_graphql_gives_components_object_types_and_blocks_unions(pages: Any) -> None:
    about = await new_entry(pages, "page", {"title": "About"})
    home = await new_entry(pages, "page", {"title": "Home", "body": [
        {"block": "hero", "fields": {"title": "Welcome", "subtitle": "hi"}},
        {"block": "cta", "fields": {"label": "Read", "target": {"id": about}}},
        {"block": "divider"},
    ]})
    await new_entry(pages, "article", {"title": "A", "seo": {"title": "SEO A", "noindex": True},
                                       "specs": [{"label": "w", "value": 3}], "related": {"pages": [{"id": home}]}})
    reader = await pages.reader()
    query = """query Home($id: ID!) { page(id: $id) { title body { __typename
        ... on PageBodyHero { title subtitle }
        ... on PageBodyCta { label target { title } } } } }"""
    r = await reader.post("/graphql", json={"query": query, "variables": {"id": home}})
    assert r.status_code == 200 and "errors" not in r.json(), r.text
    assert r.json()["data"]["page"]["body"] == [
        {"__typename": "PageBodyHero", "title": "Welcome", "subtitle": "hi"},
        {"__typename": "PageBodyCta", "label": "Read", "target": {"title": "About"}},
        {"__typename": "PageBodyDivider"},
    ]
    query = """{ articleCollection(where: {seo: {title: {eq: "SEO A"}}}) { items {
        seo { __typename title noindex } specs { label value } related { pages { title } } } } }"""
    r = await reader.post("/graphql", json={"query": query})
    assert r.status_code == 200 and "errors" not in r.json(), r.text
    assert r.json()["data"]["articleCollection"]["items"] == [{
        "seo": {"__typename": "ArticleSeo", "title": "SEO A", "noindex": True},
        "specs": [{"label": "w", "value": 3}], "related": {"pages": [{"title": "Home"}]},
    }]


async def test_schema_changes_inside_components_and_blocks(pages: Any) -> None:
    m = pages.management
    home = await new_entry(pages, "page", {"title": "Home", "body": [
        {"block": "hero", "fields": {"title": "Welcome", "subtitle": "sub"}},
        {"block": "quote", "fields": {"text": "To be", "by": "W"}},
        {"block": "divider"},
    ]})
    reader = await pages.reader()
    # A sub-field's type that existing values break: 409, nothing changed.
    changed = json.loads(json.dumps(PAGE))
    changed["fields"][2]["blocks"]["hero"][1] = {"id": "subtitle", "type": "integer"}
    blocked = await m.put("/v1/content-types/page", json=changed)
    assert blocked.status_code == 409 and blocked.json()["blocking_entries"] == 1
    # Removing a block type and a sub-field drops those values, published ones re-rendered.
    changed = json.loads(json.dumps(PAGE))
    del changed["fields"][2]["blocks"]["quote"]
    changed["fields"][2]["blocks"]["hero"] = [{"id": "title", "type": "text", "required": True}]
    changed["fields"][2]["blocks"]["gallery"] = [{"id": "caption", "type": "text"}]
    assert (await m.put("/v1/content-types/page", json=changed)).status_code == 200
    stored = (await m.get(f"/v1/entries/page/{home}")).json()["data"]["fields"]["body"]
    assert stored == [{"block": "hero", "fields": {"title": "Welcome"}}, {"block": "divider", "fields": {}}]
    delivered = (await reader.get(f"/api/v1/entries/page/{home}")).json()["data"]["fields"]["body"]
    assert delivered == [{"block": "hero", "fields": {"title": "Welcome"}}, {"block": "divider", "fields": {}}]
    # Restoring the first version keeps what the schema still has: the quote block is gone.
    r = await m.post(f"/v1/entries/page/{home}/versions/1/restore")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["fields"]["body"] == [
        {"block": "hero", "fields": {"title": "Welcome"}}, {"block": "divider", "fields": {}}]
    # A new block type is usable at once.
    r = await m.patch(f"/v1/entries/page/{home}", json={"fields": {"body": [{"block": "gallery", "fields": {"caption": "c"}}]}})
    assert r.status_code == 200, r.text
    # An added sub-field shows as null in delivery after the re-render.
    article = await new_entry(pages, "article", {"title": "A", "seo": {"title": "t"}})
    grown = json.loads(json.dumps(ARTICLE))
    grown["fields"][1]["fields"].append({"id": "canonical", "type": "text"})
    assert (await m.put("/v1/content-types/article", json=grown)).status_code == 200
    seo = (await reader.get(f"/api/v1/entries/article/{article}")).json()["data"]["fields"]["seo"]
    assert seo == {"title": "t", "description": None, "noindex": None, "canonical": None}


async def test_bulk_of_500_pages_with_blocks(pages: Any) -> None:
    # 500 pages, each pointing at the next from inside a block, then their 500 publishes.
    actions = [{"op": "upsert", "type": "page", "id": f"bulk-{n}", "fields": {"title": f"Page {n}", "body": [
        {"block": "hero", "fields": {"title": f"Hero {n}"}},
        {"block": "cta", "fields": {"label": "Next", "target": {"id": f"bulk-{(n + 1) % 500}"}}},
    ]}} for n in range(500)]
    actions += [{"op": "publish", "type": "page", "id": f"bulk-{n}"} for n in range(500)]
    r = await pages.management.post("/v1/bulk", json={"atomic": True, "actions": actions})
    assert r.status_code == 200, r.text[:500]
    assert all(result["status"] in (200, 201) for result in r.json()["data"]["results"])
    reader = await pages.reader()
    got = (await reader.get("/api/v1/entries/page/bulk-7?include=body")).json()["data"]
    assert got["fields"]["body"][1]["fields"]["target"]["fields"]["body"][0]["fields"]["title"] == "Hero 8"
    bad = [{"op": "upsert", "type": "page", "id": "bad", "fields": {"title": "x", "body": [{"block": "hero", "fields": {"title": 1}}]}}]
    r = await pages.management.post("/v1/bulk", json={"atomic": True, "actions": bad})
    assert r.status_code == 422 and _pointers(r) == ["/actions/0/fields/body/0/fields/title"]


async def test_a_referenced_page_change_rerenders_the_page_files(pages: Any, hosts: Hosts) -> None:
    await pages.management.put("/v1/locales/de", json={"name": "Deutsch", "fallback": "en"})
    store = LocalObjectStore(pages.settings.objects_dir)
    await hosts.start()
    about = await new_entry(pages, "page", {"title": "About"})
    home = await new_entry(pages, "page", {"title": "Home", "body": [
        {"block": "cta", "fields": {"label": "Read", "target": {"id": about}}},
    ]})
    await settle(pages.database_url)
    first = json.loads(store.get(f"entries/page/en/{home}.json").body)
    assert first["data"]["fields"]["body"][0]["fields"]["target"]["fields"]["title"] == "About"
    r = await pages.management.patch(f"/v1/entries/page/{about}", json={"fields": {"title": "About us"}})
    assert r.status_code == 200
    await pages.management.post(f"/v1/entries/page/{about}/publish")
    await settle(pages.database_url)
    stored = store.get(f"entries/page/en/{home}.json")
    expected = await (await pages.reader()).get(f"/api/v1/entries/page/{home}?include=*")
    assert stored.body == expected.content
    assert json.loads(stored.body)["data"]["fields"]["body"][0]["fields"]["target"]["fields"]["title"] == "About us"


# --- property: any valid block list survives write → publish → delivery unchanged ------------------

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
_hero = st.fixed_dictionaries({"title": _text.filter(bool)}, optional={"subtitle": _text})
_quote = st.fixed_dictionaries({"text": _text.filter(bool)}, optional={"by": _text})
_cta = st.fixed_dictionaries({}, optional={"label": st.text(max_size=40).filter(lambda s: "\x00" not in s)})
_block = st.one_of(
    st.builds(lambda f: {"block": "hero", "fields": f}, _hero),
    st.builds(lambda f: {"block": "quote", "fields": f}, _quote),
    st.builds(lambda f: {"block": "cta", "fields": f}, _cta),
    st.just({"block": "divider", "fields": {}}),
)
_FILL = {"hero": ("title", "subtitle"), "quote": ("text", "by"), "cta": ("label", "target"), "divider": ()}


def _as_delivered(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Delivery shows every sub-field of a block (null without a value); empty text is no value."""
    return [{"block": b["block"], "fields": {k: b["fields"].get(k) or None for k in _FILL[b["block"]]}}
            for b in blocks]


async def test_random_block_lists_round_trip(pages: Any) -> None:
    reader = await pages.reader()
    m = pages.management
    cases: list[list[dict[str, Any]]] = []

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(_block, max_size=12))
    def collect(blocks: list[dict[str, Any]]) -> None:
        cases.append(blocks)

    collect()
    assert len(cases) >= 10
    for n, blocks in enumerate(cases):
        entry = f"prop-{n}"
        r = await m.put(f"/v1/entries/page/{entry}", json={"fields": {"title": f"P{n}", "body": blocks}})
        assert r.status_code == 201, r.text
        assert (await m.post(f"/v1/entries/page/{entry}/publish")).status_code == 200
        got = (await reader.get(f"/api/v1/entries/page/{entry}")).json()["data"]["fields"]["body"]
        assert got == _as_delivered(blocks), blocks


async def test_what_one_value_can_make_the_server_build_is_bounded(pages: Any) -> None:
    m = pages.management
    # Three nested lists multiply: 100 × 100 × 10 objects of 20 fields would render to ~80 MB.
    leaf = [{"id": f"t{i:028d}", "type": "text"} for i in range(20)]
    nested = {"id": "a", "type": "component", "list": True, "fields": [
        {"id": "b", "type": "component", "list": True, "fields": [
            {"id": "c", "type": "component", "list": True, "fields": leaf}]}]}
    assert (await m.put("/v1/content-types/nest", json={"name": "N", "fields": [nested]})).status_code == 201
    huge = [{"b": [{"c": [{}] * 10}] * 100}] * 100
    r = await m.post("/v1/entries/nest", json={"fields": {"a": huge}})
    assert r.status_code == 422 and _pointers(r) == ["/fields/a"] and "too large" in r.text
    fine = [{"b": [{"c": [{}] * 3}] * 5}] * 5
    assert (await m.post("/v1/entries/nest", json={"fields": {"a": fine}})).status_code == 201
    # Raw bulk input of the wrong shape is a 422, not a crash, wherever links are looked for.
    for block in (["x"], {"a": 1}, 5):
        r = await m.post("/v1/bulk", json={"atomic": True, "actions": [
            {"op": "upsert", "type": "page", "id": "odd", "fields": {"title": "t", "body": [{"block": block}]}}]})
        assert r.status_code == 422 and _pointers(r) == ["/actions/0/fields/body/0/block"], r.text
    # GraphQL: filtering a component with nothing to filter (only `_empty`) is no 500.
    r = await m.put("/v1/content-types/holder", json={"name": "H", "fields": [
        {"id": "meta", "type": "component", "fields": [{"id": "inner", "type": "component", "fields": [
            {"id": "x", "type": "text"}]}]}]})
    assert r.status_code == 201, r.text
    reader = await pages.reader()
    r = await reader.post("/graphql", json={"query": "{ holderCollection(where: {meta: {_empty: true}}) { total } }"})
    assert r.status_code == 200 and r.json()["data"]["holderCollection"]["total"] == 0, r.text


async def test_graphql_name_collisions_are_refused_when_the_schema_is_saved(pages: Any) -> None:
    m = pages.management
    # `article` has a component `seo`: GraphQL calls it ArticleSeo, as it would a type `article_seo`.
    r = await m.put("/v1/content-types/article_seo", json={"name": "X", "fields": []})
    assert r.status_code == 422 and "ArticleSeo" in r.text
    r = await m.put("/v1/content-types/two", json={"name": "T", "fields": [
        {"id": "body", "type": "blocks", "blocks": {"call_to": [], "callTo": []}}]})
    assert r.status_code == 422 and "TwoBodyCallTo" in r.text
    assert (await m.get("/v1/content-types/two")).status_code == 404
    reader = await pages.reader()
    assert (await reader.post("/graphql", json={"query": "{ __typename }"})).status_code == 200
