"""Delivery documents: the bytes of one entry or one list, published or draft.

The delivery routes, the prerendered files on S3 and anything else that must match them call
these functions; render.py does the per-entry encoding.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import render
from ..config import Settings
from ..entries import repository as entries_repo
from ..problems import ProblemError
from ..publishing import repository as repo
from ..publishing.documents import assets_by_id
from ..query import sql
from ..query.parse import ListQuery
from ..query.sources import DeliverySource, DraftSource
from ..schema.model import (
    NON_LOCALIZED,
    ContentType,
    Locales,
)

log = logging.getLogger("cms.delivery")

# A fetch of referenced entries: id -> (its ENTRY document, the size of its stored bytes).
Fetch = Callable[[list[str]], Awaitable[dict[str, tuple[dict[str, Any], int]]]]


class Body(NamedTuple):
    body: bytes
    etag: str
    tags: tuple[str, ...]
    version: int | None = None  # one entry's answer: the render_seq of its stored document

@dataclass(frozen=True)
class IncludeLimit:
    """How much `include` may embed in one response: entries (each copy in the output counts, so
    an entry linked 50 times counts 50 times, and so do its own includes) and their stored bytes."""

    entries: int = 1000
    bytes: int = 32 * 1024 * 1024

    @classmethod
    def of(cls, settings: Settings) -> IncludeLimit:
        return cls(settings.max_include_entries, settings.max_include_mb * 1024 * 1024)


class _Budget:
    """What one response has embedded so far."""

    def __init__(self, limit: IncludeLimit) -> None:
        self.limit = limit
        self.entries = 0
        self.bytes = 0

    @property
    def exceeded(self) -> bool:
        return self.entries > self.limit.entries or self.bytes > self.limit.bytes

    def problem(self) -> ProblemError:
        what = (
            f"more than {self.limit.entries} embedded entries" if self.entries > self.limit.entries
            else f"more than {self.limit.bytes} bytes of embedded entries"
        )
        detail = f"this include would embed {what}; include fewer fields or a lower depth"
        return ProblemError(400, "include-too-large", detail, errors=[{"parameter": "include", "detail": detail}])


def _fetch_published(conn: Any, locale: str, types: dict[str, ContentType]) -> Fetch:
    """Published documents by id, of the `types` given only: a reference to any other type (one a
    credential may not read) is not found, so it stays a link `{id, type}`."""
    async def fetch(ids: list[str]) -> dict[str, tuple[dict[str, Any], int]]:
        rows = await repo.documents_for(conn, ids, locale)
        return {r["entry_id"]: (render.decode(r["body"]), len(r["body"])) for r in rows if r["type"] in types}

    return fetch


def _fetch_drafts(conn: Any, types: dict[str, ContentType], locales: Locales, locale: str, assets_url: str) -> Fetch:
    async def fetch(ids: list[str]) -> dict[str, tuple[dict[str, Any], int]]:
        rows = [row for row in await entries_repo.get_entries(conn, ids) if row["type"] in types]
        # Every asset the drafts link to, in one query (not one per draft).
        asset_ids = {a for row in rows for a in render.asset_ids(types[row["type"]], row["data"])}
        assets = await assets_by_id(conn, asset_ids, assets_url)
        found = {}
        for row in rows:
            body = render.render_entry(row, types[row["type"]], locale, locales.chain(locale), assets, draft=True).body
            found[row["id"]] = (render.decode(body), len(body))
        return found

    return fetch


async def expand(
    documents: list[dict[str, Any]], ct: ContentType, types: dict[str, ContentType], include: list[str],
    depth: int, fetch: Fetch, limit: IncludeLimit,
) -> set[str]:
    """Resolve the references of one response's documents inline, one batched fetch per level;
    returns the ids included. 400 `include-too-large` past `limit`, found before any bytes are built."""
    budget = _Budget(limit)
    included: set[str] = set()
    for ids in await expand_each([(d, ct, budget) for d in documents], types, include, depth, fetch):
        included |= ids
    if budget.exceeded:
        raise budget.problem()
    return included


Root = tuple[dict[str, Any], ContentType, _Budget]


async def expand_each(
    roots: list[Root], types: dict[str, ContentType], include: list[str], depth: int, fetch: Fetch,
) -> list[set[str]]:
    """`expand` for documents of any types at once, each charged to its response's budget (roots of
    one response share one); returns the ids each root included. A root whose budget runs out stops
    expanding where it stands (the caller decides what that means: a 400, or no includes)."""
    included: list[set[str]] = [set() for _ in roots]
    if not include:
        return included
    only: set[str] | None = None if include == ["*"] else set(include)
    # (document, its type, the fields to follow, root index, how many copies of it the output holds)
    Level = list[tuple[dict[str, Any], ContentType, set[str] | None, int, int]]
    level: Level = [(d, d_ct, only, root, 1) for root, (d, d_ct, _) in enumerate(roots)]
    for _ in range(depth):
        links = [[link["id"] for link in render.reference_links(doc, doc_ct, names)] for doc, doc_ct, names, *_ in level]
        wanted = {link for parent in links for link in parent}
        if not wanted:
            break
        found = await fetch(sorted(wanted))
        next_level: Level = []
        for (doc, doc_ct, names, root, copies), parent_links in zip(level, links, strict=True):
            budget = roots[root][2]
            if budget.exceeded:
                continue
            counts = Counter(link for link in parent_links if link in found)
            budget.entries += sum(copies * n for n in counts.values())
            budget.bytes += sum(copies * n * found[link][1] for link, n in counts.items())
            if budget.exceeded:
                continue
            # Fresh copies per parent and level: the same entry at two depths never makes a cycle.
            own = {
                link: dict(found[link][0], fields=dict(found[link][0].get("fields") or {})) for link in counts
            }
            included[root] |= set(own)
            render.resolve_includes(doc, doc_ct, names, own)
            next_level.extend(
                (d, types[d["type"]], None, root, copies * counts[link]) for link, d in own.items() if d.get("type") in types
            )
        level = next_level
    return included


# A fetch of referenced entries' stored bytes: id -> its ENTRY bytes.
FetchBytes = Callable[[list[str]], Awaitable[dict[str, bytes]]]


def _fetch_published_bytes(conn: Any, locale: str, types: dict[str, ContentType]) -> FetchBytes:
    """`_fetch_published`'s rule, as stored bytes."""
    async def fetch(ids: list[str]) -> dict[str, bytes]:
        return {r["entry_id"]: r["body"] for r in await repo.documents_for(conn, ids, locale) if r["type"] in types}

    return fetch


