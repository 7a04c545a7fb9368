"""Where a list's rows come from, as SQL: published documents (`DeliverySource`), drafts
(`DraftSource`), the indexed values of published documents (`ValuesSource`), and the bind
parameters (`Params`). Field ids, type ids and locale codes are the only things inlined into SQL
text, each checked by `ident` right where it is inlined.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from ..problems import malformed
from ..schema.model import (
    BULKY_TYPES,
    FIELD_ID,
    LOCALE_CODE,
    SEARCHABLE_TYPES,
    TYPE_ID,
    ContentType,
    Field,
)
from .parse import SYSTEM_TIMESTAMPS, ListQuery

_encode = msgspec.json.Encoder().encode


def ident(value: str, pattern: re.Pattern[str]) -> str:
    """A validated identifier, safe to inline between single quotes."""
    if not pattern.fullmatch(value) or "'" in value:
        raise ValueError(f"refusing to inline {value!r} into SQL")
    return value


class Source:
    """Where rows come from and how field values read as SQL expressions."""

    table: str
    alias: str
    inner_alias = "r"

    def scope(self, query: ListQuery, params: Params) -> list[str]:
        raise NotImplementedError

    def value(self, field: Field, alias: str | None = None) -> str:
        """jsonb expression of `field`'s value; 'null'::jsonb when there is none (never SQL NULL)."""
        raise NotImplementedError

    def id_column(self, alias: str | None = None) -> str:
        raise NotImplementedError

    def system(self, name: str, alias: str | None = None) -> str:
        """The column of system field `name` (id or a timestamp) as used in filters."""
        alias = alias or self.alias
        if name == "id":
            return self.id_column(alias)
        if name not in SYSTEM_TIMESTAMPS:
            raise ValueError(f"unknown system field {name!r}")
        return f"{alias}.{name}"

    def system_sort(self, name: str) -> str:
        """The expression ordered by for a system timestamp; must never be SQL NULL."""
        return self.system(name)

    def search_match(self, ct: ContentType, q_ref: str) -> str:
        raise NotImplementedError

    def rank(self, ct: ContentType, q_ref: str) -> str:
        raise NotImplementedError

    def referenced(self, id_condition: Callable[[str], str], by_type: str) -> str:
        """EXISTS over referenced rows (inner alias `r`) matching `id_condition(r's id column)`."""
        raise NotImplementedError

    def status(self, status: str) -> str:
        raise malformed("status", "is not available here")

    def counted(self, query: ListQuery, params: Params) -> str:
        """SQL of the exact number of the type's rows in scope (no filter), from list_counts."""
        raise NotImplementedError

    def text(self, field: Field, alias: str | None = None) -> str | None:
        """A text expression of a string field that trigram indexes serve (None: none here)."""
        return None


class DeliverySource(Source):
    """Published content: `published_documents d`, fallback-resolved values in `d.vals`."""

    table = "published_documents"
    alias = "d"

    def scope(self, query: ListQuery, params: Params) -> list[str]:
        # The type is inlined so partial indexes (`WHERE type = '…'`) of indexes.py are usable.
        return [f"d.type = '{ident(query.type_id, TYPE_ID)}'", f"d.locale = {params.add(query.locale)}::text"]

    def value(self, field: Field, alias: str | None = None) -> str:
        a, f = alias or self.alias, ident(field.id, FIELD_ID)
        if field.type in BULKY_TYPES:  # long values live in `bulky` (documents rendered before 0015: in vals)
            return f"coalesce({a}.bulky->'{f}', {a}.vals->'{f}', 'null'::jsonb)"
        return f"coalesce({a}.vals->'{f}', 'null'::jsonb)"

    def id_column(self, alias: str | None = None) -> str:
        return f"{alias or self.alias}.entry_id"

    def counted(self, query: ListQuery, params: Params) -> str:
        return (
            "SELECT coalesce(sum(n), 0)::bigint FROM list_counts WHERE kind = 'published'"
            f" AND type = '{ident(query.type_id, TYPE_ID)}' AND locale = {params.add(query.locale)}::text"
        )

    def text(self, field: Field, alias: str | None = None) -> str | None:
        # The expression of indexes.py's trigram index: NULL unless the value is there.
        if field.type in BULKY_TYPES:
            return None  # never trigram-indexed; read through value()
        return f"({alias or self.alias}.vals->>'{ident(field.id, FIELD_ID)}')"

    def search_match(self, ct: ContentType, q_ref: str) -> str:
        return f"d.search @@ websearch_to_tsquery('simple', {q_ref}::text)"

    def rank(self, ct: ContentType, q_ref: str) -> str:
        return f"ts_rank(d.search, websearch_to_tsquery('simple', {q_ref}::text))"

    def referenced(self, id_condition: Callable[[str], str], by_type: str) -> str:
        return (
            f"EXISTS (SELECT 1 FROM published_documents r WHERE {id_condition('r.entry_id')}"  # noqa: S608
            f" AND r.locale = d.locale AND ({by_type}))"
        )


