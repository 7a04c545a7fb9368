"""Seed the benchmark dataset through the CMS management HTTP API.

  python bench/seed.py MANAGEMENT_URL MANAGEMENT_KEY DELIVERY_KEY_FILE

Content types `author` (name) and `article` (title, slug, body ~2 KB, author -> author);
50 authors (all published) and 1,000 articles with slugs article-0000 .. article-0999.
Every 20th article (i % 20 == 7) stays a draft; the other 950 are published, in slug order.
Titles and bodies are deterministic (the same generator idea as ../shared/peers/dataset.py).
Finally creates a delivery key (rate limit lifted so wrk never meets a 429) and writes its
secret to DELIVERY_KEY_FILE. Requests run with CONCURRENCY (default 8) in flight.

SEED_LANDING=N (default 0; run.sh sets 1000 when a landing row is wanted): also the content type
`landing` (title, slug from title, `body`: a blocks field with the block types hero {title, subtitle},
text {body long_text}, quote {text, by}, cta {label, target -> article}; issue 14) and N landing
pages `landing-0000` … with 20 blocks each (~5 KB of text; 3 cta blocks per page point at published
articles), published in slug order except every 20th (i % 20 == 7) as for the articles.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from typing import Any

import httpx

N_AUTHORS = 50
N_ARTICLES = 1000
N_LANDINGS = int(os.environ.get("SEED_LANDING", "0"))
LANDING_BLOCKS = 20
BODY_BYTES = 2048
CONCURRENCY = int(os.environ.get("CONCURRENCY", "8"))

WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea "
    "commodo consequat duis aute irure in reprehenderit voluptate velit esse cillum fugiat nulla pariatur "
    "excepteur sint occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim id est laborum "
    "event driven headless content delivery cache schema entry revision publish draft slug author"
).split()
FIRST = "Ada Alan Grace Linus Barbara Edsger Donald Margaret Ken Dennis".split()
LAST = "Lovelace Turing Hopper Torvalds Liskov Dijkstra Knuth Hamilton Thompson Ritchie".split()

AUTHOR_TYPE = {
    "name": "Author", "display_field": "name",
    "fields": [{"id": "name", "type": "text", "required": True}],
}
ARTICLE_TYPE = {
    "name": "Article", "display_field": "title",
    "fields": [
        {"id": "title", "type": "text", "required": True},
        {"id": "slug", "type": "slug", "from": "title", "unique": True},
        {"id": "body", "type": "long_text"},
        {"id": "author", "type": "reference", "to": ["author"]},
    ],
}
# Issue 14: a landing page as a blocks field (docs/api.md "Components and blocks").
LANDING_TYPE = {
    "name": "Landing page", "display_field": "title",
    "fields": [
        {"id": "title", "type": "text", "required": True},
        {"id": "slug", "type": "slug", "from": "title", "unique": True},
        {"id": "body", "type": "blocks", "blocks": {
            "hero": [{"id": "title", "type": "text", "required": True}, {"id": "subtitle", "type": "text"}],
            "text": [{"id": "body", "type": "long_text"}],
            "quote": [{"id": "text", "type": "text"}, {"id": "by", "type": "text"}],
            "cta": [{"id": "label", "type": "text"}, {"id": "target", "type": "reference", "to": ["article"]}],
        }},
    ],
}
# The block types of a page, in order: a hero, then text/quote/cta mixed (10 text, 6 quote, 3 cta).
LANDING_LAYOUT = ["hero", "text", "text", "quote", "cta", "text", "quote", "text", "text", "quote",
                  "cta", "text", "quote", "text", "text", "quote", "text", "cta", "quote", "text"]
assert len(LANDING_LAYOUT) == LANDING_BLOCKS


def _words(rnd: random.Random, nbytes: int) -> str:
    words: list[str] = []
    size = 0
    while size < nbytes:
        w = rnd.choice(WORDS)
        words.append(w)
        size += len(w) + 1
    return " ".join(words)[:nbytes].strip()


def landing_fields(rnd: random.Random, title: str, slug: str | None, targets: list[str]) -> dict[str, Any]:
    """A landing page's fields: 20 blocks, ~5 KB of text; the cta blocks point at `targets` (article ids)."""
    blocks: list[dict[str, Any]] = []
    ncta = 0
    for kind in LANDING_LAYOUT:
        if kind == "hero":
            f = {"title": _words(rnd, 48).capitalize(), "subtitle": _words(rnd, 140).capitalize()}
        elif kind == "text":
            f = {"body": _words(rnd, 360).capitalize() + "."}
        elif kind == "quote":
            f = {"text": _words(rnd, 160).capitalize() + ".", "by": f"{rnd.choice(FIRST)} {rnd.choice(LAST)}"}
        else:
            f = {"label": _words(rnd, 24).capitalize(),
                 "target": {"id": targets[ncta % len(targets)], "type": "article"}}
            ncta += 1
        blocks.append({"block": kind, "fields": f})
    out: dict[str, Any] = {"title": title, "body": blocks}
    if slug:
        out["slug"] = slug
    return out


