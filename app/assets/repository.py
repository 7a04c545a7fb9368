"""SQL for assets (uploads are to come; entries link to asset rows already)."""

from __future__ import annotations

import asyncpg

from ..db.rows import Conn


async def existing_asset_ids(conn: Conn, ids: list[str]) -> set[str]:
    rows = await conn.fetch("SELECT id FROM assets WHERE id = ANY($1::text[])", ids)
    return {r["id"] for r in rows}


async def get_assets(conn: Conn, ids: list[str]) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM assets WHERE id = ANY($1::text[])", ids)
