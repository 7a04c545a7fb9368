"""DeliveryCache without a server: purges at commit, the workers' confirming purges, stale lists,
answers computed across a purge, the byte bound."""

from __future__ import annotations

import pytest

from cms.app.delivery.cache import (
    DeliveryCache,
    answer_headers,
    cache_key,
    known_parameters,
    raw_answer_headers,
)


def _cache(max_bytes: int = 1 << 20) -> DeliveryCache:
    return DeliveryCache(max_bytes, "public, max-age=60")


def test_a_commit_purge_drops_entries_and_marks_lists_stale() -> None:
    cache = _cache()
    cache.put("/e/a", b"a", "ea", ("entry:a",), cache.seq)
    cache.put("/list", b"l", "el", ("type:x", "entry:a"), cache.seq)
    cache.invalidate(["entry:a", "type:x"])
    assert cache.get("/e/a") is None
    stale = cache.get("/list")
    assert stale is not None and stale.stale_since is not None


def test_the_workers_purge_keeps_answers_computed_after_the_commit_purge() -> None:
    cache = _cache()
    cache.put("/e/old", b"1", "e1", ("entry:a",), cache.seq)
    cache.invalidate(["entry:a", "type:x"])  # the commit: /e/old goes
    cache.put("/e/a", b"2", "e2", ("entry:a",), cache.seq)  # computed after it: fresh
    cache.put("/list", b"l", "el", ("type:x", "entry:a"), cache.seq)
    cache.confirm(["entry:a", "type:x"])  # the worker, files written: nothing new to forget
    assert cache.get("/e/a") is not None
    assert cache.get("/list").stale_since is None  # type: ignore[union-attr]
    # without a commit purge of the tag (lost, or not seen yet), the worker's purge counts
    cache.put("/e/b", b"b", "eb", ("entry:b",), cache.seq)
    cache.confirm(["entry:b"])
    assert cache.get("/e/b") is None


def test_an_answer_computed_across_a_purge_of_its_tags_is_not_stored_fresh() -> None:
    cache = _cache()
    started = cache.seq
    cache.invalidate(["entry:a"])
    cache.put("/e/a", b"a", "ea", ("entry:a",), started)
    assert cache.get("/e/a") is None
    cache.put("/e/b", b"b", "eb", ("entry:b",), started)  # another tag's purge does not matter
    assert cache.get("/e/b") is not None
    for _ in range(5000):  # a long log (a stream of publishes) is walked from its newest end
        cache.invalidate(["entry:z"])
    started = cache.seq
    cache.invalidate(["entry:c"])
    cache.put("/e/c", b"c", "ec", ("entry:c",), started)
    assert cache.get("/e/c") is None


def test_the_byte_bound_evicts_the_least_recently_used() -> None:
    cache = _cache(64 * 1024)
    for i in range(40):
        cache.put(f"/e/{i}", b"x" * 2000, f"e{i}", (f"entry:{i}",), cache.seq)
        cache.get("/e/0")  # kept young
    assert cache.bytes <= 64 * 1024 and cache.get("/e/0") is not None and cache.get("/e/1") is None


def test_keys_keep_only_the_parameters_a_read_takes_in_name_order() -> None:
    pairs = (("limit", "5"), ("utm", "x"), ("fields", "title"), ("limit", "2"), ("filter[rank][gt]", "1"))
    assert cache_key("/l", known_parameters("list", pairs)) == "/l?fields=title&filter%5Brank%5D%5Bgt%5D=1&limit=2"
    assert cache_key("/e", known_parameters("entry", pairs)) == "/e?fields=title"
    assert cache_key("/e", known_parameters("entry", (("utm", "x"),))) == "/e"


@pytest.mark.parametrize("cache_control", ["public, max-age=60", None])
def test_raw_answer_headers_are_the_answer_headers(cache_control: str | None) -> None:
    tags = ("type:article", "entry:a1", "entry:ada")
    expected = [(k.lower().encode(), v.encode()) for k, v in answer_headers("abc123", tags, cache_control).items()]
    assert raw_answer_headers("abc123", tags, cache_control) == expected