def _spliced_page(
    page: sql.Page, names: frozenset[str], types: dict[str, ContentType], limit: IncludeLimit, meta: dict[str, Any],
) -> tuple[bytes, set[str]]:
    """A list whose rows all have their links' places, with every field and depth-1 includes of
    `names` that the page's statement brought along: `splice_each` + `list_envelope` in one pass
    (the same bytes; the same budget, checked before any bytes are built)."""
    found = _brought_documents(page, types)
    kept = [[link for link in r["links"] if link[0] in names] for r in page.rows]
    hits = [link[3] for links in kept for link in links if link[3] in found]
    budget = _Budget(limit)
    budget.entries += len(hits)
    budget.bytes += sum(len(found[i]) for i in hits)
    if budget.exceeded:
        raise budget.problem()
    documents = [(r["body"], links) for r, links in zip(page.rows, kept, strict=True)]
    return render.spliced_list_envelope(documents, found, meta), set(hits)


def _brought_documents(page: sql.Page, types: dict[str, ContentType]) -> dict[str, bytes]:
    """What the page's statement brought along (`repo.included_along`), by `_fetch_published_bytes`'s
    rule: documents of `types` only."""
    return {r["entry_id"]: r["body"] for r in page.along if r["type"] in types}


def _brought(page: sql.Page, include: list[str], types: dict[str, ContentType], fetch: FetchBytes) -> FetchBytes:
    """`fetch` answered from what the page's statement brought along (`repo.included_along` of
    `include`), by `_fetch_published_bytes`'s rule (documents of `types` only); ids that no row's
    links looked up (rows stored without links) are fetched."""
    found = _brought_documents(page, types)
    looked_up = {
        link[3] for row in page.rows if row["links"] is not None for link in row["links"] if link[0] in include
    }

    async def answer(ids: list[str]) -> dict[str, bytes]:
        missing = [i for i in ids if i not in looked_up and i not in found]
        return {**{i: found[i] for i in ids if i in found}, **(await fetch(missing) if missing else {})}

    return answer


