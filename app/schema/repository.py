"""SQL for content types and locales."""

from __future__ import annotations

from typing import Any

import asyncpg

from ..db.rows import Conn, returned

# --- content types -----------------------------------------------------------------------------


async def all_types(conn: Conn) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM content_types ORDER BY id")


async def get_type(conn: Conn, type_id: str, *, for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM content_types WHERE id = $1{lock}", type_id)


async def insert_type(conn: Conn, type_id: str, body: dict[str, Any]) -> asyncpg.Record:
    return returned(await conn.fetchrow(
        """INSERT INTO content_types (id, name, description, display_field, fields)
           VALUES ($1, $2, $3, $4, $5) RETURNING *""",
        type_id, body["name"], body["description"], body["display_field"], body["fields"],
    ))


async def update_type(conn: Conn, type_id: str, body: dict[str, Any]) -> asyncpg.Record:
    return returned(await conn.fetchrow(
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
    return returned(row), bool(returned(row)["created"])


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


# --- what a content type change does to its entries -----------------------------------------------


async def entry_values_of_type(conn: Conn, type_id: str, *, for_update: bool = False) -> list[asyncpg.Record]:
    """id, data and published_data of every entry of the type."""
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetch(f"SELECT id, data, published_data FROM entries WHERE type = $1{lock}", type_id)


async def set_entry_values(
    conn: Conn, entry_id: str, data: dict[str, Any] | None, published_data: dict[str, Any] | None
) -> None:
    await conn.execute("UPDATE entries SET data = $2, published_data = $3 WHERE id = $1", entry_id, data, published_data)


async def drop_unique_values(conn: Conn, type_id: str, field_ids: list[str]) -> None:
    await conn.execute("DELETE FROM entry_unique_values WHERE type = $1 AND field = ANY($2::text[])", type_id, field_ids)
