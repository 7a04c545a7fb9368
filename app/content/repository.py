"""SQL for content types, locales, entries, versions and published documents."""

from __future__ import annotations

from typing import Any

import asyncpg


def _row(row: asyncpg.Record | None) -> asyncpg.Record:
    """INSERT/UPDATE … RETURNING on a row that exists always returns it."""
    assert row is not None
    return row

Conn = asyncpg.Connection | asyncpg.Pool

ENTRY_COLUMNS = (
    "id, type, data, version, published_version, published_data, first_published_at, published_at, "
    "created_at, updated_at"
)

# --- content types -----------------------------------------------------------------------------


async def all_types(conn: Conn) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM content_types ORDER BY id")


async def get_type(conn: Conn, type_id: str, *, for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM content_types WHERE id = $1{lock}", type_id)


async def insert_type(conn: Conn, type_id: str, body: dict[str, Any]) -> asyncpg.Record:
    return _row(await conn.fetchrow(
        """INSERT INTO content_types (id, name, description, display_field, fields)
           VALUES ($1, $2, $3, $4, $5) RETURNING *""",
        type_id, body["name"], body["description"], body["display_field"], body["fields"],
    ))


async def update_type(conn: Conn, type_id: str, body: dict[str, Any]) -> asyncpg.Record:
    return _row(await conn.fetchrow(
        """UPDATE content_types SET name = $2, description = $3, display_field = $4, fields = $5,
                  version = version + 1, updated_at = now()
           WHERE id = $1 RETURNING *""",
        type_id, body["name"], body["description"], body["display_field"], body["fields"],
    ))


async def delete_type(conn: Conn, type_id: str) -> None:
    await conn.execute("DELETE FROM content_types WHERE id = $1", type_id)


async def count_entries(conn: Conn, type_id: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM entries WHERE type = $1", type_id))


# --- locales -----------------------------------------------------------------------------------


async def all_locales(conn: Conn) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM locales ORDER BY is_default DESC, code")


async def upsert_locale(conn: Conn, code: str, name: str, fallback: str | None) -> tuple[asyncpg.Record, bool]:
    row = await conn.fetchrow(
        """INSERT INTO locales (code, name, fallback) VALUES ($1, $2, $3)
           ON CONFLICT (code) DO UPDATE SET name = excluded.name, fallback = excluded.fallback, updated_at = now()
           RETURNING *, (xmax = 0) AS created""",
        code, name, fallback,
    )
    return _row(row), bool(_row(row)["created"])


async def set_default_locale(conn: Conn, code: str) -> None:
    await conn.execute("UPDATE locales SET is_default = false WHERE is_default AND code <> $1", code)
    await conn.execute("UPDATE locales SET is_default = true WHERE code = $1", code)


async def delete_locale(conn: Conn, code: str) -> None:
    await conn.execute("UPDATE locales SET fallback = NULL WHERE fallback = $1", code)
    await conn.execute("DELETE FROM locales WHERE code = $1", code)


async def count_entries_with_locale(conn: Conn, code: str) -> int:
    return int(
        await conn.fetchval(
            """SELECT count(*) FROM entries e
               WHERE EXISTS (SELECT 1 FROM jsonb_each(e.data) f WHERE f.value ? $1)""",
            code,
        )
    )


async def drop_locale_values(conn: Conn, code: str) -> None:
    await conn.execute(
        """UPDATE entries SET data = (
               SELECT coalesce(jsonb_object_agg(f.key, f.value - $1), '{}'::jsonb) FROM jsonb_each(data) f)
           WHERE EXISTS (SELECT 1 FROM jsonb_each(data) f WHERE f.value ? $1)""",
        code,
    )
    await conn.execute("DELETE FROM entry_unique_values WHERE locale = $1", code)


# --- entries -----------------------------------------------------------------------------------


async def get_entry(conn: Conn, entry_id: str, *, for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE id = $1{lock}", entry_id)


async def get_entries(conn: Conn, ids: list[str]) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE id = ANY($1::text[])", ids)


async def insert_entry(conn: Conn, entry_id: str, type_id: str, data: dict[str, Any]) -> asyncpg.Record:
    return _row(await conn.fetchrow(
        f"INSERT INTO entries (id, type, data, version) VALUES ($1, $2, $3, 1) RETURNING {ENTRY_COLUMNS}",
        entry_id, type_id, data,
    ))


async def update_entry_data(conn: Conn, entry_id: str, data: dict[str, Any]) -> asyncpg.Record:
    return _row(await conn.fetchrow(
        f"""UPDATE entries SET data = $2, version = version + 1, updated_at = now()
            WHERE id = $1 RETURNING {ENTRY_COLUMNS}""",
        entry_id, data,
    ))


async def mark_published(conn: Conn, entry_id: str) -> asyncpg.Record:
    return _row(await conn.fetchrow(
        f"""UPDATE entries SET published_version = version, published_data = data, published_at = now(),
                  first_published_at = coalesce(first_published_at, now())
            WHERE id = $1 RETURNING {ENTRY_COLUMNS}""",
        entry_id,
    ))


async def mark_unpublished(conn: Conn, entry_id: str) -> asyncpg.Record:
    return _row(await conn.fetchrow(
        f"""UPDATE entries SET published_version = NULL, published_data = NULL, published_at = NULL
            WHERE id = $1 RETURNING {ENTRY_COLUMNS}""",
        entry_id,
    ))


async def delete_entry(conn: Conn, entry_id: str) -> None:
    await conn.execute("DELETE FROM entries WHERE id = $1", entry_id)


async def insert_version(
    conn: Conn, entry_id: str, version: int, data: dict[str, Any], action: str, actor: dict[str, Any]
) -> None:
    await conn.execute(
        "INSERT INTO entry_versions (entry_id, version, data, action, actor) VALUES ($1, $2, $3, $4, $5)",
        entry_id, version, data, action, actor,
    )


async def list_versions(conn: Conn, entry_id: str, after: int | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT version, created_at, actor, action FROM entry_versions
           WHERE entry_id = $1 AND ($2::int IS NULL OR version < $2) ORDER BY version DESC LIMIT $3""",
        entry_id, after, limit,
    )


async def get_version(conn: Conn, entry_id: str, version: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT version, created_at, actor, action, data FROM entry_versions WHERE entry_id = $1 AND version = $2",
        entry_id, version,
    )


async def existing_ids(conn: Conn, ids: list[str]) -> dict[str, str]:
    rows = await conn.fetch("SELECT id, type FROM entries WHERE id = ANY($1::text[])", ids)
    return {r["id"]: r["type"] for r in rows}


async def existing_asset_ids(conn: Conn, ids: list[str]) -> set[str]:
    rows = await conn.fetch("SELECT id FROM assets WHERE id = ANY($1::text[])", ids)
    return {r["id"] for r in rows}


async def get_assets(conn: Conn, ids: list[str]) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM assets WHERE id = ANY($1::text[])", ids)


# --- unique values -----------------------------------------------------------------------------


async def replace_unique_values(conn: Conn, entry_id: str, type_id: str, rows: list[tuple[str, str, str]]) -> None:
    await conn.execute("DELETE FROM entry_unique_values WHERE entry_id = $1", entry_id)
    if rows:
        await conn.executemany(
            "INSERT INTO entry_unique_values (type, field, locale, value, entry_id) VALUES ($1, $2, $3, $4, $5)",
            [(type_id, field, locale, value, entry_id) for field, locale, value in rows],
        )


async def unique_taken(
    conn: Conn, type_id: str, rows: list[tuple[str, str, str]], entry_id: str
) -> list[tuple[str, str, str]]:
    if not rows:
        return []
    # Explicit row values (not an unnest join) keep the plan an index lookup per value.
    args: list[Any] = [type_id, entry_id]
    tuples = []
    for field, locale, value in rows:
        n = len(args)
        tuples.append(f"(${n + 1}, ${n + 2}, ${n + 3})")
        args.extend((field, locale, value))
    found = await conn.fetch(
        "SELECT field, locale, value FROM entry_unique_values "
        f"WHERE type = $1 AND entry_id <> $2 AND (field, locale, value) IN ({', '.join(tuples)})",
        *args,
    )
    return [(r["field"], r["locale"], r["value"]) for r in found]


async def slugs_like(conn: Conn, type_id: str, field: str, locale: str, base: str, entry_id: str) -> set[str]:
    rows = await conn.fetch(
        """SELECT value FROM entry_unique_values
           WHERE type = $1 AND field = $2 AND locale = $3 AND entry_id <> $5
             AND (value = $4 OR (value COLLATE "C" > $4 || '-' AND value COLLATE "C" < $4 || '.'))""",
        type_id, field, locale, base, entry_id,
    )
    return {r["value"] for r in rows}


# --- published documents -----------------------------------------------------------------------


async def replace_documents(conn: Conn, entry_id: str, docs: list[tuple[Any, ...]]) -> None:
    """docs: (locale, type, version, slug, body, etag, vals, search_text, published_at, updated_at, created_at).

    One statement: the rows of locales not in docs go, the others are inserted or replaced.
    """
    await replace_documents_many(conn, [entry_id], [(entry_id, *doc) for doc in docs])


async def delete_documents(conn: Conn, entry_id: str) -> None:
    await conn.execute("DELETE FROM published_documents WHERE entry_id = $1", entry_id)


async def published_entries_of_type(conn: Conn, type_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {ENTRY_COLUMNS} FROM entries WHERE type = $1 AND published_version IS NOT NULL", type_id
    )


async def all_published_entries(conn: Conn) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE published_version IS NOT NULL")


async def document(conn: Conn, type_id: str, locale: str, entry_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT entry_id, type, body, etag FROM published_documents WHERE entry_id = $1 AND locale = $2 AND type = $3",
        entry_id, locale, type_id,
    )


async def document_by_slug(conn: Conn, type_id: str, locale: str, slug: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT entry_id, type, body, etag FROM published_documents WHERE type = $1 AND locale = $2 AND slug = $3 "
        "ORDER BY published_at, entry_id LIMIT 1",
        type_id, locale, slug,
    )


async def documents_for(conn: Conn, ids: list[str], locale: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT entry_id, type, body, etag FROM published_documents WHERE entry_id = ANY($1::text[]) AND locale = $2",
        ids, locale,
    )


# --- reverse references (for re-rendering dependents) ------------------------------------------


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


# --- many rows at once (atomic bulk requests) ------------------------------------------------------


async def upsert_entries(conn: Conn, rows: list[tuple[Any, ...]]) -> None:
    """rows: (id, type, data, version, published_version, published_data, first_published_at,
    published_at, created_at, updated_at), inserted or replacing the existing row."""
    columns = list(zip(*rows, strict=True))
    await conn.execute(
        """INSERT INTO entries (id, type, data, version, published_version, published_data, first_published_at,
                                published_at, created_at, updated_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::int[], $5::int[], $6::jsonb[],
                                $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[])
           ON CONFLICT (id) DO UPDATE SET
               data = excluded.data, version = excluded.version, published_version = excluded.published_version,
               published_data = excluded.published_data, first_published_at = excluded.first_published_at,
               published_at = excluded.published_at, updated_at = excluded.updated_at""",
        *[list(c) for c in columns],
    )


async def insert_versions(conn: Conn, rows: list[tuple[str, int, dict[str, Any], str]], actor: dict[str, Any]) -> None:
    """rows: (entry id, version, data, action)."""
    await conn.execute(
        "INSERT INTO entry_versions (entry_id, version, data, action, actor) "
        "SELECT u.*, $5::jsonb FROM unnest($1::text[], $2::int[], $3::jsonb[], $4::text[]) AS u",
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], actor,
    )


async def replace_unique_values_many(
    conn: Conn, entry_ids: list[str], rows: list[tuple[str, str, str, str, str]]
) -> None:
    """rows: (type, field, locale, value, entry id) replacing every value of entry_ids."""
    await conn.execute("DELETE FROM entry_unique_values WHERE entry_id = ANY($1::text[])", entry_ids)
    if rows:
        await conn.execute(
            "INSERT INTO entry_unique_values (type, field, locale, value, entry_id) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])",
            *[list(c) for c in zip(*rows, strict=True)],
        )


async def replace_documents_many(conn: Conn, entry_ids: list[str], docs: list[tuple[Any, ...]]) -> None:
    """docs: (entry id, locale, type, version, slug, body, etag, vals, search_text, published_at,
    updated_at, created_at), replacing every document of entry_ids, in one statement."""
    columns: list[list[Any]] = [list(c) for c in zip(*docs, strict=True)] if docs else [[] for _ in range(12)]
    # The DELETE touches only rows the INSERT does not write (other entries' locales), so the two
    # parts of the statement never meet the same row.
    await conn.execute(
        """WITH u AS (
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::bytea[],
                                    $7::text[], $8::jsonb[], $9::text[], $10::timestamptz[], $11::timestamptz[],
                                    $12::timestamptz[])
                 AS u(entry_id, locale, type, version, slug, body, etag, vals, search, published_at, updated_at,
                      created_at)
           ), gone AS (
               DELETE FROM published_documents d WHERE d.entry_id = ANY($13::text[])
                  AND NOT EXISTS (SELECT 1 FROM u WHERE u.entry_id = d.entry_id AND u.locale = d.locale)
           )
           INSERT INTO published_documents
                 (entry_id, locale, type, version, slug, body, etag, vals, search, published_at, updated_at, created_at)
           SELECT u.entry_id, u.locale, u.type, u.version, u.slug, u.body, u.etag, u.vals,
                  to_tsvector('simple', u.search), u.published_at, u.updated_at, u.created_at FROM u
           ON CONFLICT (entry_id, locale) DO UPDATE SET
               type = excluded.type, version = excluded.version, slug = excluded.slug, body = excluded.body,
               etag = excluded.etag, vals = excluded.vals, search = excluded.search,
               published_at = excluded.published_at, updated_at = excluded.updated_at,
               created_at = excluded.created_at""",
        *columns, entry_ids,
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
