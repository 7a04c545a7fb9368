"""SQL for content types and locales."""

from __future__ import annotations

from typing import Any

import asyncpg

from ..db.rows import Conn, returned
from ..entries.repository import stored_published_data

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



# --- what a content type change does to its entries -----------------------------------------------


async def set_entry_values(
    conn: Conn, entry_id: str, data: dict[str, Any] | None, published_data: dict[str, Any] | None
) -> None:
    await conn.execute(
        f"UPDATE entries SET data = $2, published_data = {stored_published_data('$3::jsonb')} WHERE id = $1",
        entry_id, data, published_data,
    )


# --- background re-renders after a schema change (app/schema/rerenders.py) ------------------------


async def render_mark(conn: Conn) -> int:
    """The render number sequence's position now (a schema change's `render_mark`: migration 0018)."""
    return int(await conn.fetchval("SELECT last_value FROM published_documents_render_seq"))


async def schedule_rerender(
    conn: Conn, type_id: str, type_version: int, reason: str, removed: list[str], dropped_locales: list[str],
    phase: str = "entries", mark: int = 0, changed: int = 0,
) -> None:
    """Start (or restart from the first entry, or at `phase`) the type's re-render. What an unfinished
    one still had to drop stays to be dropped. mark, changed: migration 0018 (a restart keeps the
    earlier mark and adds to what an unfinished one changed)."""
    await conn.execute(
        """INSERT INTO schema_rerenders AS r (type, type_version, reason, removed_fields, dropped_locales, total, phase,
                                             render_mark, changed)
           VALUES ($1, $2, $3, $4, $5, (SELECT coalesce(sum(n), 0) FROM list_counts
                                         WHERE kind = 'entries' AND type = $1 AND locale = ''), $6, $7, $8)
           ON CONFLICT (type) DO UPDATE SET
               type_version = excluded.type_version, generation = r.generation + 1, reason = excluded.reason,
               removed_fields = ARRAY(SELECT DISTINCT f FROM unnest(
                   CASE WHEN r.finished_at IS NULL THEN r.removed_fields ELSE '{}' END || excluded.removed_fields) f),
               dropped_locales = ARRAY(SELECT DISTINCT c FROM unnest(
                   CASE WHEN r.finished_at IS NULL THEN r.dropped_locales ELSE '{}' END || excluded.dropped_locales) c),
               phase = excluded.phase, cursor = '', done = 0, total = excluded.total, dependents = 0,
               attempts = 0, last_error = NULL, failed_at = NULL,
               render_mark = CASE WHEN r.finished_at IS NULL THEN least(r.render_mark, excluded.render_mark)
                                  ELSE excluded.render_mark END,
               changed = CASE WHEN r.finished_at IS NULL THEN r.changed ELSE 0 END + excluded.changed,
               started_at = now(), updated_at = now(), finished_at = NULL""",
        type_id, type_version, reason, removed, dropped_locales, phase, mark, changed,
    )


async def get_rerender(conn: Conn, type_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM schema_rerenders WHERE type = $1", type_id)


async def unfinished_rerenders(conn: Conn, idle_seconds: float = 0.0) -> list[str]:
    """Types whose re-render is unfinished, not leased, and untouched for `idle_seconds`."""
    rows = await conn.fetch(
        """SELECT type FROM schema_rerenders
            WHERE finished_at IS NULL AND failed_at IS NULL AND (lease_until IS NULL OR lease_until < now())
              AND updated_at <= now() - make_interval(secs => $1) ORDER BY updated_at""",
        idle_seconds,
    )
    return [r["type"] for r in rows]


async def claim_rerender(conn: Conn, type_id: str, token: str, lease_seconds: float) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """UPDATE schema_rerenders SET lease_until = now() + make_interval(secs => $3), lease_token = $2
            WHERE type = $1 AND finished_at IS NULL AND failed_at IS NULL
              AND (lease_until IS NULL OR lease_until < now())
        RETURNING *""",
        type_id, token, lease_seconds,
    )


