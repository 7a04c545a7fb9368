"""SQL for entries, their versions and unique values."""

from __future__ import annotations

from typing import Any

import asyncpg

from ..db.rows import Conn, returned

# `published_data` is stored only while it differs from `data` (the draft was edited after its
# publish); NULL with `published_version = version` means "the same as data". Most entries are
# published as they are: that halves their row. Readers go through PUBLISHED_DATA (ENTRY_COLUMNS).
PUBLISHED_DATA = "coalesce(published_data, CASE WHEN published_version = version THEN data END)"
# What an UPDATE that replaces `data` must keep of the published content (the old row's values).
KEEP_PUBLISHED_DATA = "CASE WHEN published_version = version THEN data ELSE published_data END"


def stored_published_data(value: str, versions_of: str = "") -> str:
    """What a write stores as published_data for the published content `value` (SQL): NULL when the
    row's versions (columns of `versions_of`, e.g. "u.") say it is the same as data."""
    return f"CASE WHEN {versions_of}published_version = {versions_of}version THEN NULL ELSE {value} END"
ENTRY_COLUMNS = (
    f"id, type, data, version, published_version, {PUBLISHED_DATA} AS published_data, first_published_at, "
    "published_at, created_at, updated_at"
)


async def get_entry(conn: Conn, entry_id: str) -> asyncpg.Record | None:
    """The entry, unlocked (a write locks it with `get_entry_for_write`)."""
    return await conn.fetchrow(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE id = $1", entry_id)


async def get_entry_for_write(conn: Conn, entry_id: str) -> asyncpg.Record | None:
    """The entry, locked, with the schema's version (migration 0026) and the database's oid: the key
    under which a write may reuse the type and the locales it parsed before."""
    return await conn.fetchrow(
        f"SELECT {ENTRY_COLUMNS}, (SELECT version FROM schema_version) AS schema_version, "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) AS database_oid "
        "FROM entries WHERE id = $1 FOR UPDATE",
        entry_id,
    )