def landings(article_ids: list[str]) -> list[dict[str, Any]]:
    """N_LANDINGS pages landing-0000 …; page i's 3 cta blocks point at 3 published articles."""
    rnd = random.Random(20261207)
    published = [a for i, a in enumerate(article_ids) if not is_draft(i)]
    pages = []
    for i in range(N_LANDINGS):
        title = f"{_words(rnd, 30).capitalize()} {i:04d}"
        targets = [published[(i * 3 + j) % len(published)] for j in range(3)]
        pages.append(landing_fields(rnd, title, f"landing-{i:04d}", targets))
    return pages


def is_draft(i: int) -> bool:
    return i % 20 == 7


def dataset() -> tuple[list[str], list[dict[str, Any]]]:
    rnd = random.Random(20240601)
    authors = [f"{FIRST[(i - 1) % 10]} {LAST[((i - 1) // 10 + i) % 10]} {i:02d}" for i in range(1, N_AUTHORS + 1)]
    articles = []
    for i in range(N_ARTICLES):
        words: list[str] = []
        size = 0
        while size < BODY_BYTES:
            w = rnd.choice(WORDS)
            words.append(w)
            size += len(w) + 1
        title = " ".join(rnd.choice(WORDS) for _ in range(5)).capitalize()
        articles.append({
            "title": f"{title} {i:04d}", "slug": f"article-{i:04d}",
            "body": " ".join(words)[:BODY_BYTES], "author_index": i % N_AUTHORS,
        })
    return authors, articles


class Api:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.sem = asyncio.Semaphore(CONCURRENCY)
        self.requests = 0

    async def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        async with self.sem:
            for attempt in range(5):
                r = await self.client.request(method, path, json=body)
                self.requests += 1
                if r.status_code in (429, 503) and attempt < 4:  # just in case: back off, retry
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                    continue
                break
        if r.status_code not in ok:
            raise SystemExit(f"seed: {method} {path} -> HTTP {r.status_code}: {r.text[:600]}")
        return r.json() if r.content else None


async def create_published(api: Api, type_id: str, fields: dict[str, Any], publish: bool) -> str:
    entry = (await api.call("POST", f"/v1/entries/{type_id}", {"fields": fields}))["data"]
    if publish:
        await api.call("POST", f"/v1/entries/{type_id}/{entry['id']}/publish")
    return str(entry["id"])


async def seed(base: str, key: str) -> str:
    """Seeds everything; returns the new delivery key's secret."""
    t0 = time.monotonic()
    authors, articles = dataset()
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base.rstrip("/"), headers=headers, timeout=60, limits=limits) as client:
        api = Api(client)
        await api.call("PUT", "/v1/content-types/author", AUTHOR_TYPE)
        await api.call("PUT", "/v1/content-types/article", ARTICLE_TYPE)
        author_ids = await asyncio.gather(*(create_published(api, "author", {"name": n}, True) for n in authors))

        async def article(i: int, a: dict[str, Any]) -> str:
            fields = {"title": a["title"], "slug": a["slug"], "body": a["body"],
                      "author": {"id": author_ids[a["author_index"]], "type": "author"}}
            return await create_published(api, "article", fields, not is_draft(i))

        # In slug order, CONCURRENCY at a time, so published_at roughly follows the slug number.
        article_ids = await asyncio.gather(*(article(i, a) for i, a in enumerate(articles)))

        published = (await api.call("GET", "/v1/entries/article?limit=1&status=published"))["meta"]["total"]
        drafts = (await api.call("GET", "/v1/entries/article?limit=1&status=draft"))["meta"]["total"]
        want_pub = sum(1 for i in range(N_ARTICLES) if not is_draft(i))
        if (published, drafts) != (want_pub, N_ARTICLES - want_pub):
            raise SystemExit(f"seed: expected {want_pub} published / {N_ARTICLES - want_pub} drafts, "
                             f"got {published} / {drafts}")

        if N_LANDINGS:
            await api.call("PUT", "/v1/content-types/landing", LANDING_TYPE)
            pages = landings(list(article_ids))
            await asyncio.gather(*(create_published(api, "landing", p, not is_draft(i)) for i, p in enumerate(pages)))
            lp = (await api.call("GET", "/v1/entries/landing?limit=1&status=published"))["meta"]["total"]
            want_lp = sum(1 for i in range(N_LANDINGS) if not is_draft(i))
            if lp != want_lp:
                raise SystemExit(f"seed: expected {want_lp} published landing pages, got {lp}")
            print(f"seeded {N_LANDINGS} landing pages of {LANDING_BLOCKS} blocks ({lp} published)", file=sys.stderr)

        key_doc = (await api.call("POST", "/v1/keys", {"name": "bench", "kind": "delivery",
                                                        "rate_limit": "999999999/1"}))["data"]
    print(f"seeded {len(authors)} authors, {N_ARTICLES} articles ({published} published, {drafts} drafts) "
          f"with {api.requests} requests in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return str(key_doc["secret"])


def main(base: str, key: str, key_file: str) -> None:
    secret = asyncio.run(seed(base, key))
    with open(key_file, "w") as out:
        out.write(secret + "\n")
    print(f"delivery key -> {key_file}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:4])
