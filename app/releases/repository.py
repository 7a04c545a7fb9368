"""SQL for releases and their entries."""

from __future__ import annotations

import asyncpg

from ..db.rows import Conn, returned
from ..schema.model import RESOURCE_ID


async def get_release(conn: Conn, release_id: str, *, for_update: bool = False) -> asyncpg.Record | None:
    if not RESOURCE_ID.fullmatch(release_id):
        return None
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM releases WHERE id = $1{lock}", release_id)


async def release_entries(conn: Conn, release_ids: list[str]) -> dict[str, list[dict[str, str]]]:
    rows = await conn.fetch(
        "SELECT release_id, type, entry_id FROM release_entries WHERE release_id = ANY($1::text[]) "
        "ORDER BY release_id, position",
        release_ids,
    )
    out: dict[str, list[dict[str, str]]] = {rid: [] for rid in release_ids}
    for row in rows:
        out[row["release_id"]].append({"type": row["type"], "id": row["entry_id"]})
    return out


async def replace_entries(conn: Conn, release_id: str, entries: list[dict[str, str]]) -> None:
    await conn.execute("DELETE FROM release_entries WHERE release_id = $1", release_id)
    if entries:
        await conn.execute(
            """INSERT INTO release_entries (release_id, position, type, entry_id)
               SELECT $1, p.position - 1, p.type, p.entry_id
               FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS p(type, entry_id, position)""",
            release_id, [e["type"] for e in entries], [e["id"] for e in entries],
        )


def visible_to(release_id: str, param: int) -> str:
    """SQL: the release `release_id` (a column) has only entries of the types in `$param` (NULL:
    any type); schedules use it too."""
    return (
        f"(${param}::text[] IS NULL OR NOT EXISTS (SELECT 1 FROM release_entries AS re "
        f"WHERE re.release_id = {release_id} AND NOT (re.type = ANY(${param}::text[]))))"
    )


async def list_releases(conn: Conn, after: str | None, limit: int, allowed: list[str] | None) -> list[asyncpg.Record]:
    """A page by id; `allowed`: only the releases whose entries are all of these types (None: all)."""
    return await conn.fetch(
        f"SELECT * FROM releases AS r WHERE ($1::text IS NULL OR id > $1) AND {visible_to('r.id', 3)} "
        "ORDER BY id LIMIT $2",
        after, limit, allowed,
    )


async def count_releases(conn: Conn, allowed: list[str] | None) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM releases AS r WHERE {visible_to('r.id', 1)}", allowed))


async def insert_release(conn: Conn, release_id: str, title: str) -> asyncpg.Record:
    return returned(await conn.fetchrow("INSERT INTO releases (id, title) VALUES ($1, $2) RETURNING *", release_id, title))


async def update_title(conn: Conn, release_id: str, title: str) -> asyncpg.Record:
    return returned(await conn.fetchrow(
        "UPDATE releases SET title = $2, version = version + 1, updated_at = now() WHERE id = $1 RETURNING *",
        release_id, title,
    ))


async def mark_published(conn: Conn, release_id: str) -> asyncpg.Record:
    return returned(await conn.fetchrow(
        """UPDATE releases SET status = 'published', published_at = now(), version = version + 1,
                  updated_at = now()
           WHERE id = $1 RETURNING *""",
        release_id,
    ))


async def delete_release(conn: Conn, release_id: str) -> None:
    await conn.execute("DELETE FROM releases WHERE id = $1", release_id)


async def pending_actions(conn: Conn, release_id: str) -> int:
    """Pending scheduled actions that would publish the release."""
    return int(await conn.fetchval(
        "SELECT count(*) FROM scheduled_actions WHERE release_id = $1 AND status = 'pending'", release_id
    ))