async def get_entries(conn: Conn, ids: list[str], *, for_update: bool = False) -> list[asyncpg.Record]:
    """The entries among ids; for_update locks them, in id order (two lockers never deadlock)."""
    lock = " ORDER BY id FOR UPDATE" if for_update else ""
    return await conn.fetch(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE id = ANY($1::text[]){lock}", ids)


async def insert_entry(conn: Conn, entry_id: str, type_id: str, data: dict[str, Any]) -> asyncpg.Record:
    return returned(await conn.fetchrow(
        f"INSERT INTO entries (id, type, data, version) VALUES ($1, $2, $3, 1) RETURNING {ENTRY_COLUMNS}",
        entry_id, type_id, data,
    ))


async def update_entry_data(conn: Conn, entry_id: str, data: dict[str, Any]) -> asyncpg.Record:
    return returned(await conn.fetchrow(
        f"""UPDATE entries SET data = $2, version = version + 1, updated_at = now(),
                   published_data = {KEEP_PUBLISHED_DATA}
            WHERE id = $1 RETURNING {ENTRY_COLUMNS}""",
        entry_id, data,
    ))


async def mark_published(conn: Conn, entry_id: str) -> asyncpg.Record:
    return returned(await conn.fetchrow(
        f"""UPDATE entries SET published_version = version, published_data = NULL, published_at = now(),
                  first_published_at = coalesce(first_published_at, now())
            WHERE id = $1 RETURNING {ENTRY_COLUMNS}""",
        entry_id,
    ))


async def mark_unpublished(conn: Conn, entry_id: str) -> asyncpg.Record:
    return returned(await conn.fetchrow(
        f"""UPDATE entries SET published_version = NULL, published_data = NULL, published_at = NULL
            WHERE id = $1 RETURNING {ENTRY_COLUMNS}""",
        entry_id,
    ))


async def delete_entry(conn: Conn, entry_id: str) -> None:
    await delete_entries(conn, [entry_id])


async def delete_entries(conn: Conn, entry_ids: list[str]) -> None:
    await conn.execute("DELETE FROM entries WHERE id = ANY($1::text[])", entry_ids)


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


async def count_versions(conn: Conn, entry_id: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM entry_versions WHERE entry_id = $1", entry_id))


async def get_version(conn: Conn, entry_id: str, version: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT version, created_at, actor, action, data FROM entry_versions WHERE entry_id = $1 AND version = $2",
        entry_id, version,
    )


async def existing_ids(conn: Conn, ids: list[str]) -> dict[str, str]:
    rows = await conn.fetch("SELECT id, type FROM entries WHERE id = ANY($1::text[])", ids)
    return {r["id"]: r["type"] for r in rows}


# --- unique values -----------------------------------------------------------------------------


async def replace_unique_values(conn: Conn, entry_id: str, type_id: str, rows: list[tuple[str, str, str]]) -> None:
    await conn.execute("DELETE FROM entry_unique_values WHERE entry_id = $1", entry_id)
    if rows:
        await conn.executemany(
            "INSERT INTO entry_unique_values (type, field, locale, value, entry_id) VALUES ($1, $2, $3, $4, $5)",
            [(type_id, field, locale, value, entry_id) for field, locale, value in rows],
        )


async def registered_unique_values(conn: Conn, entry_id: str) -> list[tuple[str, str, str]]:
    """(field, locale, value) of the unique values registered for an entry."""
    rows = await conn.fetch("SELECT field, locale, value FROM entry_unique_values WHERE entry_id = $1", entry_id)
    return [(r["field"], r["locale"], r["value"]) for r in rows]


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


async def unique_values_taken(
    conn: Conn, values: list[tuple[str, str, str, str]], besides: list[str]
) -> list[asyncpg.Record]:
    """Which of these (type, field, locale, value) an entry not in `besides` holds."""
    return await conn.fetch(
        "SELECT v.type, v.field, v.locale, v.value FROM entry_unique_values v "
        "JOIN unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u(type, field, locale, value) "
        "ON v.type = u.type AND v.field = u.field AND v.locale = u.locale AND v.value = u.value "
        "WHERE NOT (v.entry_id = ANY($5::text[]))",
        [r[0] for r in values], [r[1] for r in values], [r[2] for r in values], [r[3] for r in values], besides,
    )


async def draft_with_slug(conn: Conn, type_id: str, slug: str, slots: list[str]) -> str | None:
    """The entry whose draft holds `slug` in one of these locale slots (the first by id)."""
    found: str | None = await conn.fetchval(
        "SELECT entry_id FROM entry_unique_values WHERE type = $1 AND value = $2 AND locale = ANY($3::text[]) "
        "ORDER BY entry_id LIMIT 1",
        type_id, slug, slots,
    )
    return found


async def slugs_like(conn: Conn, type_id: str, field: str, locale: str, base: str, entry_id: str) -> set[str]:
    rows = await conn.fetch(
        """SELECT value FROM entry_unique_values
           WHERE type = $1 AND field = $2 AND locale = $3 AND entry_id <> $5
             AND (value = $4 OR (value COLLATE "C" > $4 || '-' AND value COLLATE "C" < $4 || '.'))""",
        type_id, field, locale, base, entry_id,
    )
    return {r["value"] for r in rows}


# --- many rows at once (atomic bulk requests) ------------------------------------------------------


async def upsert_entries(conn: Conn, rows: list[tuple[Any, ...]]) -> None:
    """rows: (id, type, data, version, published_version, published_data, first_published_at,
    published_at, created_at, updated_at), inserted or replacing the existing row (published_data
    equal to data when published_version = version: stored as NULL)."""
    columns = list(zip(*rows, strict=True))
    await conn.execute(
        f"""INSERT INTO entries (id, type, data, version, published_version, published_data, first_published_at,
                                published_at, created_at, updated_at)
           SELECT u.id, u.type, u.data, u.version, u.published_version,
                  {stored_published_data("u.published_data", "u.")},
                  u.first_published_at, u.published_at, u.created_at, u.updated_at
             FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::int[], $5::int[], $6::jsonb[],
                         $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[])
                  AS u(id, type, data, version, published_version, published_data, first_published_at,
                       published_at, created_at, updated_at)
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