async def splice_each(
    roots: list[tuple[bytes, list[render.Link] | None, ContentType, _Budget]], include: list[str],
    fields: list[str] | None, fetch: FetchBytes,
) -> list[tuple[bytes, set[str]] | None]:
    """`include` at depth 1 (and `fields`) over stored ENTRY bytes (with their links' places, or None),
    one fetch for all roots: each root's bytes and included ids, or None for a root whose budget ran
    out (checked before any bytes are built; the caller decides: a 400, or no includes). Same bytes
    as `expand_each` + encode."""
    only = (None if include == ["*"] else set(include)) if include else set()
    names_of: dict[str, frozenset[str]] = {}  # per type, once: the fields followed that were asked for
    spliced: list[render.LinkSplice | render.Spliced] = []
    linked: list[list[str]] = []
    for body, links, ct, _ in roots:
        names = names_of.get(ct.id)
        if names is None:
            names = names_of[ct.id] = render.followed(ct) if only is None else render.followed(ct) & only
        splice = render.splicer(body, links, ct, only, fields, names)
        spliced.append(splice)
        linked.append(splice.linked_ids())
    wanted = sorted({i for ids in linked for i in ids})
    found = await fetch(wanted) if wanted else {}
    included: list[set[str]] = []
    for ids, (*_, budget) in zip(linked, roots, strict=True):
        hits = [i for i in ids if i in found]
        budget.entries += len(hits)
        budget.bytes += sum(len(found[i]) for i in hits)
        included.append(set(hits))
    # Encoded only now: a response whose budget ran out builds no bytes.
    return [
        None if budget.exceeded else (splice.encode(found, fields), ids)
        for splice, ids, (*_, budget) in zip(spliced, included, roots, strict=True)
    ]


def _select_fields(document: dict[str, Any], fields: list[str] | None) -> None:
    if fields is not None:
        document["fields"] = {k: v for k, v in (document.get("fields") or {}).items() if k in fields}


def _entry_tags(ids: list[str], included: set[str]) -> tuple[str, ...]:
    return tuple(f"entry:{i}" for i in dict.fromkeys([*ids, *sorted(included)]))


async def published_entry(
    conn: Any, types: dict[str, ContentType], ct: ContentType, locale: str, *, entry_id: str | None = None,
    slug: str | None = None, include: list[str] | None = None, depth: int = 1, fields: list[str] | None = None,
    limit: IncludeLimit,
) -> Body | None:
    """`GET /api/v1/entries/{type}/{id}` (or by-slug) with include/depth/fields; None when not published."""
    row = (
        await repo.document(conn, ct.id, locale, entry_id) if entry_id is not None
        else await repo.document_by_slug(conn, ct.id, locale, slug or "")
    )
    if row is None:
        return None
    known = types if types.get(ct.id) is ct else {**types, ct.id: ct}
    bodies = await _published_bodies(conn, known, locale, [row], include, depth, fields, limit, too_large="raise")
    return bodies.get(row["entry_id"])


async def published_entries(
    conn: Any, types: dict[str, ContentType], locale: str, ids: list[str], *, include: list[str] | None = None,
    depth: int = 1, fields: list[str] | None = None, limit: IncludeLimit, too_large: str = "raise",
) -> dict[str, Body]:
    """`published_entry` for many entries (of any types) at once: by entry id, only those published.

    A constant number of queries (one, plus one per include level) whatever the number of ids; the
    bytes are exactly what `published_entry` answers for each id. An entry whose includes go past
    `limit`: the 400 (`too_large="raise"`), or its document without includes (`"links"`).
    """
    rows = await repo.documents_for(conn, ids, locale, links=True) if ids else []
    return await _published_bodies(conn, types, locale, rows, include, depth, fields, limit, too_large)


