"""`cms up` as a user runs it: embedded services, both apps over HTTP, Ctrl-C, restart keeps data."""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import httpx
import psutil
import pytest

from cms.app.webhooks.signing import verify_webhook
from tests.e2e.processes import BOOTSTRAP_KEY, STOP_TIMEOUT, assert_embedded_services_stopped, free_port
from tests.support import Recorder

pytestmark = pytest.mark.e2e

assert len(BOOTSTRAP_KEY) == 40


def test_cms_up_serves_publishes_and_survives_restart(cms_env: dict[str, str], started, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    metrics_port = free_port()
    env = dict(cms_env, CMS_BOOTSTRAP_KEY=BOOTSTRAP_KEY, CMS_WEBHOOK_ALLOW_PRIVATE="1",
               CMS_WORKER_METRICS_PORT=str(metrics_port))
    receiver = Recorder().start()
    try:
        _serves_publishes(env, started, receiver, metrics_port)
    finally:
        receiver.stop()


def _serves_publishes(env: dict[str, str], started, receiver: Recorder, metrics_port: int) -> None:  # type: ignore[no-untyped-def]
    cms = started(env, "first")
    out = cms.stdout
    assert f"{cms.delivery}/api/v1/" in out and f"{cms.management}/v1/" in out
    assert f"{cms.delivery}/docs" in out and f"{cms.delivery}/cdn/" in out
    assert "CMS_BOOTSTRAP_KEY" in out and "cms_mk_" not in out  # no extra admin key when bootstrapping
    admin = {"Authorization": f"Bearer {BOOTSTRAP_KEY}"}

    with httpx.Client(timeout=10) as http:
        for base in (cms.delivery, cms.management):
            health = http.get(f"{base}/healthz")
            assert health.status_code == 200
            assert health.headers.get("x-request-id")
            echoed = http.get(f"{base}/readyz", headers={"X-Request-Id": "e2e-trace.1"})
            assert echoed.status_code == 200 and echoed.headers["x-request-id"] == "e2e-trace.1"
            assert http.get(f"{base}/openapi.json").status_code == 200
            assert http.get(f"{base}/docs").status_code == 200
            missing = http.get(f"{base}/no/such/route")
            assert missing.status_code == 404
            assert missing.headers["content-type"].startswith("application/problem+json")
            assert missing.json()["type"] == "urn:cms:problem:not-found"
            assert missing.headers.get("x-request-id"), "every response has X-Request-Id, 404s included"

        # Credentials: the bootstrap key manages keys; a delivery key is made here.
        assert http.get(f"{cms.management}/v1/keys").status_code == 401
        # Rate limits are on by default, shown on every answer (the 401 above included).
        limited = http.get(f"{cms.management}/v1/keys")
        assert limited.headers["ratelimit-policy"] == '"default";q=600;w=60'
        assert http.get(f"{cms.delivery}/api/v1/locales").headers["ratelimit-policy"] == '"default";q=6000;w=60'
        keys = http.get(f"{cms.management}/v1/keys", headers=admin)
        assert keys.status_code == 200, keys.text
        made = http.post(f"{cms.management}/v1/keys", headers=admin, json={"name": "e2e site", "kind": "delivery"})
        assert made.status_code == 201, made.text
        delivery_key = made.json()["data"]["secret"]
        assert delivery_key.startswith("cms_dk_")
        reader = {"Authorization": f"Bearer {delivery_key}"}

        # A webhook to a receiver on 127.0.0.1 (the worker `cms up` runs sends it).
        hook = http.post(f"{cms.management}/v1/webhooks", headers=admin,
                         json={"url": receiver.url, "events": ["entry.published"]})
        assert hook.status_code == 201, hook.text
        secret = hook.json()["data"]["secret"]

        # Content: type, entry, publish, read from delivery by slug.
        content_type = http.put(
            f"{cms.management}/v1/content-types/article", headers=admin,
            json={
                "name": "Article", "display_field": "title",
                "fields": [
                    {"id": "title", "type": "text", "required": True},
                    {"id": "slug", "type": "slug", "from": "title"},
                ],
            },
        )
        assert content_type.status_code == 201, content_type.text
        entry = http.post(f"{cms.management}/v1/entries/article", headers=admin, json={"fields": {"title": "Hello World"}})
        assert entry.status_code == 201, entry.text
        entry_id = entry.json()["data"]["id"]
        assert entry.json()["data"]["fields"]["slug"] == "hello-world"
        published = http.post(f"{cms.management}/v1/entries/article/{entry_id}/publish", headers=admin)
        assert published.status_code == 200, published.text
        assert published.json()["data"]["status"] == "published"

        url = f"{cms.delivery}/api/v1/entries/article/by-slug/hello-world"
        assert http.get(url).status_code == 401
        got = http.get(url, headers=reader)
        assert got.status_code == 200, got.text
        assert got.json()["data"]["id"] == entry_id
        assert got.json()["data"]["fields"]["title"] == "Hello World"
        assert got.headers.get("etag") and got.headers.get("x-request-id")

        # GraphQL over real HTTP, and a persisted query over GET with the CDN headers
        query = '{ articleCollection(where: {title: {contains: "hello"}}) { total items { id title } } }'
        graphql = http.post(f"{cms.delivery}/graphql", headers=reader, json={"query": query})
        assert graphql.status_code == 200, graphql.text
        assert graphql.json() == {"data": {"articleCollection": {"total": 1, "items": [
            {"id": entry_id, "title": "Hello World"}]}}}
        digest = hashlib.sha256(query.encode()).hexdigest()
        extensions = json.dumps({"persistedQuery": {"version": 1, "sha256Hash": digest}})
        http.post(f"{cms.delivery}/graphql", headers=reader, json={"query": query, "extensions": json.loads(extensions)})
        persisted = http.get(f"{cms.delivery}/graphql", headers=reader, params={"extensions": extensions})
        assert persisted.json() == graphql.json() and f"entry:{entry_id}" in persisted.headers["surrogate-key"]

        # The worker `cms up` runs writes the prerendered file: the same bytes as the API (include=*).
        api = http.get(f"{cms.delivery}/api/v1/entries/article/{entry_id}?locale=en&include=*", headers=reader)
        cdn_url = f"{cms.delivery}/cdn/entries/article/en/by-slug/hello-world.json"
        deadline = time.monotonic() + 60
        while True:
            cdn = http.get(cdn_url)
            if cdn.status_code == 200 and cdn.content == api.content:
                break
            assert time.monotonic() < deadline, f"no prerendered file: {cdn.status_code} {cms.logs()[-2000:]}"
            time.sleep(0.2)

        # The webhook arrived signed, and the worker's metrics count it.
        deadline = time.monotonic() + 60
        while not receiver.snapshot():
            assert time.monotonic() < deadline, f"no webhook: {cms.logs()[-2000:]}"
            time.sleep(0.2)
        sent = receiver.snapshot()[0]
        verify_webhook(sent.headers, sent.body, secret)
        assert sent.json()["type"] == "entry.published" and sent.json()["data"]["id"] == entry_id
        deadline = time.monotonic() + 30
        while 'cms_webhook_attempts_total{outcome="succeeded"} 1.0' not in http.get(
            f"http://127.0.0.1:{metrics_port}/metrics"
        ).text:
            assert time.monotonic() < deadline, cms.logs()[-2000:]
            time.sleep(0.2)

        # A scheduled unpublish fires (the scheduler runs too) and the worker removes the file.
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
        scheduled = http.post(
            f"{cms.management}/v1/scheduled-actions", headers=admin,
            json={"action": "unpublish", "entry": {"type": "article", "id": entry_id}, "at": at},
        )
        assert scheduled.status_code == 201, scheduled.text
        deadline = time.monotonic() + 60
        while http.get(cdn_url).status_code != 404:
            assert time.monotonic() < deadline, cms.logs()[-2000:]
            time.sleep(0.2)
        assert http.get(url, headers=reader).status_code == 404
        republished = http.post(f"{cms.management}/v1/entries/article/{entry_id}/publish", headers=admin)
        assert republished.status_code == 200

    assert cms.interrupt() == 0
    assert_embedded_services_stopped(Path(env["CMS_DATA_DIR"]))

    # Same data dir, new process: everything is still there.
    again = started(env, "second")
    with httpx.Client(timeout=10) as http:
        got = http.get(f"{again.delivery}/api/v1/entries/article/by-slug/hello-world", headers=reader)
        assert got.status_code == 200, got.text
        assert got.json()["data"]["fields"]["title"] == "Hello World"
        assert http.get(f"{again.management}/v1/keys", headers=admin).status_code == 200
        # A revocation made in the management process reaches the delivery process (which has the
        # key cached, fast path included) within a second.
        made = http.post(f"{again.management}/v1/keys", headers=admin, json={"name": "to revoke", "kind": "delivery"})
        doomed = {"Authorization": f"Bearer {made.json()['data']['secret']}"}
        article_url = f"{again.delivery}/api/v1/entries/article/by-slug/hello-world"
        for _ in range(3):
            assert http.get(article_url, headers=doomed).status_code == 200
        revoked = time.monotonic()
        assert http.delete(f"{again.management}/v1/keys/{made.json()['data']['id']}", headers=admin).status_code == 204
        while http.get(article_url, headers=doomed).status_code != 401:
            assert time.monotonic() - revoked < 1.0, "a revoked key still served after 1 s"
            time.sleep(0.01)
    assert again.interrupt() == 0
    assert_embedded_services_stopped(Path(env["CMS_DATA_DIR"]))


def test_first_start_prints_an_admin_key_once(cms_env: dict[str, str], started) -> None:  # type: ignore[no-untyped-def]
    cms = started(cms_env, "first")
    keys = re.findall(r"cms_mk_[A-Za-z0-9]{38}", cms.stdout)
    assert keys, cms.logs()
    admin = {"Authorization": f"Bearer {keys[0]}"}
    with httpx.Client(timeout=10) as http:
        listed = http.get(f"{cms.management}/v1/keys", headers=admin)
        assert listed.status_code == 200, listed.text
        assert [k["name"] for k in listed.json()["data"]] == ["admin"]
    assert cms.interrupt() == 0

    again = started(cms_env, "second")
    assert "cms_mk_" not in again.stdout
    assert "already exists" in again.stdout and "cms keys create" in again.stdout
    with httpx.Client(timeout=10) as http:
        assert http.get(f"{again.management}/v1/keys", headers=admin).status_code == 200
    assert again.interrupt() == 0


def test_a_crashing_server_stops_everything(cms_env: dict[str, str], started) -> None:  # type: ignore[no-untyped-def]
    cms = started(cms_env, "crash")
    victim = next(p for p in cms.descendants if "cms.app.asgi:management" in " ".join(p.cmdline()))
    victim.kill()
    code = cms.proc.wait(STOP_TIMEOUT)
    assert code != 0
    _, alive = psutil.wait_procs(cms.descendants, timeout=5)
    assert not alive
    assert "exited unexpectedly" in cms.err_path.read_text()
    assert_embedded_services_stopped(Path(cms_env["CMS_DATA_DIR"]))
