"""Published documents: the one place `published_documents` rows (and the reverse references that
drive dependent re-renders) are written. `render.py` makes the bytes; this module stores them."""

from __future__ import annotations

from typing import Any

import asyncpg

from .. import render
from ..assets import repository as assets_repo
from ..entries.rules import links
from ..schema.model import (
    ContentType,
    Locales,
)
from . import repository as repo


def published_rows(
    entry: Any, ct: ContentType, locales: Locales, assets: dict[str, Any]
) -> tuple[list[tuple[Any, ...]], list[str]]:
    """The published_documents rows (one per locale, without the entry id) and the referenced ids
    of a published entry; `assets` holds at least the assets it links to."""
    docs = []
    for code in locales.codes:
        rendered = render.render_entry(entry, ct, code, locales.chain(code), assets)
        docs.append((
            code, ct.id, entry["published_version"], rendered.slug, rendered.body, rendered.etag, rendered.vals,
            rendered.search_text, entry["published_at"], entry["updated_at"], entry["created_at"],
            rendered.bulky or None, rendered.links,
        ))
    refs, _ = links(ct, entry["published_data"])
    return docs, sorted({link["id"] for _, link in refs})


async def render_published(
    conn: asyncpg.Connection, entry: Any, ct: ContentType, locales: Locales, assets_url: str
) -> None:
    assets = await assets_by_id(conn, render.asset_ids(ct, entry["published_data"]), assets_url)
    docs, targets = published_rows(entry, ct, locales, assets)
    await repo.replace_documents(conn, entry["id"], docs)
    await repo.replace_references(conn, entry["id"], targets)


async def assets_by_id(conn: asyncpg.Connection, ids: set[str], assets_url: str) -> dict[str, Any]:
    """The delivery form of these assets (those that exist), in one query."""
    if not ids:
        return {}
    return {row["id"]: render.asset_json(row, assets_url) for row in await assets_repo.get_assets(conn, sorted(ids))}


LINKS_BATCH = 500


async def record_link_places(conn: asyncpg.Connection, types: dict[str, ContentType], only_type: str | None = None) -> int:
    """Documents stored before migration 0020 (links NULL) get their links' places, read off their
    stored bytes, so `include` splices them without decoding (`cms republish`). Only where encoding
    the decoded document again gives its very bytes; the bytes and render numbers stay as they
    are (no file changes, nothing to purge). Returns how many documents got them."""
    recorded = 0
    after: tuple[str, str] = ("", "")
    while rows := await repo.documents_without_links(conn, only_type, after, LINKS_BATCH):
        found = []
        for row in rows:
            ct = types.get(row["type"])
            if ct is None:
                continue
            body, links = render.encode_stored(render.decode(row["body"]), ct)
            if body == row["body"]:
                found.append((row["entry_id"], row["locale"], row["etag"], links))
        recorded += await repo.set_links(conn, found)
        after = (rows[-1]["entry_id"], rows[-1]["locale"])
    return recorded