class DraftSource(Source):
    """Latest drafts: `entries e`; localized values fall back along `chain` (locale codes, first wins)."""

    table = "entries"
    alias = "e"

    def __init__(self, chain: list[str]) -> None:
        if not chain:
            raise ValueError("a locale fallback chain needs at least one locale")
        self.chain = [ident(code, LOCALE_CODE) for code in chain]

    def scope(self, query: ListQuery, params: Params) -> list[str]:
        return [f"e.type = '{ident(query.type_id, TYPE_ID)}'"]

    def value(self, field: Field, alias: str | None = None) -> str:
        base = f"{alias or self.alias}.data->'{ident(field.id, FIELD_ID)}'"
        if not field.localized:
            return f"coalesce({base}->'_', 'null'::jsonb)"
        parts = [f"{base}->'{code}'" for code in self.chain]
        return f"coalesce({', '.join(parts)}, 'null'::jsonb)"

    def id_column(self, alias: str | None = None) -> str:
        return f"{alias or self.alias}.id"

    def counted(self, query: ListQuery, params: Params) -> str:
        return (
            "SELECT coalesce(sum(n), 0)::bigint FROM list_counts WHERE kind = 'entries'"
            f" AND type = '{ident(query.type_id, TYPE_ID)}' AND locale = ''"
        )

    def system_sort(self, name: str) -> str:
        if name == "published_at":  # never-published drafts sort lowest, like fields with no value
            return "coalesce(e.published_at, '-infinity'::timestamptz)"
        return self.system(name)

    def _vector(self, ct: ContentType) -> str:
        texts = [f"({self.value(f)}) #>> '{{}}'" for f in ct.fields if f.type in SEARCHABLE_TYPES] or ["''"]
        return f"to_tsvector('simple', concat_ws(' ', {', '.join(texts)}))"

    def search_match(self, ct: ContentType, q_ref: str) -> str:
        return f"{self._vector(ct)} @@ websearch_to_tsquery('simple', {q_ref}::text)"

    def rank(self, ct: ContentType, q_ref: str) -> str:
        return f"ts_rank({self._vector(ct)}, websearch_to_tsquery('simple', {q_ref}::text))"

    def referenced(self, id_condition: Callable[[str], str], by_type: str) -> str:
        return f"EXISTS (SELECT 1 FROM entries r WHERE {id_condition('r.id')} AND ({by_type}))"  # noqa: S608

    def status(self, status: str) -> str:
        return {
            "draft": "e.published_version IS NULL",
            "published": "e.published_version IS NOT NULL AND e.published_version = e.version",
            "changed": "e.published_version IS NOT NULL AND e.published_version <> e.version",
        }[status]


# ---------------------------------------------------------------------------------------------------
# SQL building


class Params:
    """Bind parameters: add() returns the `$n` placeholder."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"

    def json(self, value: Any) -> str:
        return f"{self.add(_encode(value).decode())}::text::jsonb"

    def json_list(self, values: list[Any]) -> str:
        return f"{self.add([_encode(v).decode() for v in values])}::text[]::jsonb[]"


class ValuesSource(Source):
    """published_values (migration 0014): one row per published document and counted field."""

    table = "published_values"
    alias = "v"

    def value(self, field: Field, alias: str | None = None) -> str:
        return f"{alias or self.alias}.value"