async def _published_bodies(
    conn: Any, types: dict[str, ContentType], locale: str, rows: list[Any], include: list[str] | None, depth: int,
    fields: list[str] | None, limit: IncludeLimit, too_large: str,
) -> dict[str, Body]:
    rows = [r for r in rows if r["type"] in types]
    if not include and fields is None:
        return {r["entry_id"]: _plain(r) for r in rows}
    if depth == 1:  # the common case, on stored bytes (see `splice_each`)
        budgets = [_Budget(limit) for _ in rows]
        spliced = await splice_each(
            [(r["body"], r["links"], types[r["type"]], b) for r, b in zip(rows, budgets, strict=True)], include or [],
            fields,
            _fetch_published_bytes(conn, locale, types),
        )
        out = {}
        for row, done, budget in zip(rows, spliced, budgets, strict=True):
            if done is None:
                if too_large == "raise":
                    raise budget.problem()
                log.warning("entry %s: its includes go past the limit; stored without them", row["entry_id"])
                done = (render.Spliced(row["body"], types[row["type"]], set()).encode({}, fields), set())
            body = render.envelope(done[0])
            out[row["entry_id"]] = Body(body, render.answer_etag(body), _entry_tags([row["entry_id"]], done[1]), row["render_seq"])
        return out
    documents = [render.decode(r["body"]) for r in rows]
    roots = [(d, types[r["type"]], _Budget(limit)) for d, r in zip(documents, rows, strict=True)]
    included = await expand_each(roots, types, include or [], depth, _fetch_published(conn, locale, types))
    out = {}
    for row, document, ids, (_, _, budget) in zip(rows, documents, included, roots, strict=True):
        if budget.exceeded:
            if too_large == "raise":
                raise budget.problem()
            log.warning("entry %s: its includes go past the limit; stored without them", row["entry_id"])
            document = render.decode(row["body"])
            ids = set()
        _select_fields(document, fields)
        body = render.envelope(render.encode(document))
        out[row["entry_id"]] = Body(body, render.answer_etag(body), _entry_tags([row["entry_id"]], ids), row["render_seq"])
    return out


def _plain(row: Any) -> Body:
    """A stored document as it is: no includes, every field."""
    return Body(render.envelope(row["body"]), row["etag"], (f"entry:{row['entry_id']}",), row["render_seq"])


async def published_list(
    conn: Any, types: dict[str, ContentType], ct: ContentType, query: ListQuery, limit: IncludeLimit
) -> Body:
    """`GET /api/v1/entries/{type}` for a parsed query."""
    # Depth 1 in the page's own statement, when a field asked for can hold references at all.
    followed = render.followed(ct)
    referenced = [f for f in query.include if f in followed] if query.depth == 1 else []
    along = repo.included_along(referenced, query.locale) if referenced else None
    page = await sql.fetch_page(conn, query, DeliverySource(), "d.entry_id, d.body, d.links, d.type", along=along)
    meta = {"limit": query.limit, "next_cursor": page.next_cursor, "total": page.total, "total_relation": page.total_relation}
    ids = [r["entry_id"] for r in page.rows]
    included: set[str] = set()
    if along is not None and query.fields is None and all(r["links"] is not None for r in page.rows):
        body, included = _spliced_page(page, frozenset(referenced), types, limit, meta)  # the common case
    elif query.depth == 1 and (query.include or query.fields is not None):
        budget = _Budget(limit)  # one answer: the page shares one budget
        fetch = _fetch_published_bytes(conn, query.locale, types)
        spliced = await splice_each(
            [(r["body"], r["links"], ct, budget) for r in page.rows], query.include, query.fields,
            _brought(page, referenced, types, fetch) if along is not None else fetch,
        )
        if budget.exceeded:
            raise budget.problem()
        body = render.list_envelope([done[0] for done in spliced if done is not None], meta)
        included = {i for done in spliced if done is not None for i in done[1]}
    elif query.include or query.fields is not None:
        documents = [render.decode(r["body"]) for r in page.rows]
        included = await expand(
            documents, ct, types, query.include, query.depth, _fetch_published(conn, query.locale, types), limit
        )
        for document in documents:
            _select_fields(document, query.fields)
        body = render.list_envelope([render.encode(d) for d in documents], meta)
    else:
        body = render.list_envelope([r["body"] for r in page.rows], meta)
    return Body(body, render.answer_etag(body), (f"type:{ct.id}", *_entry_tags(ids, included)))


