"""The indexes an `indexed` field gets on published_documents (partial per type), shaped to match
the expressions DeliverySource filters and sorts by (sources.py)."""

from __future__ import annotations

import hashlib

import asyncpg

from ..schema.model import FIELD_ID, SORTABLE_TYPES, TYPE_ID, ContentType
from .parse import LIKE_TYPES
from .sources import ident


def _index_name(prefix: str, type_id: str, field_id: str) -> str:
    """`{prefix}_{type}_{field}` (validated ids), shortened with a digest to PostgreSQL's 63 bytes."""
    ident(type_id, TYPE_ID)
    ident(field_id, FIELD_ID)
    name = f"{prefix}_{type_id}_{field_id}"
    if len(name) > 63:
        digest = hashlib.sha256(f"{type_id}\x00{field_id}".encode()).hexdigest()[:12]
        name = f"{name[:50]}_{digest}"
    return name


def index_ddl(type_id: str, field_id: str) -> str:
    """CREATE INDEX for sorting/filtering delivery lists of `type_id` on `field_id` (matches DeliverySource)."""
    name = _index_name("pd_idx", type_id, field_id)
    return (
        f'CREATE INDEX IF NOT EXISTS "{name}" ON published_documents '
        f"(locale, (coalesce(vals->'{field_id}', 'null'::jsonb)), entry_id) WHERE type = '{type_id}'"
    )


def list_ddl(type_id: str, field_id: str) -> str:
    """CREATE INDEX for a list of references or assets: a GIN index serving the containment filter
    (`filter[tags][eq]=id`: `@>`). A btree over the whole list would also fail to publish a long
    list (an index row holds at most ~2.7 KB: about 125 references)."""
    name = _index_name("pd_gin", type_id, field_id)
    return (
        f'CREATE INDEX IF NOT EXISTS "{name}" ON published_documents '
        f"USING gin ((coalesce(vals->'{field_id}', 'null'::jsonb)) jsonb_path_ops) WHERE type = '{type_id}'"
    )


def newest_ddl(type_id: str, field_id: str) -> str:
    """CREATE INDEX for `filter[field][eq]` (or `in`) with the default order, newest first: the page
    is read in index order instead of sorting every match (`category = x`, latest 20)."""
    name = _index_name("pd_new", type_id, field_id)
    return (
        f'CREATE INDEX IF NOT EXISTS "{name}" ON published_documents '
        f"(locale, (coalesce(vals->'{field_id}', 'null'::jsonb)), published_at DESC, entry_id DESC)"
        f" WHERE type = '{type_id}'"
    )


def trigram_ddl(type_id: str, field_id: str) -> str:
    """CREATE INDEX (pg_trgm) serving `contains`/`startswith` on an indexed text field of delivery
    lists (the expression of DeliverySource.text)."""
    name = _index_name("pd_trgm", type_id, field_id)
    return (
        f'CREATE INDEX IF NOT EXISTS "{name}" ON published_documents '
        f"USING gin ((vals->>'{field_id}') gin_trgm_ops) WHERE type = '{type_id}'"
    )


def values_trigram_ddl(type_id: str, field_id: str) -> str:
    """CREATE INDEX (pg_trgm) on published_values serving the total of a `contains`/`startswith`
    list (query/sql.py _counted_by_values): its narrow rows hold many matches a page, where the
    documents hold two (the expression of ValuesSource's text condition)."""
    name = _index_name("pv_trgm", type_id, field_id)
    return (
        f'CREATE INDEX IF NOT EXISTS "{name}" ON published_values '
        f"USING gin ((value #>> '{{}}') gin_trgm_ops) WHERE type = '{type_id}' AND field = '{field_id}'"
    )


def field_index_ddl(
    type_id: str, field_id: str, field_type: str, trigrams: bool, *, counted: bool = False, many: bool = False,
) -> list[str]:
    """Every index an `indexed` field gets: value order, newest first for a scalar (references
    filter by ->>'id'), and with pg_trgm trigram indexes for text (documents; published_values
    for a `counted` scalar); a list (`many`): one GIN index."""
    if many:
        return [list_ddl(type_id, field_id)]
    ddl = [index_ddl(type_id, field_id)]
    if field_type in SORTABLE_TYPES:
        ddl.append(newest_ddl(type_id, field_id))
    if trigrams and field_type in LIKE_TYPES:
        ddl.append(trigram_ddl(type_id, field_id))
        if counted:
            ddl.append(values_trigram_ddl(type_id, field_id))
    return ddl


async def ensure_indexes(conn: asyncpg.Connection, ct: ContentType, *, concurrently: bool) -> list[str]:
    """Create the indexes of `ct`'s indexed fields that do not exist yet; returns their names.

    `concurrently`: without a transaction and without blocking writes to published_documents (a
    schema change of a big site builds them in the background); an index a failed earlier attempt
    left invalid is dropped and built again. A btree over a whole list (list fields had one before
    list_ddl; a single reference made a list keeps its own) is dropped: it would refuse long lists."""
    lists = [_index_name("pd_idx", ct.id, f.id) for f in ct.fields if f.list]
    if lists:
        for row in await conn.fetch("SELECT relname FROM pg_class WHERE relkind = 'i' AND relname = ANY($1::text[])", lists):
            drop = "DROP INDEX CONCURRENTLY IF EXISTS" if concurrently else "DROP INDEX IF EXISTS"
            await conn.execute(f'{drop} "{row["relname"]}"')
    if not any(f.indexed for f in ct.fields):
        return []
    trigrams = bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm')"))
    built = []
    for field in ct.fields:
        if not field.indexed:
            continue
        for ddl in field_index_ddl(ct.id, field.id, field.type, trigrams, counted=field.counted, many=field.list):
            name = ddl.split('"')[1]
            valid = await conn.fetchval(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1", name,
            )
            if valid:
                continue
            if concurrently:
                # Scans the whole table and waits for older transactions: no statement or lock time
                # limit of the pool applies (RESET: back to the connection's own defaults).
                await conn.execute("SET statement_timeout = 0; SET lock_timeout = 0")
                try:
                    if valid is False:
                        await conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
                    await conn.execute(
                        ddl.replace("CREATE INDEX IF NOT EXISTS", "CREATE INDEX CONCURRENTLY IF NOT EXISTS", 1))
                finally:
                    await conn.execute("RESET statement_timeout; RESET lock_timeout")
            else:
                await conn.execute(ddl)
            built.append(name)
    return built
