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

from .schema.model import (
    BULKY_TYPES,
    NON_LOCALIZED,
    STRUCTURED_TYPES,
    ContentType,
    Field,
)
from .schema.structured import (
    map_links,
    map_values,
    text_values,
    walk_links,
)
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
    bulky: dict[str, Any] | None = None  # the same for BULKY_TYPES fields (long text, json, components, blocks)
    links: list[Link] | None = None  # where `body` holds its includable reference links (`encode_stored`)


# An includable reference link in stored ENTRY bytes: [top-level field id, start, end, linked entry id];
# body[start:end] is the link object `{"id": …, "type": …}` that `include` replaces.
Link = list[Any]


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
        if not field.has_links:
            continue
        for value in (data.get(field.id) or {}).values():
            for holder, link in walk_links(field, value):  # inside components and blocks too
                if holder.type == "asset" and "id" in link:
                    found.add(link["id"])
    return found


def _render_field(field: Field, value: Any, assets: dict[str, dict[str, Any]]) -> Any:
    if field.type in STRUCTURED_TYPES:
        # Every sub-field present in the output (null or [] without a value), assets resolved.
        return map_values(field, value, lambda sub, sub_value: _render_field(sub, sub_value, assets))
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
    bulky: dict[str, Any] = {}
    search: list[str] = []
    slug = None
    for field in ct.fields:
        value = field_value(field, data, chain)
        fields[field.id] = _render_field(field, value, assets)
        if value is not None:
            (bulky if field.type in BULKY_TYPES else vals)[field.id] = value
            search.extend(text_values(field, value))
            if field.type == "slug" and slug is None:
                slug = value
    document = entry_document(
        entry_id=entry["id"], type_id=ct.id, locale=locale,
        version=entry["version"] if draft else entry["published_version"],
        created_at=entry["created_at"], updated_at=entry["updated_at"],
        published_at=entry["published_at"], fields=fields,
    )
    body, links = encode_stored(document, ct)
    return Rendered(locale, body, etag_of(body), vals, slug, " ".join(search), bulky, links)


def encode_stored(document: dict[str, Any], ct: ContentType) -> tuple[bytes, list[Link]]:
    """An ENTRY document's bytes (exactly `encode(document)`) and where its includable reference
    links are in them, in document order, so that `include` can splice the linked entries' bytes in
    without decoding anything (`LinkSplice`).

    Each link is encoded in place of a numbered marker: NUL bytes never occur in msgspec's JSON
    (strings escape control characters), so splitting on them finds every marker and nothing else."""
    fields = document.get("fields") or {}
    by_id = {f.id: f for f in ct.fields}
    marked: list[tuple[str, dict[str, Any]]] = []
    masked = dict(fields)
    for field_id, value in fields.items():
        field = by_id.get(field_id)
        if field is None or not _follows(field):
            continue

        def mark(holder: Field, link: Any, field_id: str = field_id) -> Any:
            if holder.type == "reference" and _includable(link):
                marked.append((field_id, link))
                return msgspec.Raw(b"\x00%d\x00" % (len(marked) - 1))
            return link

        masked[field_id] = map_links(field, value, mark)
    if not marked:
        return _encode(document), []
    pieces = _encode(dict(document, fields=masked)).split(b"\x00")
    out = [pieces[0]]
    size = len(pieces[0])
    links: list[Link] = []
    for number, after in zip(pieces[1::2], pieces[2::2], strict=True):
        field_id, link = marked[int(number)]
        encoded = _encode(link)
        links.append([field_id, size, size + len(encoded), link["id"]])
        out += (encoded, after)
        size += len(encoded) + len(after)
    return b"".join(out), links


def etag_of(body: bytes) -> str:
    """A stored document's ETag. Writes compare it to tell an unchanged document (publishing's
    upsert), so it stays this function for documents stored already."""
    return hashlib.blake2b(body, digest_size=12).hexdigest()


def answer_etag(body: bytes) -> str:
    """The ETag of an answer computed per request (a list, an entry with includes, GraphQL, a /cdn/
    file): 96 bits, by SHA-256, which CPUs with SHA extensions compute about twice as fast as
    BLAKE2b (a 60 KB list here: 36 against 65 us). Kept only beside their bodies (the delivery
    cache), never compared with an earlier version's: a deploy that changed this changes such
    ETags once."""
    return hashlib.sha256(body).hexdigest()[:24]


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


class LinkSplice:
    """`Spliced` for stored bytes whose links' places are known (`encode_stored`) and every field
    wanted: the linked entries' bytes go between slices of the stored bytes; nothing is decoded."""

    def __init__(self, body: bytes, links: list[Link], names: set[str] | frozenset[str]) -> None:
        self._body = body
        self._links = [link for link in links if link[0] in names]

    def linked_ids(self) -> list[str]:
        return [link[3] for link in self._links]

    def encode(self, found: dict[str, bytes], fields: list[str] | None) -> bytes:
        assert fields is None  # a selection of fields re-encodes: `Spliced`
        out: list[Any] = []
        splice_into(out, self._body, self._links, found)
        return self._body if len(out) == 1 else b"".join(out)


def splice_into(out: list[Any], body: bytes, links: list[Link], found: dict[str, bytes]) -> None:
    """Append to `out` the pieces of `body` with the stored bytes of the linked entries in `found` in
    place of their links (`links`: their places in `body`, in order)."""
    view = None
    at = 0
    for _, start, end, linked in links:
        embedded = found.get(linked)
        if embedded is not None:
            if view is None:
                view = memoryview(body)
            out += (view[at:start], embedded)
            at = end
    out.append(body if view is None else view[at:])