async def draft_entry(
    conn: Any, types: dict[str, ContentType], ct: ContentType, locales: Locales, locale: str, assets_url: str, *,
    entry_id: str | None = None, slug: str | None = None, include: list[str] | None = None, depth: int = 1,
    fields: list[str] | None = None, limit: IncludeLimit,
) -> Body | None:
    """The preview twin of published_entry: the latest drafts, rendered on the fly."""
    found_id = entry_id
    if slug is not None:
        found_id = await entries_repo.draft_with_slug(conn, ct.id, slug, [*locales.chain(locale), NON_LOCALIZED])
    if not found_id:
        return None
    fetch = _fetch_drafts(conn, types, locales, locale, assets_url)
    document = (await fetch([found_id])).get(found_id, ({}, 0))[0]
    if document.get("type") != ct.id:
        return None
    included = await expand([document], ct, types, include or [], depth, fetch, limit)
    _select_fields(document, fields)
    body = render.envelope(render.encode(document))
    return Body(body, render.answer_etag(body), _entry_tags([found_id], included))


async def draft_list(
    conn: Any, types: dict[str, ContentType], ct: ContentType, locales: Locales, query: ListQuery, assets_url: str,
    limit: IncludeLimit,
) -> Body:
    page = await sql.fetch_page(conn, query, DraftSource(locales.chain(query.locale)), "e.*")
    fetch = _fetch_drafts(conn, types, locales, query.locale, assets_url)
    rendered = await fetch([r["id"] for r in page.rows])
    documents = [rendered[r["id"]][0] for r in page.rows if r["id"] in rendered]
    included = await expand(documents, ct, types, query.include, query.depth, fetch, limit)
    for document in documents:
        _select_fields(document, query.fields)
    meta = {"limit": query.limit, "next_cursor": page.next_cursor, "total": page.total, "total_relation": page.total_relation}
    body = render.list_envelope([render.encode(d) for d in documents], meta)
    return Body(body, render.answer_etag(body), (f"type:{ct.id}", *_entry_tags([d["id"] for d in documents], included)))


# --- decoded documents (GraphQL) --------------------------------------------------------------------


class PublishedDocuments:
    """Published ENTRY documents, decoded: what GraphQL resolves from. The same rows and the same
    query compiler as the REST answers above, so the two cannot drift."""

    preview = False

    async def page(self, conn: Any, query: ListQuery) -> tuple[list[dict[str, Any]], sql.Page]:
        page = await sql.fetch_page(conn, query, DeliverySource(), "d.entry_id, d.body")
        return [render.decode(r["body"]) for r in page.rows], page

    async def one(
        self, conn: Any, ct: ContentType, locale: str, *, entry_id: str | None, slug: str | None,
    ) -> dict[str, Any] | None:
        row = (
            await repo.document(conn, ct.id, locale, entry_id) if entry_id is not None
            else await repo.document_by_slug(conn, ct.id, locale, slug or "")
        )
        return render.decode(row["body"]) if row is not None else None

    async def many(self, conn: Any, ids: list[str], locale: str) -> dict[str, tuple[dict[str, Any], int]]:
        """id -> (its document, the size of its stored bytes)."""
        return {r["entry_id"]: (render.decode(r["body"]), len(r["body"])) for r in await repo.documents_for(conn, ids, locale)}


class DraftDocuments:
    """The preview twin: every entry's latest draft, rendered on the fly."""

    preview = True

    def __init__(self, types: dict[str, ContentType], locales: Locales, assets_url: str) -> None:
        self.types = types
        self.locales = locales
        self.assets_url = assets_url

    async def page(self, conn: Any, query: ListQuery) -> tuple[list[dict[str, Any]], sql.Page]:
        page = await sql.fetch_page(conn, query, DraftSource(self.locales.chain(query.locale)), "e.id")
        found = await self.many(conn, [r["id"] for r in page.rows], query.locale)
        return [found[r["id"]][0] for r in page.rows if r["id"] in found], page

    async def one(
        self, conn: Any, ct: ContentType, locale: str, *, entry_id: str | None, slug: str | None,
    ) -> dict[str, Any] | None:
        found_id = entry_id
        if slug is not None:
            found_id = await entries_repo.draft_with_slug(conn, ct.id, slug, [*self.locales.chain(locale), NON_LOCALIZED])
        if not found_id:
            return None
        found = (await self.many(conn, [found_id], locale)).get(found_id)
        return found[0] if found is not None and found[0].get("type") == ct.id else None

    async def many(self, conn: Any, ids: list[str], locale: str) -> dict[str, tuple[dict[str, Any], int]]:
        return await _fetch_drafts(conn, self.types, self.locales, locale, self.assets_url)(ids)
