"""The indexes an `indexed` field gets on published_documents (partial per type), shaped to match
the expressions DeliverySource filters and sorts by (sql.py)."""

from __future__ import annotations

import hashlib

from ..schema.model import FIELD_ID, TYPE_ID
from .sql import ident


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
