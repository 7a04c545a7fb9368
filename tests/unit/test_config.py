"""load_settings(): defaults, parsing, and one-line errors that name the bad variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from cms.app.config import ConfigError, Settings, load_settings


def test_defaults_with_an_empty_environment() -> None:
    s = load_settings({})
    assert s == Settings()
    assert s.data_dir == Path(".cms")
    assert s.database_url is None and s.redis_url is None and s.database_read_url is None
    assert (s.host, s.delivery_port, s.management_port) == ("127.0.0.1", 8000, 8001)
    assert s.delivery_url == "http://127.0.0.1:8000"
    assert s.management_url == "http://127.0.0.1:8001"
    assert s.assets_url == "http://127.0.0.1:8000/cdn"
    assert s.objects_dir == Path(".cms") / "objects"
    assert s.cdn_provider == "none"
    assert s.s3_bucket is None and s.s3_prefix == ""
    assert s.bootstrap_key is None
    assert s.public_delivery is False
    assert s.rate_limit_management == (600, 60)
    assert s.rate_limit_delivery == (6000, 60)
    assert s.max_body_bytes == 1024 * 1024
    assert s.max_upload_bytes == 50_000_000
    assert s.webhook_retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert s.webhook_allow_private is False
    assert s.graphql_introspection is True


def test_empty_values_count_as_unset() -> None:
    assert load_settings({"CMS_DATABASE_URL": "", "CMS_DELIVERY_PORT": "", "CMS_BOOTSTRAP_KEY": ""}) == Settings()


def test_values_are_parsed() -> None:
    s = load_settings(
        {
            "CMS_DATA_DIR": "/var/lib/cms",
            "CMS_DATABASE_URL": "postgresql://u:p@db:5432/cms",
            "CMS_DATABASE_READ_URL": "postgres://u:p@replica/cms",
            "CMS_REDIS_URL": "redis://cache:6379/0",
            "CMS_S3_BUCKET": "my-bucket",
            "CMS_S3_ENDPOINT_URL": "http://minio:9000",
            "CMS_S3_PREFIX": "/site/",
            "CMS_CDN_PROVIDER": "fastly",
            "CMS_CDN_FASTLY_SERVICE_ID": "svc_123",
            "CMS_CDN_FASTLY_TOKEN": "tok-abc",
            "CMS_HOST": "0.0.0.0",
            "CMS_DELIVERY_PORT": "9000",
            "CMS_MANAGEMENT_PORT": "9001",
            "CMS_PUBLIC_URL_DELIVERY": "https://cdn.example.com/",
            "CMS_PUBLIC_URL_MANAGEMENT": "https://admin.example.com",
            "CMS_BOOTSTRAP_KEY": "k" * 40,
            "CMS_PUBLIC_DELIVERY": "1",
            "CMS_RATE_LIMIT_MANAGEMENT": "100 / 10",
            "CMS_RATE_LIMIT_DELIVERY": "5000/60",
            "CMS_MAX_BODY_BYTES": "2048",
            "CMS_MAX_UPLOAD_BYTES": "4096",
            "CMS_WEBHOOK_RETRY_SCHEDULE": "1,2,3",
            "CMS_WEBHOOK_ALLOW_PRIVATE": "true",
            "CMS_GRAPHQL_INTROSPECTION": "0",
            "CMS_DB_POOL_SIZE": "20",
        }
    )
    assert s.data_dir == Path("/var/lib/cms")
    assert s.database_url == "postgresql://u:p@db:5432/cms"
    assert s.database_read_url == "postgres://u:p@replica/cms"
    assert s.redis_url == "redis://cache:6379/0"
    assert (s.s3_bucket, s.s3_endpoint_url, s.s3_prefix) == ("my-bucket", "http://minio:9000", "site/")
    assert (s.cdn_provider, s.cdn_fastly_service_id, s.cdn_fastly_token) == ("fastly", "svc_123", "tok-abc")
    assert (s.host, s.delivery_port, s.management_port) == ("0.0.0.0", 9000, 9001)
    assert s.delivery_url == "https://cdn.example.com"
    assert s.management_url == "https://admin.example.com"
    assert s.assets_url == "https://cdn.example.com/cdn"
    assert s.bootstrap_key == "k" * 40
    assert s.public_delivery is True
    assert s.rate_limit_management == (100, 10)
    assert s.rate_limit_delivery == (5000, 60)
    assert (s.max_body_bytes, s.max_upload_bytes) == (2048, 4096)
    assert s.webhook_retry_schedule == (1, 2, 3)
    assert s.webhook_allow_private is True
    assert s.graphql_introspection is False
    assert s.db_pool_size == 20


@pytest.mark.parametrize("value", ["0", "false", "no", "off"])
def test_false_spellings(value: str) -> None:
    assert load_settings({"CMS_PUBLIC_DELIVERY": value}).public_delivery is False


INVALID = [
    ("CMS_DATABASE_URL", "mysql://db/cms"),
    ("CMS_DATABASE_URL", "postgresql"),
    ("CMS_DATABASE_READ_URL", "http://replica"),
    ("CMS_REDIS_URL", "memcached://cache"),
    ("CMS_S3_BUCKET", "Not_A_Bucket"),
    ("CMS_S3_ENDPOINT_URL", "ftp://minio"),
    ("CMS_CDN_PROVIDER", "akamai"),
    ("CMS_CDN_DISTRIBUTION_ID", "has spaces"),
    ("CMS_CDN_FASTLY_TOKEN", "has spaces"),
    ("CMS_CDN_ENDPOINT_URL", "cloudfront.local"),
    ("CMS_CDN_HTTP_URLS", "ftp://varnish"),
    ("CMS_CDN_HTTP_METHOD", "DELETE"),
    ("CMS_DELIVERY_PORT", "abc"),
    ("CMS_DELIVERY_PORT", "70000"),
    ("CMS_MANAGEMENT_PORT", "-1"),
    ("CMS_PUBLIC_URL_DELIVERY", "cdn.example.com"),
    ("CMS_PUBLIC_URL_MANAGEMENT", "admin"),
    ("CMS_ASSET_BASE_URL", "s3://bucket"),
    ("CMS_BOOTSTRAP_KEY", "too-short"),
    ("CMS_BOOTSTRAP_KEY", "has a space in it and is long enough 0123456789"),
    ("CMS_PUBLIC_DELIVERY", "maybe"),
    ("CMS_RATE_LIMIT_MANAGEMENT", "600"),
    ("CMS_RATE_LIMIT_MANAGEMENT", "0/60"),
    ("CMS_RATE_LIMIT_DELIVERY", "lots/minute"),
    ("CMS_MAX_BODY_BYTES", "10"),
    ("CMS_MAX_BODY_BYTES", "1MB"),
    ("CMS_MAX_UPLOAD_BYTES", "-5"),
    ("CMS_WEBHOOK_RETRY_SCHEDULE", "5,soon"),
    ("CMS_WEBHOOK_RETRY_SCHEDULE", "5,-1"),
    ("CMS_WEBHOOK_ALLOW_PRIVATE", "2"),
    ("CMS_GRAPHQL_INTROSPECTION", "nope"),
    ("CMS_DB_POOL_SIZE", "0"),
]


@pytest.mark.parametrize(("name", "value"), INVALID, ids=[f"{n}={v}" for n, v in INVALID])
def test_invalid_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({name: value})
    message = str(info.value)
    assert message.startswith(name), message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("provider", "first_required"),
    [
        ("cloudfront", "CMS_CDN_DISTRIBUTION_ID"),
        ("fastly", "CMS_CDN_FASTLY_SERVICE_ID"),
        ("cloudflare", "CMS_CDN_CLOUDFLARE_ZONE_ID"),
        ("http", "CMS_CDN_HTTP_URLS"),
    ],
)
def test_cdn_provider_needs_its_settings(provider: str, first_required: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"CMS_CDN_PROVIDER": provider})
    assert str(info.value).startswith(first_required)


def test_http_cdn_settings() -> None:
    s = load_settings(
        {"CMS_CDN_PROVIDER": "http", "CMS_CDN_HTTP_URLS": "http://a:6081/, http://b:6081", "CMS_CDN_HTTP_METHOD": "ban"}
    )
    assert s.cdn_http_urls == ("http://a:6081", "http://b:6081")
    assert s.cdn_http_method == "BAN"


def test_bootstrap_key_error_does_not_echo_the_secret() -> None:
    secret = "not a valid secret but long enough to be one !!"
    with pytest.raises(ConfigError) as info:
        load_settings({"CMS_BOOTSTRAP_KEY": secret})
    assert secret not in str(info.value)


def test_unrelated_variables_are_ignored() -> None:
    assert load_settings({"CMS_UNKNOWN": "x", "PATH": "/bin"}) == Settings()


def test_worker_tunables_are_settings() -> None:
    """The worker's tunables are read with everything else (one config system), typed and bounded."""
    s = load_settings({
        "CMS_STEP_BACKOFF": "0.2,0.5,1", "CMS_WORKER_THREADS": "16", "CMS_RELAY_MIN_GAP_MS": "50",
        "CMS_STEP_LEASE_SECONDS": "2.5", "CMS_BROKER_NAMESPACE": "bench",
    })
    p = s.pipeline
    assert p.backoff == (0.2, 0.5, 1.0) and p.backoff_for(5) == 1.0
    assert p.worker_threads == 16 and isinstance(p.worker_threads, int)
    assert p.relay_min_gap == 0.05 and p.lease_seconds == 2.5 and p.namespace == "bench"
    assert load_settings({}).pipeline == Settings().pipeline


@pytest.mark.parametrize(("name", "value"), [
    ("CMS_STEP_BACKOFF", "1,x"), ("CMS_STEP_BACKOFF", "-1"), ("CMS_STEP_BACKOFF", "inf"),
    ("CMS_WORKER_THREADS", "0"), ("CMS_STEP_MAX_ATTEMPTS", "many"), ("CMS_RELAY_MIN_GAP_MS", "5000"),
])
def test_invalid_worker_tunable_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}"):
        load_settings({name: value})


def test_bootstrap_key_length_is_bounded() -> None:
    assert load_settings({"CMS_BOOTSTRAP_KEY": "k" * 256}).bootstrap_key == "k" * 256
    with pytest.raises(ConfigError, match="32 to 256"):
        load_settings({"CMS_BOOTSTRAP_KEY": "k" * 257})


def test_rate_limits_can_be_off() -> None:
    settings = load_settings({"CMS_RATE_LIMIT_MANAGEMENT": "OFF", "CMS_RATE_LIMIT_DELIVERY": "120/10"})
    assert settings.rate_limit_management is None and settings.rate_limit_delivery == (120, 10)
