"""Idempotency-Key on management writes: replay, reuse, in progress, per credential, across a
restart, and the write and its stored answer committed together."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

NOTE = {"name": "Note", "fields": [{"id": "text", "type": "text"}, {"id": "n", "type": "integer"}]}


async def _count(apps) -> int:
    conn = await asyncpg.connect(apps.database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM entries WHERE type = 'note'"))
    finally:
        await conn.close()


async def test_a_repeat_replays_the_first_answer_and_writes_nothing(apps_with) -> None:
    async with apps_with() as apps:
        m = apps.management
        assert (await m.put("/v1/content-types/note", json=NOTE)).status_code == 201
        key = {"Idempotency-Key": "create-note-1"}
        first = await m.post("/v1/entries/note", json={"fields": {"text": "hi", "n": 1}}, headers=key)
        assert first.status_code == 201 and "idempotent-replayed" not in first.headers
        again = await m.post("/v1/entries/note", json={"fields": {"n": 1, "text": "hi"}}, headers=key)  # keys reordered
        assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content
        for header in ("content-type", "etag", "location"):
            assert again.headers.get(header) == first.headers.get(header), header
        assert again.headers["x-request-id"] != first.headers["x-request-id"]
        assert await _count(apps) == 1
        # The same key with another request: 422; another credential's same key is its own.
        r = await m.post("/v1/entries/note", json={"fields": {"text": "other"}}, headers=key)
        assert r.status_code == 422 and r.json()["type"] == "urn:cms:problem:idempotency-key-reused"
        r = await m.put(f"/v1/entries/note/{first.json()['data']['id']}", json={"fields": {"text": "hi"}}, headers=key)
        assert r.status_code == 422
        other = apps.client("management", await apps.key("management", scopes=["content:write"]))
        async with other:
            r = await other.post("/v1/entries/note", json={"fields": {"text": "hi", "n": 1}}, headers=key)
            assert r.status_code == 201 and "idempotent-replayed" not in r.headers
        assert await _count(apps) == 2
        # Errors are answers too (replayed), but 401/403 are not stored.
        bad = {"Idempotency-Key": "bad-note"}
        r1 = await m.post("/v1/entries/note", json={"fields": {"n": "x"}}, headers=bad)
        r2 = await m.post("/v1/entries/note", json={"fields": {"n": "x"}}, headers=bad)
        assert r1.status_code == r2.status_code == 422 and r2.headers["idempotent-replayed"] == "true"
        reader = apps.client("management", await apps.key("management", scopes=["content:read"]))
        async with reader:
            denied = await reader.post("/v1/entries/note", json={"fields": {}}, headers={"Idempotency-Key": "k"})
            assert denied.status_code == 403
            assert (await reader.post("/v1/entries/note", json={"fields": {}}, headers={"Idempotency-Key": "k"})).headers.get(
                "idempotent-replayed") is None
        # Publish and delete take keys too.
        entry = first.json()["data"]["id"]
        p1 = await m.post(f"/v1/entries/note/{entry}/publish", headers={"Idempotency-Key": "pub-1"})
        p2 = await m.post(f"/v1/entries/note/{entry}/publish", headers={"Idempotency-Key": "pub-1"})
        assert p1.status_code == p2.status_code == 200 and p2.json() == p1.json()
        doomed = (await m.post("/v1/entries/note", json={"fields": {"text": "bye"}})).json()["data"]["id"]
        d1 = await m.delete(f"/v1/entries/note/{doomed}", headers={"Idempotency-Key": "del-1"})
        d2 = await m.delete(f"/v1/entries/note/{doomed}", headers={"Idempotency-Key": "del-1"})
        assert d1.status_code == d2.status_code == 204 and d2.headers["idempotent-replayed"] == "true"
        for bad_key in ("", "x" * 256, "with space"):
            r = await m.post("/v1/entries/note", json={"fields": {}}, headers={"Idempotency-Key": bad_key})
            assert r.status_code == 400, bad_key

    # A restart (new processes' worth of apps on the same database) still replays.
    async with apps_with() as again_apps:
        r = await again_apps.management.post("/v1/entries/note", json={"fields": {"text": "hi", "n": 1}}, headers=key)
        assert r.status_code == 201 and r.headers["idempotent-replayed"] == "true" and r.content == first.content
        assert await _count(again_apps) == 2


async def test_twenty_concurrent_repeats_create_one_entry(apps) -> None:
    m = apps.management
    assert (await m.put("/v1/content-types/note", json=NOTE)).status_code == 201
    key = {"Idempotency-Key": "burst"}
    answers = await asyncio.gather(*(
        m.post("/v1/entries/note", json={"fields": {"text": "once"}}, headers=key) for _ in range(20)
    ))
    statuses = sorted(r.status_code for r in answers)
    assert set(statuses) <= {201, 409}, statuses
    fresh = [r for r in answers if r.status_code == 201 and "idempotent-replayed" not in r.headers]
    assert len(fresh) == 1
    for r in answers:
        if r.status_code == 409:
            assert r.json()["type"] == "urn:cms:problem:idempotency-in-progress"
        elif r is not fresh[0]:
            assert r.content == fresh[0].content
    assert await _count(apps) == 1


async def test_a_failure_between_the_write_and_its_stored_answer_keeps_neither(apps, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write ran, then storing its answer failed (as a crash there would): the write is rolled
    back with it, so a retry writes once and gets a stored answer."""
    from cms.app.protection import repository

    m = apps.management
    assert (await m.put("/v1/content-types/note", json=NOTE)).status_code == 201
    real_store = repository.store

    async def failing_store(*args, **kwargs) -> None:
        raise ConnectionResetError("the process died here")

    monkeypatch.setattr(repository, "store", failing_store)
    key = {"Idempotency-Key": "crash-1"}
    r = await m.post("/v1/entries/note", json={"fields": {"text": "x"}}, headers=key)
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text  # (a lost connection: retry)
    assert await _count(apps) == 0
    monkeypatch.setattr(repository, "store", real_store)
    first = await m.post("/v1/entries/note", json={"fields": {"text": "x"}}, headers=key)
    second = await m.post("/v1/entries/note", json={"fields": {"text": "x"}}, headers=key)
    assert first.status_code == 201 and second.headers["idempotent-replayed"] == "true"
    assert await _count(apps) == 1