async def advance_rerender(
    conn: Conn, job: Any, token: str, phase: str, cursor: str, done: int, dependents: int, changed: int = 0,
) -> bool:
    """Record a batch as done, unless the type changed again meanwhile (its generation moved on) or
    the lease was lost; True when recorded."""
    status = await conn.execute(
        """UPDATE schema_rerenders SET phase = $4, cursor = $5, done = done + $6, dependents = dependents + $7,
                  changed = changed + $8, attempts = 0, last_error = NULL, updated_at = now()
            WHERE type = $1 AND generation = $2 AND lease_token = $3""",
        job["type"], job["generation"], token, phase, cursor, done, dependents, changed,
    )
    return status.endswith(" 1")


async def finish_rerender(conn: Conn, job: Any, token: str) -> bool:
    status = await conn.execute(
        """UPDATE schema_rerenders SET phase = 'done', finished_at = now(), updated_at = now(),
                  removed_fields = '{}', dropped_locales = '{}', lease_until = NULL, lease_token = NULL
            WHERE type = $1 AND generation = $2 AND lease_token = $3""",
        job["type"], job["generation"], token,
    )
    return status.endswith(" 1")


async def release_rerender(conn: Conn, type_id: str, token: str) -> None:
    await conn.execute(
        "UPDATE schema_rerenders SET lease_until = NULL, lease_token = NULL WHERE type = $1 AND lease_token = $2",
        type_id, token,
    )


async def current_generation(conn: Conn, type_id: str) -> int | None:
    return await conn.fetchval("SELECT generation FROM schema_rerenders WHERE type = $1", type_id)  # type: ignore[no-any-return]


async def entry_ids_after(conn: Conn, type_id: str, after: str, limit: int) -> list[str]:
    """The ids of the type's next `limit` entries in id order."""
    rows = await conn.fetch("SELECT id FROM entries WHERE type = $1 AND id > $2 ORDER BY id LIMIT $3", type_id, after, limit)
    return [r["id"] for r in rows]


async def entries_between(conn: Conn, type_id: str, first: str, last: str) -> list[asyncpg.Record]:
    """The type's entries with ids from first to last, locked for the caller's transaction (id order)."""
    from ..entries.repository import ENTRY_COLUMNS

    return await conn.fetch(
        f"SELECT {ENTRY_COLUMNS} FROM entries WHERE type = $1 AND id >= $2 AND id <= $3 ORDER BY id FOR UPDATE",
        type_id, first, last,
    )


async def set_entry_values_many(conn: Conn, rows: list[tuple[str, Any, Any]]) -> None:
    """(id, data, published_data) of many entries, in one statement (published_data is not stored
    while it is the same as data: entries/repository.PUBLISHED_DATA)."""
    await conn.execute(
        f"""UPDATE entries e SET data = u.data,
                  published_data = {stored_published_data("u.published_data", "e.")}
             FROM unnest($1::text[], $2::jsonb[], $3::jsonb[]) AS u(id, data, published_data)
            WHERE e.id = u.id""",
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
    )


async def dependents_after(conn: Conn, type_id: str, after: str, limit: int) -> list[asyncpg.Record]:
    """Published entries that reference an entry of `type_id` (their files include it), in id order
    after `after`: of other types, and of the type itself (an entry's file written in an early batch
    includes an entry a later batch re-rendered)."""
    # Walks the references in source order from the cursor (their primary key) and stops at `limit`:
    # a batch costs what it returns, not what the whole reference table holds.
    return await conn.fetch(
        """SELECT DISTINCT ON (r.source_id) r.source_id AS id, s.type FROM entry_references r
             JOIN entries t ON t.id = r.target_id AND t.type = $1
             JOIN entries s ON s.id = r.source_id AND s.published_version IS NOT NULL
            WHERE r.source_id > $2
            ORDER BY r.source_id LIMIT $3""",
        type_id, after, limit,
    )


async def drop_stale_unique_values(conn: Conn, type_id: str, removed: list[str], locales: list[str]) -> None:
    """Unique values of fields the type no longer has, or of locales that are gone."""
    await conn.execute(
        """DELETE FROM entry_unique_values
            WHERE type = $1 AND (field = ANY($2::text[]) OR NOT (locale = ANY($3::text[])))""",
        type_id, removed, [*locales, "_"],
    )


