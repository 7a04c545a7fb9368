"""Which content types an event is about: one rule for the events feed and webhooks."""

from __future__ import annotations

from cms.app.events.types import content_types_of
from cms.app.webhooks.fanout import wants


def test_content_types_of_an_event() -> None:
    assert content_types_of("entry.published", {"id": "e1", "type": "article"}) == {"article"}
    assert content_types_of("content_type.saved", {"id": "author"}) == {"author"}
    release = {"id": "r1", "entries": [{"type": "article", "id": "a"}, {"type": "author", "id": "b"}]}
    assert content_types_of("release.published", release) == {"article", "author"}
    assert content_types_of("locale.saved", {"code": "de"}) is None
    assert content_types_of("no.such", {"type": "article"}) is None


def test_a_webhook_limited_to_types_gets_a_release_only_if_it_holds_all_of_them() -> None:
    hook = {"events": ["*"], "types": ["article"]}
    only_articles = {"id": "r1", "entries": [{"type": "article", "id": "a"}]}
    mixed = {"id": "r2", "entries": [{"type": "article", "id": "a"}, {"type": "author", "id": "b"}]}
    assert wants(hook, "release.published", only_articles)
    assert not wants(hook, "release.published", mixed)
    assert wants({"events": ["*"], "types": None}, "release.published", mixed)
    assert wants(hook, "entry.published", {"id": "a", "type": "article"})
    assert not wants(hook, "entry.published", {"id": "b", "type": "author"})
    assert wants(hook, "locale.saved", {"code": "de"})
