"""Delivery documents: the bytes of one entry or one list, published or draft.

The delivery routes, the prerendered files on S3 and anything else that must match them call
these functions; render.py does the per-entry encoding.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from .. import render
from ..entries import repository as entries_repo
from ..publishing import repository as repo
from ..publishing.documents import assets_by_id
from ..query import sql
from ..query.parse import ListQuery
from ..schema.model import NON_LOCALIZED, ContentType, Locales

Fetch = Callable[[list[str]], Awaitable[dict[str, dict[str, Any]]]]


class Body(NamedTuple):
    body: bytes
    etag: str
    tags: tuple[str, ...]


def _fetch_published(conn: Any, locale: str) -> Fetch:
    async def fetch(ids: list[str]) -> dict[str, dict[str, Any]]:
        return {r["entry_id"]: render.decode(r["body"]) for r in await repo.documents_for(conn, ids, locale)}

    return fetch


def _fetch_drafts(conn: Any, types: dict[str, ContentType], locales: Locales, locale: str, assets_url: str) -> Fetch:
    async def fetch(ids: list[str]) -> dict[str, dict[str, Any]]:
        rows = [row for row in await entries_repo.get_entries(conn, ids) if row["type"] in types]
        # Every asset the drafts link to, in one query (not one per draft).
        asset_ids = {a for row in rows for a in render.asset_ids(types[row["type"]], row["data"])}
        assets = await assets_by_id(conn, asset_ids, assets_url)
        return {
            row["id"]: render.decode(render.render_entry(
                row, types[row["type"]], locale, locales.chain(locale), assets, draft=True
            ).body)
            for row in rows
        }

    return fetch


async def expand(
    documents: list[dict[str, Any]], ct: ContentType, types: dict[str, ContentType], include: list[str],
    depth: int, fetch: Fetch,
) -> set[str]:
    """Resolve references inline, one batched fetch per level; returns the ids included."""
    included: set[str] = set()
    for ids in await expand_each([(d, ct) for d in documents], types, include, depth, fetch):
        included |= ids
    return included


async def expand_each(
    roots: list[tuple[dict[str, Any], ContentType]], types: dict[str, ContentType], include: list[str],
    depth: int, fetch: Fetch,
) -> list[set[str]]:
    """`expand` for documents of any types at once; returns the ids each root document included."""
    included: list[set[str]] = [set() for _ in roots]
    if not include:
        return included
    only: set[str] | None = None if include == ["*"] else set(include)
    Level = list[tuple[dict[str, Any], ContentType, set[str] | None, int]]
    level: Level = [(d, d_ct, only, root) for root, (d, d_ct) in enumerate(roots)]
    for _ in range(depth):
        wanted = {link["id"] for doc, doc_ct, names, _ in level for link in render.reference_links(doc, doc_ct, names)}
        if not wanted:
            break
        found = await fetch(sorted(wanted))
        next_level: Level = []
        for doc, doc_ct, names, root in level:
            # Fresh copies per parent and level: the same entry at two depths never makes a cycle.
            own = {
                link["id"]: dict(found[link["id"]], fields=dict(found[link["id"]].get("fields") or {}))
                for link in render.reference_links(doc, doc_ct, names) if link["id"] in found
            }
            included[root] |= set(own)
            render.resolve_includes(doc, doc_ct, names, own)
            next_level.extend((d, types[d["type"]], None, root) for d in own.values() if d.get("type") in types)
        level = next_level
    return included


def _select_fields(document: dict[str, Any], fields: list[str] | None) -> None:
    if fields is not None:
        document["fields"] = {k: v for k, v in (document.get("fields") or {}).items() if k in fields}


def _entry_tags(ids: list[str], included: set[str]) -> tuple[str, ...]:
    return tuple(f"entry:{i}" for i in dict.fromkeys([*ids, *sorted(included)]))


async def published_entry(
    conn: Any, types: dict[str, ContentType], ct: ContentType, locale: str, *, entry_id: str | None = None,
    slug: str | None = None, include: list[str] | None = None, depth: int = 1, fields: list[str] | None = None,
) -> Body | None:
    """`GET /api/v1/entries/{type}/{id}` (or by-slug) with include/depth/fields; None when not published."""
    row = (
        await repo.document(conn, ct.id, locale, entry_id) if entry_id is not None
        else await repo.document_by_slug(conn, ct.id, locale, slug or "")
    )
    if row is None:
        return None
    known = types if types.get(ct.id) is ct else {**types, ct.id: ct}
    bodies = await _published_bodies(conn, known, locale, [row], include, depth, fields)
    return bodies.get(row["entry_id"])


async def published_entries(
    conn: Any, types: dict[str, ContentType], locale: str, ids: list[str], *, include: list[str] | None = None,
    depth: int = 1, fields: list[str] | None = None,
) -> dict[str, Body]:
    """`published_entry` for many entries (of any types) at once: by entry id, only those published.

    A constant number of queries (one, plus one per include level) whatever the number of ids; the
    bytes are exactly what `published_entry` answers for each id.
    """
    rows = await repo.documents_for(conn, ids, locale) if ids else []
    return await _published_bodies(conn, types, locale, rows, include, depth, fields)


async def _published_bodies(
    conn: Any, types: dict[str, ContentType], locale: str, rows: list[Any], include: list[str] | None, depth: int,
    fields: list[str] | None,
) -> dict[str, Body]:
    rows = [r for r in rows if r["type"] in types]
    if not include and fields is None:
        return {r["entry_id"]: Body(render.envelope(r["body"]), r["etag"], _entry_tags([r["entry_id"]], set())) for r in rows}
    documents = [render.decode(r["body"]) for r in rows]
    included = await expand_each(
        [(d, types[r["type"]]) for d, r in zip(documents, rows, strict=True)], types, include or [], depth,
        _fetch_published(conn, locale),
    )
    out = {}
    for row, document, ids in zip(rows, documents, included, strict=True):
        _select_fields(document, fields)
        body = render.envelope(render.encode(document))
        out[row["entry_id"]] = Body(body, render.etag_of(body), _entry_tags([row["entry_id"]], ids))
    return out


async def published_list(conn: Any, types: dict[str, ContentType], ct: ContentType, query: ListQuery) -> Body:
    """`GET /api/v1/entries/{type}` for a parsed query."""
    page = await sql.fetch_page(conn, query, sql.DeliverySource(), "d.entry_id, d.body")
    meta = {"limit": query.limit, "next_cursor": page.next_cursor, "total": page.total}
    ids = [r["entry_id"] for r in page.rows]
    included: set[str] = set()
    if query.include or query.fields is not None:
        documents = [render.decode(r["body"]) for r in page.rows]
        included = await expand(documents, ct, types, query.include, query.depth, _fetch_published(conn, query.locale))
        for document in documents:
            _select_fields(document, query.fields)
        body = render.list_envelope([render.encode(d) for d in documents], meta)
    else:
        body = render.list_envelope([r["body"] for r in page.rows], meta)
    return Body(body, render.etag_of(body), (f"type:{ct.id}", *_entry_tags(ids, included)))


async def draft_entry(
    conn: Any, types: dict[str, ContentType], ct: ContentType, locales: Locales, locale: str, assets_url: str, *,
    entry_id: str | None = None, slug: str | None = None, include: list[str] | None = None, depth: int = 1,
    fields: list[str] | None = None,
) -> Body | None:
    """The preview twin of published_entry: the latest drafts, rendered on the fly."""
    found_id = entry_id
    if slug is not None:
        found_id = await entries_repo.draft_with_slug(conn, ct.id, slug, [*locales.chain(locale), NON_LOCALIZED])
    if not found_id:
        return None
    fetch = _fetch_drafts(conn, types, locales, locale, assets_url)
    document = (await fetch([found_id])).get(found_id)
    if document is None or document.get("type") != ct.id:
        return None
    included = await expand([document], ct, types, include or [], depth, fetch)
    _select_fields(document, fields)
    body = render.envelope(render.encode(document))
    return Body(body, render.etag_of(body), _entry_tags([found_id], included))


async def draft_list(
    conn: Any, types: dict[str, ContentType], ct: ContentType, locales: Locales, query: ListQuery, assets_url: str
) -> Body:
    page = await sql.fetch_page(conn, query, sql.DraftSource(locales.chain(query.locale)), "e.*")
    fetch = _fetch_drafts(conn, types, locales, query.locale, assets_url)
    rendered = await fetch([r["id"] for r in page.rows])
    documents = [rendered[r["id"]] for r in page.rows if r["id"] in rendered]
    included = await expand(documents, ct, types, query.include, query.depth, fetch)
    for document in documents:
        _select_fields(document, query.fields)
    meta = {"limit": query.limit, "next_cursor": page.next_cursor, "total": page.total}
    body = render.list_envelope([render.encode(d) for d in documents], meta)
    return Body(body, render.etag_of(body), (f"type:{ct.id}", *_entry_tags([d["id"] for d in documents], included)))
