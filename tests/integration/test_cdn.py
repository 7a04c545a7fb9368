"""CDN purge providers against a local recording HTTP server and moto's CloudFront."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from cms.app.config import ConfigError, load_settings
from cms.storage.cdn import (
    CdnPurgeError,
    CdnPurger,
    CloudflarePurger,
    CloudFrontPurger,
    FastlyPurger,
    HttpPurger,
    NoPurger,
)
from cms.workers.outputs import purger_from_settings
from tests.support import Recorder


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder(reply={"status": "ok"}).start()
    yield server
    server.stop()


def tags(n: int) -> list[str]:
    return [f"entry:{i:04d}" for i in range(n)]


# ---------------------------------------------------------------------------------------------


def test_none_does_nothing() -> None:
    purger = purger_from_settings(load_settings({}))
    assert isinstance(purger, NoPurger) and isinstance(purger, CdnPurger)
    purger.purge(["a"], ["/b"], "evt")


def test_fastly_batches_surrogate_keys(recorder: Recorder) -> None:
    purger = purger_from_settings(
        load_settings(
            {
                "CMS_CDN_PROVIDER": "fastly",
                "CMS_CDN_FASTLY_SERVICE_ID": "SU1Z0isxPaozGVKXdv0eY",
                "CMS_CDN_FASTLY_TOKEN": "fastly-token",
                "CMS_CDN_FASTLY_API_URL": recorder.url + "/",
            }
        )
    )
    assert isinstance(purger, FastlyPurger)
    purger.purge(tags(600) + ["entry:0000"], ["/ignored.json"], "evt-1")
    assert [(r.method, r.path) for r in recorder.requests] == [
        ("POST", "/service/SU1Z0isxPaozGVKXdv0eY/purge")
    ] * 3
    batches = [r.headers["surrogate-key"].split(" ") for r in recorder.requests]
    assert [len(b) for b in batches] == [256, 256, 88]
    assert sum(batches, []) == tags(600)
    assert all(r.headers["fastly-key"] == "fastly-token" for r in recorder.requests)

    recorder.requests.clear()
    purger.purge([], ["/x"], "evt-2")
    assert recorder.requests == []


def test_cloudflare_chunks_tags(recorder: Recorder) -> None:
    recorder.reply = {"success": True, "errors": [], "messages": [], "result": {"id": "zone"}}
    purger = purger_from_settings(
        load_settings(
            {
                "CMS_CDN_PROVIDER": "cloudflare",
                "CMS_CDN_CLOUDFLARE_ZONE_ID": "023e105f4ecef8ad9ca31a8372d0c353",
                "CMS_CDN_CLOUDFLARE_TOKEN": "cf-token",
                "CMS_CDN_CLOUDFLARE_API_URL": recorder.url + "/client/v4",
            }
        )
    )
    assert isinstance(purger, CloudflarePurger)
    purger.purge(tags(250), [], "evt-1")
    assert [(r.method, r.path) for r in recorder.requests] == [
        ("POST", "/client/v4/zones/023e105f4ecef8ad9ca31a8372d0c353/purge_cache")
    ] * 3
    chunks = [r.json()["tags"] for r in recorder.requests]
    assert [len(c) for c in chunks] == [100, 100, 50]
    assert sum(chunks, []) == tags(250)
    assert all(r.headers["authorization"] == "Bearer cf-token" for r in recorder.requests)
    assert all(r.headers["content-type"] == "application/json" for r in recorder.requests)


def test_cloudflare_success_false_raises(recorder: Recorder) -> None:
    recorder.reply = {"success": False, "errors": [{"code": 1134, "message": "bad tag"}]}
    purger = CloudflarePurger("zone", "t", api_url=recorder.url)
    with pytest.raises(CdnPurgeError, match="bad tag"):
        purger.purge(["a"], [], "evt")


@pytest.mark.parametrize("method", ["PURGE", "BAN"])
def test_http_purge_and_ban(recorder: Recorder, method: str) -> None:
    second = Recorder(reply={"status": "ok"}).start()
    try:
        purger = purger_from_settings(
            load_settings(
                {
                    "CMS_CDN_PROVIDER": "http",
                    "CMS_CDN_HTTP_URLS": f"{recorder.url}/, {second.url}",
                    "CMS_CDN_HTTP_METHOD": method.lower(),
                }
            )
        )
        assert isinstance(purger, HttpPurger)
        purger.purge(
            ["entry:1", "type:article"],
            ["/entries/article/en/1.json", "entries/article/en/index.json", "/entries/article/en/1.json"],
            "evt-1",
        )
        for server in (recorder, second):
            # the tag purge first; the path purges after it, concurrently (any order), each once
            assert [(r.method, r.path) for r in server.requests[:1]] == [(method, "/")]
            assert sorted((r.method, r.path) for r in server.requests[1:]) == [
                (method, "/entries/article/en/1.json"),
                (method, "/entries/article/en/index.json"),
            ]
            tag_request = server.requests[0]
            assert tag_request.headers["surrogate-key"] == "entry:1 type:article"
            assert tag_request.headers["x-cache-tags"] == "entry:1,type:article"
    finally:
        second.stop()


def test_http_tags_are_batched(recorder: Recorder) -> None:
    HttpPurger([recorder.url]).purge(tags(300), [], "evt")
    assert [len(r.headers["surrogate-key"].split(" ")) for r in recorder.requests] == [256, 44]


def test_http_path_not_cached_is_fine_but_tag_404_is_not(recorder: Recorder) -> None:
    recorder.status = 404
    purger = HttpPurger([recorder.url])
    purger.purge([], ["/not-cached.json"], "evt")  # nginx proxy_cache_purge: 404 = nothing to purge
    with pytest.raises(CdnPurgeError, match="404"):
        purger.purge(["entry:1"], [], "evt")


@pytest.mark.parametrize("provider", ["fastly", "cloudflare", "http"])
def test_failing_endpoint_raises(recorder: Recorder, provider: str) -> None:
    recorder.status = 500
    recorder.reply = {"error": "boom"}
    purger: CdnPurger = {
        "fastly": lambda: FastlyPurger("svc", "tok", api_url=recorder.url),
        "cloudflare": lambda: CloudflarePurger("zone", "tok", api_url=recorder.url),
        "http": lambda: HttpPurger([recorder.url]),
    }[provider]()
    with pytest.raises(CdnPurgeError, match="500"):
        purger.purge(["entry:1"], ["/a.json"], "evt-1")
    assert len(recorder.requests) == 1


def test_unreachable_endpoint_raises(recorder: Recorder) -> None:
    url = recorder.url
    recorder.shutdown()
    recorder.server_close()
    with pytest.raises(CdnPurgeError, match="fastly"):
        FastlyPurger("svc", "tok", api_url=url).purge(["a"], [], "evt")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CMS_CDN_PROVIDER": "cloudfront"}, "CMS_CDN_DISTRIBUTION_ID"),
        ({"CMS_CDN_PROVIDER": "fastly", "CMS_CDN_FASTLY_SERVICE_ID": "s"}, "CMS_CDN_FASTLY_TOKEN"),
        ({"CMS_CDN_PROVIDER": "cloudflare", "CMS_CDN_CLOUDFLARE_TOKEN": "t"}, "CMS_CDN_CLOUDFLARE_ZONE_ID"),
        ({"CMS_CDN_PROVIDER": "http"}, "CMS_CDN_HTTP_URLS"),
        ({"CMS_CDN_HTTP_URLS": "ftp://varnish"}, "CMS_CDN_HTTP_URLS"),
        ({"CMS_CDN_HTTP_URLS": " , "}, "CMS_CDN_HTTP_URLS"),
        ({"CMS_CDN_HTTP_METHOD": "DELETE"}, "CMS_CDN_HTTP_METHOD"),
        ({"CMS_CDN_ENDPOINT_URL": "localhost:5000"}, "CMS_CDN_ENDPOINT_URL"),
        ({"CMS_CDN_FASTLY_API_URL": "api.fastly.com"}, "CMS_CDN_FASTLY_API_URL"),
        ({"CMS_CDN_CLOUDFLARE_API_URL": "nope"}, "CMS_CDN_CLOUDFLARE_API_URL"),
        ({"CMS_CDN_DISTRIBUTION_ID": "E1/../x"}, "CMS_CDN_DISTRIBUTION_ID"),
        ({"CMS_CDN_FASTLY_TOKEN": "has space"}, "CMS_CDN_FASTLY_TOKEN"),
    ],
)
def test_bad_cdn_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(env)


def test_cdn_settings_defaults_and_parsing() -> None:
    settings = load_settings({})
    assert settings.cdn_provider == "none"
    assert settings.cdn_http_urls == () and settings.cdn_http_method == "PURGE"
    assert settings.cdn_fastly_api_url == "https://api.fastly.com"
    assert settings.cdn_cloudflare_api_url == "https://api.cloudflare.com/client/v4"
    settings = load_settings(
        {
            "CMS_CDN_PROVIDER": "http",
            "CMS_CDN_HTTP_URLS": "http://a:6081/,https://b",
            "CMS_CDN_HTTP_METHOD": "BAN",
        }
    )
    assert settings.cdn_http_urls == ("http://a:6081", "https://b") and settings.cdn_http_method == "BAN"


# ---------------------------------------------------------------------------------------------
# CloudFront on moto


def cloudfront(endpoint: str) -> Any:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("cloudfront", endpoint_url=endpoint)


def create_distribution(client: Any) -> str:
    origin = "cms-bucket.s3.amazonaws.com"
    response = client.create_distribution(
        DistributionConfig={
            "CallerReference": uuid.uuid4().hex,
            "Comment": "cms test",
            "Enabled": True,
            "Origins": {
                "Quantity": 1,
                "Items": [{"Id": "s3", "DomainName": origin, "S3OriginConfig": {"OriginAccessIdentity": ""}}],
            },
            "DefaultCacheBehavior": {"TargetOriginId": "s3", "ViewerProtocolPolicy": "redirect-to-https"},
        }
    )
    return response["Distribution"]["Id"]


def test_cloudfront_invalidations_are_batched(moto_endpoint: str, aws_env: None) -> None:
    client = cloudfront(moto_endpoint)
    distribution = create_distribution(client)
    purger = purger_from_settings(
        load_settings(
            {
                "CMS_CDN_PROVIDER": "cloudfront",
                "CMS_CDN_DISTRIBUTION_ID": distribution,
                "CMS_CDN_ENDPOINT_URL": moto_endpoint,
            }
        )
    )
    assert isinstance(purger, CloudFrontPurger)
    paths = [f"entries/article/en/{i:05d}.json" for i in range(3500)]
    purger.purge(["entry:1"], paths + ["/entries/article/en/00001.json"], "evt-01J")

    listing = client.list_invalidations(DistributionId=distribution)["InvalidationList"]
    assert listing["Quantity"] == 2
    batches = {}
    for item in listing["Items"]:
        invalidation = client.get_invalidation(DistributionId=distribution, Id=item["Id"])["Invalidation"]
        batch = invalidation["InvalidationBatch"]
        batches[batch["CallerReference"]] = batch["Paths"]
    assert sorted(batches) == ["evt-01J-0", "evt-01J-1"]
    assert batches["evt-01J-0"]["Quantity"] == 3000 and batches["evt-01J-1"]["Quantity"] == 500
    all_paths = batches["evt-01J-0"]["Items"] + batches["evt-01J-1"]["Items"]
    assert sorted(all_paths) == sorted(f"/{p}" for p in paths)

    # tags alone: CloudFront cannot purge by tag, nothing is sent
    purger.purge(["entry:1"], [], "evt-02")
    assert client.list_invalidations(DistributionId=distribution)["InvalidationList"]["Quantity"] == 2


def test_cloudfront_failure_raises(moto_endpoint: str, aws_env: None) -> None:
    purger = CloudFrontPurger("EDOESNOTEXIST", endpoint_url=moto_endpoint)
    with pytest.raises(CdnPurgeError, match="EDOESNOTEXIST"):
        purger.purge([], ["/a.json"], "evt-1")
