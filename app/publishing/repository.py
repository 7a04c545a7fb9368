"""SQL for published documents (the rendered ENTRY bytes per locale) and the reverse references."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from ..db.rows import Conn
from ..query.sources import ident
from ..query.sql import Along
from ..schema.model import FIELD_ID, LOCALE_CODE

_encode = msgspec.json.Encoder().encode


def _jsonb_param(values: list[Any]) -> list[Any]:
    """Values for a `$n::jsonb[]` parameter, each encoded already: as they are, lists of lists (links)
    would be read by asyncpg as more dimensions of the array."""
    return [None if value is None else msgspec.Raw(_encode(value)) for value in values]

DOCUMENT_COLUMNS = "entry_id, type, body, etag, render_seq, links"
_WITHOUT_LINKS = "entry_id, type, body, etag, render_seq"  # for bytes that are only embedded or sent


async def replace_documents(conn: Conn, entry_id: str, docs: list[tuple[Any, ...]]) -> None:
    """docs: (locale, type, version, slug, body, etag, vals, search_text, published_at, updated_at, created_at,
    bulky, links).

    One statement: the rows of locales not in docs go, the others are inserted or replaced.
    """
    await replace_documents_many(conn, [entry_id], [(entry_id, *doc) for doc in docs])


async def delete_documents(conn: Conn, entry_id: str) -> None:
    await conn.execute("DELETE FROM published_documents WHERE entry_id = $1", entry_id)




def included_along(fields: list[str], locale: str) -> Along:
    """For a page of published documents selected as (entry_id, body, links, type): the published
    documents in `locale` that its rows' stored links in `fields` (named, as `include` is parsed)
    point to, in the page's own statement (`include` at depth 1). Rows stored without links (before
    migration 0020) bring nothing: the caller fetches theirs. Field ids and the locale are inlined,
    each checked."""
    wanted = " WHERE l->>0 IN (" + ", ".join(f"'{ident(f, FIELD_ID)}'" for f in fields) + ")"
    return Along(
        "i.entry_id, i.body, NULL::jsonb, i.type",
        "published_documents i WHERE i.entry_id = ANY(ARRAY("
        f"SELECT l->>3 FROM _page, jsonb_array_elements(_page.links) l{wanted}))"
        f" AND i.locale = '{ident(locale, LOCALE_CODE)}'",
    )


async def document(conn: Conn, type_id: str, locale: str, entry_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {DOCUMENT_COLUMNS} FROM published_documents WHERE entry_id = $1 AND locale = $2 AND type = $3",
        entry_id, locale, type_id,
    )


async def document_by_slug(conn: Conn, type_id: str, locale: str, slug: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {DOCUMENT_COLUMNS} FROM published_documents WHERE type = $1 AND locale = $2 AND slug = $3 "
        "ORDER BY published_at, entry_id LIMIT 1",
        type_id, locale, slug,
    )


async def documents_for(conn: Conn, ids: list[str], locale: str, *, links: bool = False) -> list[asyncpg.Record]:
    """These entries' documents in a locale; `links`: with their links' places (to include on them)."""
    return await conn.fetch(
        f"SELECT {DOCUMENT_COLUMNS if links else _WITHOUT_LINKS} FROM published_documents"  # noqa: S608 (constants)
        " WHERE entry_id = ANY($1::text[]) AND locale = $2",
        ids, locale,
    )


async def documents_after(conn: Conn, type_id: str, locale: str, after_id: str, limit: int) -> list[asyncpg.Record]:
    """A type's documents in one locale, by entry id, after `after_id` (sync's initial pages)."""
    return await conn.fetch(
        f"SELECT {DOCUMENT_COLUMNS} FROM published_documents WHERE type = $1 AND locale = $2 AND entry_id > $3 "
        "ORDER BY entry_id LIMIT $4",
        type_id, locale, after_id, limit,
    )


async def replace_references(conn: Conn, source_id: str, target_ids: list[str]) -> None:
    await replace_references_many(conn, [source_id], [(source_id, target) for target in target_ids])


async def dependents_of(conn: Conn, target_ids: list[str]) -> list[asyncpg.Record]:
    """Published entries whose documents include one of target_ids (directly)."""
    return await conn.fetch(
        "SELECT DISTINCT e.id, e.type FROM entry_references r JOIN entries e ON e.id = r.source_id "
        "WHERE r.target_id = ANY($1::text[]) AND e.published_version IS NOT NULL ORDER BY e.id",
        target_ids,
    )


async def slug_owners(conn: Conn, slugs: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """(type, locale, slug) -> the published entry `document_by_slug` answers with (same ordering)."""
    if not slugs:
        return {}
    rows = await conn.fetch(
        "SELECT DISTINCT ON (d.type, d.locale, d.slug) d.type, d.locale, d.slug, d.entry_id "
        "FROM published_documents d JOIN unnest($1::text[], $2::text[], $3::text[]) AS u(type, locale, slug) "
        "ON d.type = u.type AND d.locale = u.locale AND d.slug = u.slug "
        "ORDER BY d.type, d.locale, d.slug, d.published_at, d.entry_id",
        [t for t, _, _ in slugs], [loc for _, loc, _ in slugs], [s for _, _, s in slugs],
    )
    return {(r["type"], r["locale"], r["slug"]): r["entry_id"] for r in rows}


async def replace_documents_many(
    conn: Conn, entry_ids: list[str], docs: list[tuple[Any, ...]],
) -> set[tuple[str, str]]:
    """docs: (entry id, locale, type, version, slug, body, etag, vals, search_text, published_at,
    updated_at, created_at, bulky, links), replacing every document of entry_ids, in one statement; the
    (entry id, locale) of the documents written. A document that is already exactly so is
    left alone (no new row version, no new render number: its files need no rewrite), e.g. after a
    schema change that only tightened a rule or marked a field `indexed`. Its links count: the same
    bytes hold other includable links when a component's sub-field changed from a reference to json,
    and a document stored before migration 0020 (links NULL) gets them when it is next re-rendered.
    The search text is parsed (to_tsvector) only when it is not the text the stored tsvector came
    from (migration 0027's `search_key`): a re-render of unchanged text keeps the stored one."""
    columns: list[list[Any]] = [list(c) for c in zip(*docs, strict=True)] if docs else [[] for _ in range(14)]
    columns[13] = _jsonb_param(columns[13])  # links
    # The DELETE touches only rows the INSERT does not write (other entries' locales), so the two
    # parts of the statement never meet the same row.
    rows = await conn.fetch(
        """WITH u AS (
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::bytea[],
                                    $7::text[], $8::jsonb[], $9::text[], $10::timestamptz[], $11::timestamptz[],
                                    $12::timestamptz[], $13::jsonb[], $14::jsonb[])
                 AS u(entry_id, locale, type, version, slug, body, etag, vals, search, published_at, updated_at,
                      created_at, bulky, links)
           ), gone AS (
               DELETE FROM published_documents d WHERE d.entry_id = ANY($15::text[])
                  AND NOT EXISTS (SELECT 1 FROM u WHERE u.entry_id = d.entry_id AND u.locale = d.locale)
           ), k AS (
               SELECT u.*, md5('simple:' || u.search)::uuid AS search_key FROM u  -- (the parser's configuration too)
           )
           INSERT INTO published_documents
                 (entry_id, locale, type, version, slug, body, etag, vals, search, search_key, published_at,
                  updated_at, created_at, bulky, links)
           SELECT k.entry_id, k.locale, k.type, k.version, k.slug, k.body, k.etag, k.vals,
                  -- the stored tsvector when it was parsed from this very text
                  coalesce((SELECT s.search FROM published_documents s WHERE s.entry_id = k.entry_id
                               AND s.locale = k.locale AND s.search_key = k.search_key),
                           to_tsvector('simple', k.search)),
                  k.search_key, k.published_at, k.updated_at, k.created_at, k.bulky, k.links FROM k
           ON CONFLICT (entry_id, locale) DO UPDATE SET
               type = excluded.type, version = excluded.version, slug = excluded.slug, body = excluded.body,
               etag = excluded.etag, vals = excluded.vals,
               search = excluded.search, search_key = excluded.search_key,
               published_at = excluded.published_at, updated_at = excluded.updated_at,
               created_at = excluded.created_at, render_seq = excluded.render_seq, bulky = excluded.bulky,
               links = excluded.links
           WHERE (published_documents.type, published_documents.version, published_documents.slug,
                  published_documents.etag, published_documents.vals, published_documents.search,
                  published_documents.published_at, published_documents.updated_at,
                  published_documents.created_at, published_documents.bulky, published_documents.links)
                 IS DISTINCT FROM (excluded.type, excluded.version, excluded.slug, excluded.etag, excluded.vals,
                                   excluded.search, excluded.published_at, excluded.updated_at,
                                   excluded.created_at, excluded.bulky, excluded.links)
           RETURNING entry_id, locale""",
        *columns, entry_ids,
    )
    return {(r["entry_id"], r["locale"]) for r in rows}


async def documents_without_links(
    conn: Conn, only_type: str | None, after: tuple[str, str], limit: int,
) -> list[asyncpg.Record]:
    """Documents stored before migration 0020, by (entry id, locale) after `after`."""
    return await conn.fetch(
        "SELECT entry_id, locale, type, body, etag FROM published_documents WHERE links IS NULL "
        "AND ($1::text IS NULL OR type = $1) AND (entry_id, locale) > ($2, $3) ORDER BY entry_id, locale LIMIT $4",
        only_type, after[0], after[1], limit,
    )


async def set_links(conn: Conn, found: list[tuple[str, str, str, list[Any]]]) -> int:
    """(entry id, locale, etag, links): set where the document is still that one and has none."""
    if not found:
        return 0
    rows = await conn.fetch(
        """UPDATE published_documents d SET links = u.links
             FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[]) AS u(entry_id, locale, etag, links)
            WHERE d.entry_id = u.entry_id AND d.locale = u.locale AND d.etag = u.etag AND d.links IS NULL
           RETURNING d.entry_id""",
        [f[0] for f in found], [f[1] for f in found], [f[2] for f in found],
        _jsonb_param([f[3] for f in found]),
    )
    return len(rows)


async def add_published_values(conn: Conn, documents: list[tuple[str, str]]) -> None:
    """The published_values rows of these (entry id, locale) documents for every indexed field, where
    missing: for documents a change left as they were (no UPDATE fired the triggers) of a type whose
    change made a field `indexed`."""
    await conn.execute(
        """INSERT INTO published_values (type, field, locale, value, entry_id)
           SELECT d.type, f.field, d.locale, coalesce(d.vals -> f.field, 'null'::jsonb), d.entry_id
             FROM unnest($1::text[], $2::text[]) AS u(entry_id, locale)
             JOIN published_documents d ON d.entry_id = u.entry_id AND d.locale = u.locale
             JOIN indexed_fields f ON f.type = d.type
           ON CONFLICT DO NOTHING""",
        [d[0] for d in documents], [d[1] for d in documents],
    )


async def replace_references_many(conn: Conn, source_ids: list[str], rows: list[tuple[str, str]]) -> None:
    """rows: (source id, target id), replacing every reference of source_ids, in one statement."""
    await conn.execute(
        """WITH u AS (SELECT * FROM unnest($1::text[], $2::text[]) AS u(source_id, target_id)),
                gone AS (
                    DELETE FROM entry_references r WHERE r.source_id = ANY($3::text[])
                       AND NOT EXISTS (SELECT 1 FROM u WHERE u.source_id = r.source_id AND u.target_id = r.target_id)
                )
           INSERT INTO entry_references (source_id, target_id) SELECT source_id, target_id FROM u
           ON CONFLICT DO NOTHING""",
        [r[0] for r in rows], [r[1] for r in rows], source_ids,
    )