async def count_entries_fast(conn: Conn, type_id: str) -> int:
    """The type's entries from list_counts (kept by triggers): O(1) of the entry count."""
    return int(await conn.fetchval(
        "SELECT coalesce(sum(n), 0) FROM list_counts WHERE kind = 'entries' AND type = $1 AND locale = ''", type_id,
    ))


async def entry_rows_of_type(conn: Conn, type_id: str) -> list[asyncpg.Record]:
    """Every entry of a (small) type, locked: a schema change re-renders them in its request."""
    from ..entries.repository import ENTRY_COLUMNS

    return await conn.fetch(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE type = $1 ORDER BY id FOR UPDATE", type_id)


# A draft value `v.value` as entry_unique_values stores it (schema/values.py values_equal_for_unique).
_UNIQUE_TEXT = """CASE jsonb_typeof(v.value) WHEN 'string' THEN v.value #>> '{}'
                       WHEN 'number' THEN trim_scale(v.value::numeric)::text ELSE v.value::text END"""


def _values_in_shape(localized: bool | None) -> str:
    """A field's per-locale values (`e.data -> $2`) in the shape a `localized` flip gives them, as
    entries/rules.conform moves them ($3: the default locale); None: as stored."""
    if localized is None:
        return "e.data -> $2"
    if localized:  # `_` becomes the default locale
        return "CASE WHEN e.data -> $2 ? '_' THEN jsonb_build_object($3::text, e.data -> $2 -> '_') ELSE e.data -> $2 END"
    # the default locale's value (else the first one) becomes `_`
    return (
        "CASE WHEN e.data -> $2 ? '_' THEN e.data -> $2 ELSE jsonb_build_object('_', coalesce(e.data -> $2 -> $3::text,"
        " (SELECT f.value FROM jsonb_each(e.data -> $2) AS f LIMIT 1))) END"
    )


def _values_of_field(localized: bool | None) -> str:
    """FROM … WHERE of every entry's values of field $2 in type $1, one row `v(locale, value)` each."""
    return (
        f"FROM entries e, jsonb_each({_values_in_shape(localized)}) AS v(locale, value)"
        " WHERE e.type = $1 AND e.data ? $2"
    )


def _shape_args(localized: bool | None, default_locale: str | None) -> list[Any]:
    return [] if localized is None else [default_locale]


async def entries_sharing_values(
    conn: Conn, type_id: str, field_id: str, *, localized: bool | None = None, default_locale: str | None = None,
    longer_than: int | None = None,
) -> set[str]:
    """Entries whose value of `field_id` (in one locale, draft) another entry of the type has too,
    compared as entry_unique_values stores them (values_equal_for_unique); with `localized`, in the
    shape that flip gives the values. With `longer_than`, also the entries with a longer text value
    (in the same pass)."""
    args: list[Any] = [type_id, field_id, *_shape_args(localized, default_locale)]
    having = "count(DISTINCT e.id) > 1"
    if longer_than is not None:
        args.append(longer_than)
        having += f" OR max(length({_UNIQUE_TEXT})) > ${len(args)}"
    rows = await conn.fetch(
        f"""SELECT unnest(array_agg(DISTINCT e.id)) AS id {_values_of_field(localized)}
             GROUP BY v.locale, {_UNIQUE_TEXT}
            HAVING {having}""",  # noqa: S608 (constants)
        *args,
    )
    return {r["id"] for r in rows}


async def register_unique_values(
    conn: Conn, type_id: str, field_id: str, *, localized: bool | None = None, default_locale: str | None = None,
) -> None:
    """The values entries already have of a field made unique (or changed while unique, or whose
    `localized` flipped: then in the new shape), so the next entry with one of them is refused at
    once: one statement, after entries_sharing_values found none shared."""
    await conn.execute("DELETE FROM entry_unique_values WHERE type = $1 AND field = $2", type_id, field_id)
    await conn.execute(
        f"""INSERT INTO entry_unique_values (type, field, locale, value, entry_id)
            SELECT $1, $2, v.locale, {_UNIQUE_TEXT}, e.id {_values_of_field(localized)}
            ON CONFLICT DO NOTHING""",  # noqa: S608 (constants)
        type_id, field_id, *_shape_args(localized, default_locale),
    )


async def renew_rerender(conn: Conn, type_id: str, token: str, lease_seconds: float) -> None:
    await conn.execute(
        "UPDATE schema_rerenders SET lease_until = now() + make_interval(secs => $3) WHERE type = $1 AND lease_token = $2",
        type_id, token, lease_seconds,
    )


async def rerender_failed(
    conn: Conn, job: Any, token: str, error: str, retry_in: float, max_attempts: int,
) -> bool:
    """A batch failed: retried after `retry_in` seconds (the lease doubles as the not-before time),
    or, after `max_attempts`, left failed (visible on the type; the next change starts it again).
    True when it failed for good."""
    failed = await conn.fetchval(
        """UPDATE schema_rerenders SET attempts = attempts + 1, last_error = $4, updated_at = now(),
                  lease_until = now() + make_interval(secs => $5), lease_token = NULL,
                  failed_at = CASE WHEN attempts + 1 >= $6 THEN now() END
            WHERE type = $1 AND generation = $2 AND lease_token = $3
        RETURNING failed_at IS NOT NULL""",
        job["type"], job["generation"], token, error[:1000], retry_in, max_attempts,
    )
    return bool(failed)


# --- indexed fields whose values published_values holds (migration 0014) -------------------------


async def sync_counted_fields(conn: Conn, type_id: str, fields: list[str], changed: list[str], ready: bool) -> None:
    """The type's counted fields are `fields`; those in `changed` (new, or their definition changed)
    are `ready` only if every published document is (re)written before this commits."""
    await conn.execute("DELETE FROM indexed_fields WHERE type = $1 AND NOT (field = ANY($2::text[]))", type_id, fields)
    await conn.execute(
        """INSERT INTO indexed_fields AS i (type, field, ready)
           SELECT $1, f, $3 OR NOT (f = ANY($4::text[])) FROM unnest($2::text[]) f
           ON CONFLICT (type, field) DO UPDATE SET ready = CASE WHEN i.field = ANY($4::text[]) THEN $3 ELSE i.ready END""",
        type_id, fields, ready, changed,
    )


async def counted_fields_ready(conn: Conn, type_id: str) -> None:
    """Every published document of the type has been rewritten: its counted fields' values are
    complete; values of fields no longer counted go."""
    await conn.execute("UPDATE indexed_fields SET ready = true WHERE type = $1 AND NOT ready", type_id)
    await conn.execute(
        """DELETE FROM published_values WHERE type = $1
              AND NOT (field = ANY(ARRAY(SELECT field FROM indexed_fields WHERE type = $1)))""",
        type_id,
    )


async def prune_value_counts(conn: asyncpg.Connection, batch: int) -> int:
    """Delete the value_counts rows of up to `batch` keys whose shards add up to 0 (migration 0022:
    values no longer published, e.g. a renamed category); returns how many rows.

    A value is often added on one backend's shard and removed on another's (+1 and -1), so rows are
    deleted by key: the key's rows are locked (rows a writer holds are skipped) and deleted only if
    the locked ones add up to 0, so the total never changes. Locked rows cannot move, so their ctids
    stay valid until the delete."""
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT ctid, type, field, locale, key, n FROM value_counts
                WHERE (type, field, locale, key) IN (
                      SELECT type, field, locale, key FROM value_counts GROUP BY 1, 2, 3, 4 HAVING sum(n) = 0 LIMIT $1)
                ORDER BY type, field, locale, key, shard
                  FOR UPDATE SKIP LOCKED""",
            batch,
        )
        sums: dict[tuple[Any, ...], int] = {}
        for row in rows:
            key = (row["type"], row["field"], row["locale"], row["key"])
            sums[key] = sums.get(key, 0) + row["n"]
        gone = [row["ctid"] for row in rows if sums[(row["type"], row["field"], row["locale"], row["key"])] == 0]
        if gone:
            await conn.execute("DELETE FROM value_counts WHERE ctid = ANY($1::tid[])", gone)
    return len(gone)
