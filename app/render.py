"""THE place delivery JSON comes from.

A published (or, for preview, draft) entry becomes its ENTRY document here, for one locale:
fallback applied per field, references as links, assets resolved. The API, the prerendered
files on S3 and webhook payloads all call these functions, so they cannot drift apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from .schema.model import NON_LOCALIZED, SEARCHABLE_TYPES, ContentType, Field
from .times import iso

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


class Rendered(NamedTuple):
    locale: str
    body: bytes  # the ENTRY document
    etag: str
    vals: dict[str, Any]  # fallback-resolved stored values, for filters and sorts
    slug: str | None
    search_text: str


def field_value(field: Field, data: dict[str, Any], chain: list[str]) -> Any:
    """The stored value of one field in a locale: first present along the fallback chain."""
    per_locale = data.get(field.id)
    if not per_locale:
        return None
    if not field.localized:
        return per_locale.get(NON_LOCALIZED)
    for code in chain:
        if code in per_locale:
            return per_locale[code]
    return None


def asset_json(row: Any, assets_url: str) -> dict[str, Any]:
    return {
        "id": row["id"], "url": f"{assets_url}/assets/{row['id']}/{row['filename']}",
        "content_type": row["content_type"], "size": row["size"], "width": row["width"],
        "height": row["height"], "title": row["title"], "alt": row["alt"],
    }


def asset_ids(ct: ContentType, data: dict[str, Any]) -> set[str]:
    """Every asset id any locale of this entry points to (to fetch them in one query)."""
    found: set[str] = set()
    for field in ct.fields:
        if field.type != "asset":
            continue
        for value in (data.get(field.id) or {}).values():
            for link in value if isinstance(value, list) else [value]:
                if isinstance(link, dict) and "id" in link:
                    found.add(link["id"])
    return found


def _render_field(field: Field, value: Any, assets: dict[str, dict[str, Any]]) -> Any:
    if value is None:
        return [] if field.list else None
    if field.type == "asset":
        if field.list:
            return [assets.get(link["id"], {"id": link["id"]}) for link in value]
        return assets.get(value["id"], {"id": value["id"]})
    return value


def entry_document(
    *, entry_id: str, type_id: str, locale: str, version: int, created_at: datetime, updated_at: datetime,
    published_at: datetime | None, fields: dict[str, Any],
) -> dict[str, Any]:
    return {
        "id": entry_id, "type": type_id, "locale": locale, "version": version,
        "created_at": iso(created_at), "updated_at": iso(updated_at), "published_at": iso(published_at),
        "fields": fields,
    }


def render_entry(
    entry: Any, ct: ContentType, locale: str, chain: list[str], assets: dict[str, dict[str, Any]], *,
    draft: bool = False,
) -> Rendered:
    """One entry in one locale. `entry` is an entries row; draft=True renders the latest draft."""
    data = entry["data"] if draft else entry["published_data"]
    fields: dict[str, Any] = {}
    vals: dict[str, Any] = {}
    search: list[str] = []
    slug = None
    for field in ct.fields:
        value = field_value(field, data, chain)
        fields[field.id] = _render_field(field, value, assets)
        if value is not None:
            vals[field.id] = value
            if field.type in SEARCHABLE_TYPES and isinstance(value, str):
                search.append(value)
            if field.type == "slug" and slug is None:
                slug = value
    document = entry_document(
        entry_id=entry["id"], type_id=ct.id, locale=locale,
        version=entry["version"] if draft else entry["published_version"],
        created_at=entry["created_at"], updated_at=entry["updated_at"],
        published_at=entry["published_at"], fields=fields,
    )
    body = _encode(document)
    return Rendered(locale, body, etag_of(body), vals, slug, " ".join(search))


def etag_of(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=12).hexdigest()


class _StoredEntry(msgspec.Struct):
    """A stored ENTRY (the keys of `entry_document`, in its order) with its field values undecoded."""

    id: str
    type: str
    locale: str
    version: int
    created_at: str | None
    updated_at: str | None
    published_at: str | None
    fields: dict[str, msgspec.Raw]


_decode_stored = msgspec.json.Decoder(_StoredEntry).decode


class Spliced:
    """Including references one level deep (and selecting fields) on stored ENTRY bytes: the included
    entries' stored bytes are spliced in place of their links; nothing else is decoded or re-encoded.
    The bytes are those of `resolve_includes` on the decoded document (msgspec wrote all of them)."""

    def __init__(self, body: bytes, ct: ContentType, only: set[str] | None) -> None:
        self._entry = _decode_stored(body)
        # field id -> its decoded value, for the reference fields to include
        self._references = {
            f.id: _decode(self._entry.fields[f.id]) for f in ct.fields
            if f.type == "reference" and (only is None or f.id in only) and f.id in self._entry.fields
        }

    def linked_ids(self) -> list[str]:
        """The ids of the links to include, once per link (an entry linked twice is embedded twice)."""
        return [link["id"] for link in self._links()]

    def encode(self, found: dict[str, bytes], fields: list[str] | None) -> bytes:
        """The ENTRY with the links whose id is in `found` replaced by those stored ENTRY bytes."""
        spliced = dict(self._entry.fields)
        for field_id, value in self._references.items():
            items = value if isinstance(value, list) else [value]
            if not any(self._includable(link) and link["id"] in found for link in items):
                continue
            parts = [bytes(found[link["id"]]) if self._includable(link) and link["id"] in found else _encode(link)
                     for link in items]
            spliced[field_id] = msgspec.Raw(b"[" + b",".join(parts) + b"]" if isinstance(value, list) else parts[0])
        if fields is not None:
            spliced = {k: v for k, v in spliced.items() if k in fields}
        return _encode(msgspec.structs.replace(self._entry, fields=spliced))

    def _links(self) -> list[dict[str, Any]]:
        return [
            link for value in self._references.values()
            for link in (value if isinstance(value, list) else [value]) if self._includable(link)
        ]

    @staticmethod
    def _includable(link: Any) -> bool:
        return isinstance(link, dict) and "id" in link and "fields" not in link  # as `reference_links`


def envelope(document: bytes) -> bytes:
    """{"data": ENTRY} from stored ENTRY bytes, without decoding them."""
    return b'{"data":' + document + b"}"


def list_envelope(documents: Iterable[bytes], meta: dict[str, Any]) -> bytes:
    return b'{"data":[' + b",".join(documents) + b'],"meta":' + _encode(meta) + b"}"


def encode(value: Any) -> bytes:
    return _encode(value)


def decode(body: bytes) -> Any:
    return _decode(body)


def reference_links(document: dict[str, Any], ct: ContentType, only: set[str] | None) -> list[dict[str, Any]]:
    """Reference links in a rendered document's fields (those named in `only`, or all)."""
    links: list[dict[str, Any]] = []
    fields = document.get("fields") or {}
    for field in ct.fields:
        if field.type != "reference" or (only is not None and field.id not in only):
            continue
        value = fields.get(field.id)
        for link in value if isinstance(value, list) else [value]:
            if isinstance(link, dict) and "id" in link and "fields" not in link:
                links.append(link)
    return links


def resolve_includes(
    document: dict[str, Any], ct: ContentType, only: set[str] | None, resolved: dict[str, dict[str, Any]]
) -> None:
    """Replace reference links by the full documents found in `resolved` (in place)."""
    fields = document.get("fields") or {}
    for field in ct.fields:
        if field.type != "reference" or (only is not None and field.id not in only):
            continue
        value = fields.get(field.id)
        if isinstance(value, list):
            fields[field.id] = [resolved.get(link["id"], link) if isinstance(link, dict) else link for link in value]
        elif isinstance(value, dict) and value.get("id") in resolved:
            fields[field.id] = resolved[value["id"]]
