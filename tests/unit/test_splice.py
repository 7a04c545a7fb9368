"""Depth-1 includes on stored bytes (`splice_each`) answer the very bytes of the decoding path
(`expand_each` + encode), and charge the include budget the same way."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

from cms.app import render
from cms.app.delivery.documents import IncludeLimit, _Budget, _select_fields, expand_each, splice_each
from cms.app.schema.model import (
    ContentType,
    Field,
)
from tests.support import AUTHOR_TYPE, TAG_TYPE, article_type

ARTICLE_TYPE = article_type(
    Field(id="related", type="reference", to=["article", "author"], list=True),
    # links inside a component and in blocks (the json field `meta` holds link-shaped objects too)
    Field(id="hero", type="component", fields=[
        Field(id="label", type="text"), Field(id="by", type="reference", to=["author"]),
        Field(id="see", type="reference", to=["tag", "article"], list=True),
    ]),
    Field(id="body_blocks", type="blocks", blocks={
        "quote": [Field(id="text", type="text"), Field(id="who", type="reference", to=["author"])],
        "gallery": [Field(id="tags", type="reference", to=["tag"], list=True)],
    }),
)
TYPES = {t.id: t for t in (ARTICLE_TYPE, AUTHOR_TYPE, TAG_TYPE)}
AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _document(entry_id: str, ct: ContentType, fields: dict[str, Any]) -> dict[str, Any]:
    return render.entry_document(
        entry_id=entry_id, type_id=ct.id, locale="en", version=3, created_at=AT, updated_at=AT, published_at=AT,
        fields={f.id: fields.get(f.id, [] if f.many else None) for f in ct.fields},
    )


def _stored(entry_id: str, ct: ContentType, fields: dict[str, Any]) -> bytes:
    return render.encode(_document(entry_id, ct, fields))


def _stored_with_links(entry_id: str, ct: ContentType, fields: dict[str, Any]) -> tuple[bytes, list[render.Link]]:
    document = _document(entry_id, ct, fields)
    body, links = render.encode_stored(document, ct)
    assert body == render.encode(document)  # the very bytes of the plain encoding
    return body, links


PUBLISHED = {
    "ada": _stored("ada", AUTHOR_TYPE, {"name": "Ada \u00e9\u2028", "age": 36}),
    "t1": _stored("t1", TAG_TYPE, {"label": "one"}),
    "t2": _stored("t2", TAG_TYPE, {"label": "two \"quoted\""}),
    "a9": _stored("a9", ARTICLE_TYPE, {"title": "Other", "author": {"id": "ada", "type": "author"}}),
}

ROOT_FIELDS = [
    ("a1", {
        "title": "Hello \u0000 \"{\"id\":\"ada\"}", "rank": 1, "score": 1.5,
        "meta": {"nested": [1, None, {"x": "y"}], "author": {"id": "ada", "type": "author"}},
        "author": {"id": "ada", "type": "author"},
        "tags": [{"id": "t1", "type": "tag"}, {"id": "gone", "type": "tag"}, {"id": "t2", "type": "tag"},
                 {"id": "t1", "type": "tag"}],
        "related": [{"id": "a9", "type": "article"}, {"id": "ada", "type": "author"}],
        "cover": {"id": "img", "url": "https://cdn.example/img.png"},
        "hero": {"label": "x", "by": {"id": "ada", "type": "author"}, "see": [{"id": "t2", "type": "tag"}]},
        "body_blocks": [
            {"block": "quote", "fields": {"text": "q", "who": {"id": "ada", "type": "author"}}},
            {"block": "gallery", "fields": {"tags": [{"id": "t1", "type": "tag"}, {"id": "gone", "type": "tag"}]}},
        ],
    }),
    ("a2", {"title": "No links", "author": {"id": "gone", "type": "author"}}),
    ("a3", {"title": "Empty", "tags": []}),
]
ROOTS = [_stored(entry_id, ARTICLE_TYPE, fields) for entry_id, fields in ROOT_FIELDS]
# The same roots as stored since migration 0020: with their links' places.
LINKED_ROOTS = [_stored_with_links(entry_id, ARTICLE_TYPE, fields) for entry_id, fields in ROOT_FIELDS]

INCLUDES = [[], ["*"], ["author"], ["tags"], ["author", "related"], ["cover"], ["nothing"], ["hero", "body_blocks"]]
FIELDS = [None, [], ["title"], ["title", "tags", "author"], ["missing"]]


async def _published_bytes(ids: list[str]) -> dict[str, bytes]:
    return {i: PUBLISHED[i] for i in ids if i in PUBLISHED}


async def _published_documents(ids: list[str]) -> dict[str, tuple[dict[str, Any], int]]:
    return {i: (render.decode(PUBLISHED[i]), len(PUBLISHED[i])) for i in ids if i in PUBLISHED}


def test_stored_links_are_the_includable_references_in_document_order() -> None:
    body, links = LINKED_ROOTS[0]
    assert [(field, linked) for field, _, _, linked in links] == [
        ("author", "ada"), ("tags", "t1"), ("tags", "gone"), ("tags", "t2"), ("tags", "t1"),
        ("related", "a9"), ("related", "ada"), ("hero", "ada"), ("hero", "t2"), ("body_blocks", "ada"),
        ("body_blocks", "t1"), ("body_blocks", "gone"),
    ]  # not the json field's link-shaped object, nor the asset
    for _, start, end, linked in links:
        assert render.decode(body[start:end])["id"] == linked
    assert LINKED_ROOTS[2][1] == []


@pytest.mark.parametrize("linked", [False, True], ids=["decoding", "by-links"])
@pytest.mark.parametrize(("include", "fields"), list(itertools.product(INCLUDES, FIELDS)))
def test_spliced_bytes_are_the_decoded_paths_bytes(include: list[str], fields: list[str] | None, linked: bool) -> None:
    limit = IncludeLimit()
    documents = [render.decode(body) for body in ROOTS]
    decoded_roots = [(d, ARTICLE_TYPE, _Budget(limit)) for d in documents]
    expected_ids = asyncio.run(expand_each(decoded_roots, TYPES, include, 1, _published_documents))
    for document in documents:
        _select_fields(document, fields)
    expected = [render.encode(d) for d in documents]

    spliced_roots = [
        (body, links if linked else None, ARTICLE_TYPE, _Budget(limit)) for body, links in LINKED_ROOTS
    ]
    got = asyncio.run(splice_each(spliced_roots, include, fields, _published_bytes))

    assert [done and done[0] for done in got] == expected
    assert [done and done[1] for done in got] == expected_ids
    for (*_, want), (*_, have) in zip(decoded_roots, spliced_roots, strict=True):
        assert (have.entries, have.bytes) == (want.entries, want.bytes)


@pytest.mark.parametrize("linked", [False, True], ids=["decoding", "by-links"])
def test_a_root_past_its_budget_is_not_built(linked: bool) -> None:
    limit = IncludeLimit(entries=3)  # a1 embeds 10 copies with include=*: ada, t1, t2, t1, a9, ada, …
    roots = [(body, links if linked else None, ARTICLE_TYPE, _Budget(limit)) for body, links in LINKED_ROOTS[:2]]
    got = asyncio.run(splice_each(roots, ["*"], None, _published_bytes))
    assert got[0] is None and roots[0][3].exceeded
    assert got[1] is not None and got[1][0] == ROOTS[1]  # nothing of a2's was found: its stored bytes