def followed(ct: ContentType) -> frozenset[str]:
    """The fields of `ct` that `include` follows."""
    return frozenset(f.id for f in ct.fields if _follows(f))


def splicer(
    body: bytes, links: list[Link] | None, ct: ContentType, only: set[str] | None, fields: list[str] | None,
    names: frozenset[str],
) -> LinkSplice | Spliced:
    """How to include (depth 1) on one stored document: by its links' places when it has them (stored
    since migration 0020) and all fields are wanted, else by decoding its fields (`Spliced`).
    `names`: the fields of `followed(ct)` in `only` (callers compute it once per type)."""
    if links is None or fields is not None:
        return Spliced(body, ct, only)
    return LinkSplice(body, links, names)


class Spliced:
    """Including references one level deep (and selecting fields) on stored ENTRY bytes: the included
    entries' stored bytes are spliced in place of their links; nothing else is decoded or re-encoded.
    The bytes are those of `resolve_includes` on the decoded document (msgspec wrote all of them)."""

    def __init__(self, body: bytes, ct: ContentType, only: set[str] | None) -> None:
        self._entry = _decode_stored(body)
        # field id -> (the field, its decoded value), for the fields to include from (references,
        # and components and blocks that hold references)
        self._references = {
            f.id: (f, _decode(self._entry.fields[f.id])) for f in ct.fields
            if _follows(f) and (only is None or f.id in only) and f.id in self._entry.fields
        }

    def linked_ids(self) -> list[str]:
        """The ids of the links to include, once per link (an entry linked twice is embedded twice)."""
        return [link["id"] for link in self._links()]

    def encode(self, found: dict[str, bytes], fields: list[str] | None) -> bytes:
        """The ENTRY with the links whose id is in `found` replaced by those stored ENTRY bytes."""
        spliced = dict(self._entry.fields)
        for field_id, (field, value) in self._references.items():
            if not any(_includable(link) and link["id"] in found for link in _reference_links(field, value)):
                continue

            def embed(holder: Field, link: Any) -> Any:
                if holder.type == "reference" and _includable(link) and link["id"] in found:
                    return msgspec.Raw(found[link["id"]])
                return link

            spliced[field_id] = msgspec.Raw(_encode(map_links(field, value, embed)))
        if fields is not None:
            spliced = {k: v for k, v in spliced.items() if k in fields}
        return _encode(msgspec.structs.replace(self._entry, fields=spliced))

    def _links(self) -> list[dict[str, Any]]:
        return [
            link for field, value in self._references.values()
            for link in _reference_links(field, value) if _includable(link)
        ]


def _follows(field: Field) -> bool:
    """A field `include` follows: a reference, or a component or blocks field holding references."""
    return field.holds(_REFERENCE)


_REFERENCE = {"reference"}


def _reference_links(field: Field, value: Any) -> list[Any]:
    return [link for holder, link in walk_links(field, value) if holder.type == "reference"]


def _includable(link: Any) -> bool:
    """A link not included yet (an included entry has `fields`)."""
    return isinstance(link, dict) and "id" in link and "fields" not in link


def envelope(document: bytes) -> bytes:
    """{"data": ENTRY} from stored ENTRY bytes, without decoding them."""
    return b'{"data":' + document + b"}"


def list_envelope(documents: Iterable[bytes], meta: dict[str, Any]) -> bytes:
    return b'{"data":[' + b",".join(documents) + b'],"meta":' + _encode(meta) + b"}"


def spliced_list_envelope(documents: list[tuple[bytes, list[Link]]], found: dict[str, bytes], meta: dict[str, Any]) -> bytes:
    """`list_envelope` of stored documents with their links' places, each spliced as `LinkSplice`
    does, in one pass: the same bytes, without a bytes object per document."""
    out: list[Any] = [b'{"data":[']
    for n, (body, links) in enumerate(documents):
        if n:
            out.append(b",")
        splice_into(out, body, links, found)
    out.append(b'],"meta":' + _encode(meta) + b"}")
    return b"".join(out)


def encode(value: Any) -> bytes:
    return _encode(value)


def decode(body: bytes) -> Any:
    return _decode(body)


def reference_links(document: dict[str, Any], ct: ContentType, only: set[str] | None) -> list[dict[str, Any]]:
    """Reference links in a rendered document's fields (those named in `only`, or all)."""
    links: list[dict[str, Any]] = []
    fields = document.get("fields") or {}
    for field in ct.fields:
        if not _follows(field) or (only is not None and field.id not in only):
            continue
        links.extend(link for link in _reference_links(field, fields.get(field.id)) if _includable(link))
    return links


def resolve_includes(
    document: dict[str, Any], ct: ContentType, only: set[str] | None, resolved: dict[str, dict[str, Any]]
) -> None:
    """Replace reference links by the full documents found in `resolved` (in place)."""
    fields = document.get("fields") or {}

    def replace(holder: Field, link: Any) -> Any:
        if holder.type == "reference" and _includable(link) and link["id"] in resolved:
            return resolved[link["id"]]
        return link

    for field in ct.fields:
        if not _follows(field) or (only is not None and field.id not in only) or field.id not in fields:
            continue
        fields[field.id] = map_links(field, fields[field.id], replace)
