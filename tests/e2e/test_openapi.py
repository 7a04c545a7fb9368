"""Both apps against their own /openapi.json, fuzzed by schemathesis over HTTP (`cms up`, seeded):
no 5xx, no answer that breaks its documented schema, no undocumented status code or content type;
and GraphQL (`/graphql`, from its introspection): no 5xx, nothing logged as an error.

Bounded: a fixed seed and a few dozen examples per operation (about 2,000 requests in all), so it
runs in well under a minute. A failure prints schemathesis' report with a curl line to reproduce.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.processes import BOOTSTRAP_KEY

pytestmark = pytest.mark.e2e

ST = Path(sys.executable).parent / "st"
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"


def _seed(management: str) -> dict[str, str]:
    """Types with references, published entries and a delivery key: routes get past their 404s."""
    headers = {"Authorization": f"Bearer {BOOTSTRAP_KEY}"}
    with httpx.Client(base_url=management, headers=headers, timeout=10) as m:
        m.put("/v1/content-types/author", json={"name": "Author", "fields": [{"id": "name", "type": "text"}]}).raise_for_status()
        m.put("/v1/content-types/article", json={"name": "Article", "fields": [
            {"id": "title", "type": "text", "required": True, "validations": {"max_length": 200}},
            {"id": "slug", "type": "slug", "from": "title"},
            {"id": "rank", "type": "integer", "indexed": True},
            {"id": "author", "type": "reference", "to": ["author"]},
            {"id": "related", "type": "reference", "to": ["article"], "list": True},
        ]}).raise_for_status()
        author = m.post("/v1/entries/author", json={"fields": {"name": "Ada"}}).json()["data"]["id"]
        m.post(f"/v1/entries/author/{author}/publish").raise_for_status()
        for i in range(3):
            entry = m.post("/v1/entries/article", json={"fields": {
                "title": f"Post {i}", "rank": i, "author": {"id": author}}}).json()["data"]["id"]
            m.post(f"/v1/entries/article/{entry}/publish").raise_for_status()
        key = m.post("/v1/keys", json={"name": "fuzz", "kind": "delivery"}).json()["data"]["secret"]
    return {"delivery": key}


def _fuzz(base: str, secret: str, examples: int, workdir: Path, *, exclude: list[str]) -> subprocess.CompletedProcess[str]:
    command = [
        str(ST), "run", f"{base}/openapi.json", "-H", f"Authorization: Bearer {secret}", "--checks", CHECKS,
        "--phases", "coverage,fuzzing", "--max-examples", str(examples), "--seed", "1", "--workers", "1",
        "--suppress-health-check", "all", "--no-color",
    ]
    for operation_id in exclude:
        command += ["--exclude-operation-id", operation_id]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600, check=False)


def _operation_id(document: dict[str, Any], path: str, method: str) -> str:
    return str(document["paths"][path][method]["operationId"])


def test_both_apps_keep_their_openapi_under_fuzzing(cms_env: dict[str, str], started, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The fuzzer sends thousands of requests with one key: limits would answer most of them 429.
    cms = started(dict(cms_env, CMS_BOOTSTRAP_KEY=BOOTSTRAP_KEY, CMS_RATE_LIMIT_MANAGEMENT="1000000/1",
                       CMS_RATE_LIMIT_DELIVERY="1000000/1"), "fuzz")
    keys = _seed(cms.management)
    document = httpx.get(f"{cms.management}/openapi.json").json()
    # The fuzzer would revoke the keys it runs with (the bootstrap key's id is `bootstrap`; the
    # delivery key's it learns from the inventory) or rotate them away with a grace of 0.
    revoke = _operation_id(document, "/v1/keys/{key_id}", "delete")
    rotate = _operation_id(document, "/v1/keys/{key_id}/rotate", "post")
    for base, secret, examples, exclude in (
        (cms.management, BOOTSTRAP_KEY, 25, [revoke, rotate]),
        (cms.delivery, keys["delivery"], 40, []),
    ):
        run = _fuzz(base, secret, examples, tmp_path, exclude=exclude)
        report = run.stdout[-12000:] + run.stderr[-2000:]
        assert run.returncode == 0, f"schemathesis found problems in {base}:\n{report}\n{cms.logs()}"
        assert " passed" in run.stdout and "generated" in run.stdout, report
    # GraphQL: schemathesis generates queries from the introspected schema (hypothesis-graphql)
    command = [str(ST), "run", f"{cms.delivery}/graphql/", "-H", f"Authorization: Bearer {keys['delivery']}",
               "--checks", "not_a_server_error", "--max-examples", "60", "--seed", "1", "--workers", "1",
               "--suppress-health-check", "all", "--no-color"]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    report = run.stdout[-12000:] + run.stderr[-2000:]
    assert run.returncode == 0, f"schemathesis found problems in /graphql:\n{report}\n{cms.logs()}"
    assert " passed" in run.stdout and "generated" in run.stdout, report
    assert "Traceback" not in cms.logs() and "ERROR" not in cms.logs(), cms.logs()[-4000:]
    assert cms.proc.poll() is None, cms.logs()
