"""Bounded work per delivery request: include, filters, in/nin values, sort keys, the query string,
the statement time limit. Each bound is tested at the bound and just past it, with small
configured bounds so the suite itself never builds a big answer."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import ARTICLE, AUTHOR, TAG, Apps

PAGE = {
    "name": "Page",
    "fields": [
        {"id": "title", "type": "text"},
        {"id": "body", "type": "long_text"},
        {"id": "rank", "type": "integer"},
        {"id": "related", "type": "reference", "to": ["page"], "list": True},
    ],
}


async def _self_listing(apps: Apps, links: int, body: str = "") -> str:
    """A published page whose `related` names itself `links` times (a careless editor's list)."""
    m = apps.management
    assert (await m.put("/v1/content-types/page", json=PAGE)).status_code == 201
    assert (await m.put("/v1/entries/page/loop", json={"fields": {"title": "Loop", "body": body}})).status_code == 201
    related = [{"id": "loop"}] * links
    assert (await m.patch("/v1/entries/page/loop", json={"fields": {"related": related}})).status_code == 200
    assert (await m.post("/v1/entries/page/loop/publish")).status_code == 200
    return "loop"


def _too_large(r: Any) -> None:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == "urn:cms:problem:include-too-large"
    assert problem["errors"][0]["parameter"] == "include"


async def test_include_expands_at_most_the_configured_number_of_entries(apps_with: Any) -> None:
    """5 self-links: depth 1 embeds 5 copies, depth 2 embeds 5 + 25 = 30. A bound of 30 allows
    depth 2; 29 refuses it before a byte is built. Every copy counts, not every distinct id."""
    async with apps_with(CMS_DELIVERY_MAX_INCLUDES="30") as apps:
        await _self_listing(apps, 5)
        d = await apps.reader()
        one = await d.get("/api/v1/entries/page/loop", params={"include": "related"})
        assert one.status_code == 200 and len(one.json()["data"]["fields"]["related"]) == 5
        two = await d.get("/api/v1/entries/page/loop", params={"include": "*", "depth": "2"})
        assert two.status_code == 200
        assert all(len(r["fields"]["related"]) == 5 for r in two.json()["data"]["fields"]["related"])
        three = await d.get("/api/v1/entries/page/loop", params={"include": "*", "depth": "3"})
        _too_large(three)  # 5 + 25 + 125
        # lists share one budget per answer; preview (drafts) has the same bound
        assert (await d.get("/api/v1/entries/page", params={"include": "*", "depth": "2"})).status_code == 200
        async with apps.client("delivery", await apps.key("preview")) as preview:
            assert (await preview.get("/preview/v1/entries/page/loop", params={"include": "*", "depth": "2"})).status_code == 200
            _too_large(await preview.get("/preview/v1/entries/page/loop", params={"include": "*", "depth": "3"}))
            _too_large(await preview.get("/preview/v1/entries/page", params={"include": "*", "depth": "3"}))
    async with apps_with(CMS_DELIVERY_MAX_INCLUDES="29") as apps:
        d = await apps.reader()
        _too_large(await d.get("/api/v1/entries/page/loop", params={"include": "*", "depth": "2"}))
        _too_large(await d.get("/api/v1/entries/page", params={"include": "*", "depth": "2"}))
        assert (await d.get("/api/v1/entries/page/loop", params={"include": "*"})).status_code == 200


async def test_a_list_at_depth_1_embeds_at_most_the_configured_number_of_entries(apps_with: Any) -> None:
    """The common list (includes brought with the page, spliced in one pass) counts every embedded
    copy against the bound: at the bound a 200, one past it the 400, before any bytes are built."""
    async with apps_with(CMS_DELIVERY_MAX_INCLUDES="3") as apps:
        m = apps.management
        for type_id, body in (("author", AUTHOR), ("tag", TAG), ("article", ARTICLE)):
            assert (await m.put(f"/v1/content-types/{type_id}", json=body)).status_code == 201
        author = (await m.post("/v1/entries/author", json={"fields": {"name": "Ada"}})).json()["data"]["id"]
        assert (await m.post(f"/v1/entries/author/{author}/publish")).status_code == 200
        for i in range(4):  # four entries linking the same author: four embedded copies
            r = await m.post("/v1/entries/article", json={"fields": {"title": f"P{i}", "author": {"id": author}}})
            assert (await m.post(f"/v1/entries/article/{r.json()['data']['id']}/publish")).status_code == 200
        d = await apps.reader()
        r = await d.get("/api/v1/entries/article?include=author&limit=3")
        assert r.status_code == 200 and [e["fields"]["author"]["fields"]["name"] for e in r.json()["data"]] == ["Ada"] * 3
        _too_large(await d.get("/api/v1/entries/article?include=author&limit=4"))


async def test_include_is_bounded_in_bytes_too(apps_with: Any) -> None:
    """A 1 MiB budget: 4 copies of a 200 KB entry fit, 6 do not."""
    async with apps_with(CMS_DELIVERY_MAX_INCLUDE_MB="1") as apps:
        await _self_listing(apps, 4, body="x" * 200_000)
        d = await apps.reader()
        assert (await d.get("/api/v1/entries/page/loop", params={"include": "related"})).status_code == 200
        related = [{"id": "loop"}] * 6
        assert (await apps.management.patch("/v1/entries/page/loop", json={"fields": {"related": related}})).status_code == 200
        assert (await apps.management.post("/v1/entries/page/loop/publish")).status_code == 200

        async def refused() -> Any:
            r = await d.get("/api/v1/entries/page/loop", params={"include": "related"})
            _too_large(r)
            assert "bytes" in r.json()["detail"]

        from tests.support import eventually

        await eventually(refused)


async def test_the_default_include_bound_stops_the_self_listing_entry_at_1000(apps: Apps) -> None:
    """The attack of the issue, scaled down: 40 self-links at depth 2 is 1,640 copies > 1,000."""
    await _self_listing(apps, 40)
    d = await apps.reader()
    _too_large(await d.get("/api/v1/entries/page/loop", params={"include": "*", "depth": "3"}))
    _too_large(await d.get("/api/v1/entries/page/loop", params={"include": "*", "depth": "2"}))
    assert (await d.get("/api/v1/entries/page/loop", params={"include": "*"})).status_code == 200


@pytest.mark.parametrize("prefix", ["/api/v1", "/preview/v1"])
async def test_filter_conditions_values_and_sort_keys_are_bounded(apps: Apps, prefix: str) -> None:
    m = apps.management
    assert (await m.put("/v1/content-types/page", json=PAGE)).status_code == 201
    key = await apps.key("preview") if prefix == "/preview/v1" else await apps.key("delivery")
    async with apps.client("delivery", key) as d:
        twenty = {f"filter[{field}][{op}]": "1" for field in ("rank",) for op in ("ne", "gt", "gte", "lt", "lte", "eq")}
        twenty |= {f"filter[title][{op}]": "x" for op in ("eq", "ne", "contains", "startswith", "gt", "gte", "lt", "lte")}
        twenty |= {f"filter[id][{op}]": "x" for op in ("eq", "ne", "in", "nin")}
        twenty |= {"filter[created_at][exists]": "true", "filter[updated_at][exists]": "true"}
        assert len(twenty) == 20
        assert (await d.get(f"{prefix}/entries/page", params=twenty)).status_code == 200
        r = await d.get(f"{prefix}/entries/page", params={**twenty, "filter[published_at][exists]": "true"})
        assert r.status_code == 400 and "at most 20 filter conditions" in r.json()["detail"]
        values = ",".join(str(i) for i in range(500))
        assert (await d.get(f"{prefix}/entries/page", params={"filter[rank][in]": values})).status_code == 200
        r = await d.get(f"{prefix}/entries/page", params={"filter[rank][in]": values + ",500"})
        assert r.status_code == 400 and r.json()["errors"][0]["parameter"] == "filter[rank][in]"
        sort5 = "rank,-title,id,created_at,updated_at"
        assert (await d.get(f"{prefix}/entries/page", params={"sort": sort5})).status_code == 200
        r = await d.get(f"{prefix}/entries/page", params={"sort": sort5 + ",published_at"})
        assert r.status_code == 400 and r.json()["errors"][0]["parameter"] == "sort"


async def test_a_huge_query_string_is_a_400_on_both_apps(apps: Apps) -> None:
    d = await apps.reader()
    for client, path in ((d, "/api/v1/entries/article"), (apps.management, "/v1/entries/article")):
        r = await client.get(path, params={"junk": "x" * (32 * 1024)})
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "urn:cms:problem:malformed" and r.headers["x-request-id"]


async def test_delivery_statements_have_their_own_time_limit(apps_with: Any) -> None:
    """Delivery reads give up long before the management pool's 30 s (CMS_DELIVERY_STATEMENT_TIMEOUT_MS)."""
    async with apps_with(CMS_DELIVERY_STATEMENT_TIMEOUT_MS="250") as apps:
        async with apps.delivery_app.state.read_pool.acquire() as conn:
            assert await conn.fetchval("SHOW statement_timeout") == "250ms"
        async with apps.management_app.state.pool.acquire() as conn:
            assert await conn.fetchval("SHOW statement_timeout") == "30s"
