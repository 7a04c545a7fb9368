"""Settings from the CMS_* environment: one msgspec Struct, validated once at start-up."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec

MAX_SECRET_CHARS = 256  # no credential is longer: a longer one presented is refused unread


class ConfigError(Exception):
    """A CMS_* variable has an invalid value; the message names it in one line."""


def _parse_rate(name: str, value: str) -> tuple[int, int] | None:
    """COUNT/SECONDS, or `off` (no limit and no bookkeeping: for benchmarks and trusted networks)."""
    if value.strip().lower() == "off":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ConfigError(f"{name}={value!r}: expected COUNT/SECONDS, e.g. 600/60, or off")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class PipelineConfig:
    """Lease, retry and polling settings of the worker process (`Settings.pipeline`)."""

    lease_seconds: float = 30.0  # CMS_STEP_LEASE_SECONDS: a running step's lease (renewed while it runs)
    max_attempts: int = 8  # CMS_STEP_MAX_ATTEMPTS: then the step is `failed` (visible, not retried)
    backoff: tuple[float, ...] = (1, 2, 5, 15, 30, 60)  # CMS_STEP_BACKOFF: seconds before attempt n+1
    time_limit_seconds: float = 600.0  # CMS_STEP_TIME_LIMIT_SECONDS: Dramatiq's time limit per message
    sweep_interval: float = 5.0  # CMS_SWEEP_INTERVAL_SECONDS
    reenqueue_after: float = 10.0  # CMS_REENQUEUE_AFTER_SECONDS: a message older than this may be lost...
    reenqueue_busy_after: float = 60.0  # CMS_REENQUEUE_BUSY_SECONDS: ...even while the queue has a backlog
    relay_interval: float = 1.0  # CMS_RELAY_INTERVAL_SECONDS: periodic sweep of unrelayed events
    relay_min_gap: float = 0.1  # CMS_RELAY_MIN_GAP_MS: a busy relay gathers the events of this long into one pass
    relay_batch: int = 200  # CMS_RELAY_BATCH
    worker_threads: int = 8  # CMS_WORKER_THREADS: concurrent steps per worker process
    local_steps: int = 8  # CMS_WORKER_LOCAL_STEPS: steps a relaying worker runs itself at once, no message (0: all by message, re-render batches too)
    deliver_batch: int = 100  # CMS_DELIVER_BATCH: most deliver steps one run takes from a backlog
    rerender_batch: int = 500  # CMS_RERENDER_BATCH: entries per batch of a schema change's background work
    poll_ms: int = 100  # CMS_WORKER_POLL_MS: Dramatiq's longest idle poll of a queue (the latency of a message after a quiet spell)
    namespace: str = "cms"  # CMS_BROKER_NAMESPACE: prefix of the broker's Redis keys
    sweep_batch: int = 1000
    retention_days: float = 30.0  # CMS_OUTBOX_RETENTION_DAYS: events (and their steps) older are pruned; 0 keeps all
    prune_interval: float = 3600.0  # CMS_OUTBOX_PRUNE_INTERVAL_SECONDS

    def backoff_for(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        return self.backoff[min(max(attempts, 1), len(self.backoff)) - 1]


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    data_dir: Path = Path(".cms")
    database_url: str | None = None
    database_read_url: str | None = None
    redis_url: str | None = None
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_prefix: str = ""
    cdn_provider: str = "none"
    # CDN purge provider settings (CMS_CDN_*; see storage/cdn/ and workers/outputs.py)
    cdn_distribution_id: str | None = None
    cdn_endpoint_url: str | None = None
    cdn_fastly_service_id: str | None = None
    cdn_fastly_token: str | None = None
    cdn_fastly_api_url: str = "https://api.fastly.com"
    cdn_cloudflare_zone_id: str | None = None
    cdn_cloudflare_token: str | None = None
    cdn_cloudflare_api_url: str = "https://api.cloudflare.com/client/v4"
    cdn_http_urls: tuple[str, ...] = ()
    cdn_http_method: str = "PURGE"
    host: str = "127.0.0.1"
    delivery_port: int = 8000
    management_port: int = 8001
    public_url_delivery: str | None = None
    public_url_management: str | None = None
    asset_base_url: str | None = None
    bootstrap_key: str | None = None
    public_delivery: bool = False
    rate_limit_management: tuple[int, int] | None = (600, 60)  # None: off
    rate_limit_delivery: tuple[int, int] | None = (6000, 60)
    max_body_bytes: int = 1024 * 1024
    max_bulk_body_bytes: int = 16 * 1024 * 1024
    max_upload_bytes: int = 50 * 1000 * 1000
    webhook_retry_schedule: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    webhook_allow_private: bool = False
    webhook_secret_key: str | None = None  # base64 of 32 bytes; unset: CMS_DATA_DIR/webhook-secret.key
    webhook_timeout_seconds: float = 15.0
    worker_metrics_port: int = 0  # cms worker serves /metrics (Prometheus) on this port; 0: not at all
    graphql_introspection: bool = True
    cache_control: str = "public, max-age=60, stale-while-revalidate=300"
    delivery_cache_mb: int = 256
    max_include_entries: int = 1000
    max_include_mb: int = 32
    delivery_statement_timeout_ms: int = 3000
    db_pool_size: int = 10
    # A schema change of a type with at most this many entries re-renders them in its request (the
    # change is visible at once); more: in the background (app/schema/rerenders.py). Also decides
    # whether new field indexes are built in the request (published_documents ≤ 100× this).
    schema_inline_entries: int = 500
    pipeline: PipelineConfig = msgspec.field(default_factory=PipelineConfig)

    @property
    def delivery_url(self) -> str:
        return (self.public_url_delivery or f"http://{self.host}:{self.delivery_port}").rstrip("/")

    @property
    def management_url(self) -> str:
        return (self.public_url_management or f"http://{self.host}:{self.management_port}").rstrip("/")

    @property
    def assets_url(self) -> str:
        return (self.asset_base_url or f"{self.delivery_url}/cdn").rstrip("/")

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def webhook_key_file(self) -> Path:
        return self.data_dir / "webhook-secret.key"


def _bool(name: str, value: str) -> bool:
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={value!r}: expected 0 or 1")


def _number(name: str, value: str, low: float, high: float, *, integer: bool = False) -> float:
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: expected {'an integer' if integer else 'a number'}") from None
    if not low <= number <= high:
        raise ConfigError(f"{name}={value!r}: expected {low}..{high}" if integer
                          else f"{name}={value!r}: expected {low:g}..{high:g}")
    return number


def _int(name: str, value: str, low: int, high: int) -> int:
    return int(_number(name, value, low, high, integer=True))


def _url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    if value.split("://", 1)[0] not in schemes or "://" not in value:
        raise ConfigError(f"{name}={value!r}: expected a URL starting with {' or '.join(s + '://' for s in schemes)}")
    return value


CDN_PROVIDERS = ("none", "cloudfront", "fastly", "cloudflare", "http")


_CDN_REQUIRED = {
    "cloudfront": ("CMS_CDN_DISTRIBUTION_ID",),
    "fastly": ("CMS_CDN_FASTLY_SERVICE_ID", "CMS_CDN_FASTLY_TOKEN"),
    "cloudflare": ("CMS_CDN_CLOUDFLARE_ZONE_ID", "CMS_CDN_CLOUDFLARE_TOKEN"),
    "http": ("CMS_CDN_HTTP_URLS",),
}


def _load_cdn_settings(get: Callable[[str], str | None], kw: dict[str, object]) -> None:
    """The CMS_CDN_* settings of the purge providers; the selected provider's required ones must be set."""
    ident = r"[A-Za-z0-9_\-]{1,128}"
    for var, key in (
        ("CMS_CDN_DISTRIBUTION_ID", "cdn_distribution_id"),
        ("CMS_CDN_FASTLY_SERVICE_ID", "cdn_fastly_service_id"),
        ("CMS_CDN_CLOUDFLARE_ZONE_ID", "cdn_cloudflare_zone_id"),
    ):
        if (v := get(var)) is not None:
            if not re.fullmatch(ident, v):
                raise ConfigError(f"{var}={v!r}: expected letters, digits, '-' or '_'")
            kw[key] = v
    for var, key in (
        ("CMS_CDN_FASTLY_TOKEN", "cdn_fastly_token"),
        ("CMS_CDN_CLOUDFLARE_TOKEN", "cdn_cloudflare_token"),
    ):
        if (v := get(var)) is not None:
            if not re.fullmatch(r"[\x21-\x7e]+", v):
                raise ConfigError(f"{var}: must be printable characters without spaces")
            kw[key] = v
    for var, key in (
        ("CMS_CDN_ENDPOINT_URL", "cdn_endpoint_url"),
        ("CMS_CDN_FASTLY_API_URL", "cdn_fastly_api_url"),
        ("CMS_CDN_CLOUDFLARE_API_URL", "cdn_cloudflare_api_url"),
    ):
        if (v := get(var)) is not None:
            kw[key] = _url(var, v, ("http", "https")).rstrip("/")
    if (v := get("CMS_CDN_HTTP_URLS")) is not None:
        urls = tuple(part.strip().rstrip("/") for part in v.split(",") if part.strip())
        if not urls:
            raise ConfigError(f"CMS_CDN_HTTP_URLS={v!r}: expected comma-separated http(s) URLs")
        kw["cdn_http_urls"] = tuple(_url("CMS_CDN_HTTP_URLS", url, ("http", "https")) for url in urls)
    if (v := get("CMS_CDN_HTTP_METHOD")) is not None:
        if v.upper() not in ("PURGE", "BAN"):
            raise ConfigError(f"CMS_CDN_HTTP_METHOD={v!r}: expected PURGE or BAN")
        kw["cdn_http_method"] = v.upper()
    provider = str(kw.get("cdn_provider", "none"))
    for var in _CDN_REQUIRED.get(provider, ()):
        if get(var) is None:
            raise ConfigError(f"{var}: required when CMS_CDN_PROVIDER={provider}")


# (variable, field, low, high): the worker's numeric tunables; integers where the default is one.
_PIPELINE_NUMBERS = (
    ("CMS_STEP_LEASE_SECONDS", "lease_seconds", 1, 3600),
    ("CMS_STEP_MAX_ATTEMPTS", "max_attempts", 1, 1000),
    ("CMS_STEP_TIME_LIMIT_SECONDS", "time_limit_seconds", 1, 86400),
    ("CMS_SWEEP_INTERVAL_SECONDS", "sweep_interval", 0.05, 3600),
    ("CMS_REENQUEUE_AFTER_SECONDS", "reenqueue_after", 0.1, 86400),
    ("CMS_REENQUEUE_BUSY_SECONDS", "reenqueue_busy_after", 0.1, 86400),
    ("CMS_RELAY_INTERVAL_SECONDS", "relay_interval", 0.05, 60),
    ("CMS_RELAY_BATCH", "relay_batch", 1, 10000),
    ("CMS_WORKER_THREADS", "worker_threads", 1, 256),
    ("CMS_WORKER_LOCAL_STEPS", "local_steps", 0, 256),
    ("CMS_DELIVER_BATCH", "deliver_batch", 1, 1000),
    ("CMS_RERENDER_BATCH", "rerender_batch", 1, 5000),
    ("CMS_WORKER_POLL_MS", "poll_ms", 10, 60000),
    ("CMS_OUTBOX_RETENTION_DAYS", "retention_days", 0, 36500),
    ("CMS_OUTBOX_PRUNE_INTERVAL_SECONDS", "prune_interval", 0.05, 86400),
)


def _seconds_list(name: str, value: str) -> tuple[float, ...]:
    try:
        seconds = tuple(float(part) for part in value.split(","))
    except ValueError:
        raise ConfigError(f"{name}={value!r}: expected comma-separated seconds") from None
    if not seconds or any(not 0 <= s < float("inf") for s in seconds):
        raise ConfigError(f"{name}={value!r}: expected non-negative seconds")
    return seconds


def _load_pipeline(get: Callable[[str], str | None]) -> PipelineConfig:
    defaults = PipelineConfig()
    kw: dict[str, object] = {}
    for var, key, low, high in _PIPELINE_NUMBERS:
        if (v := get(var)) is not None:
            number = _number(var, v, low, high)
            kw[key] = int(number) if isinstance(getattr(defaults, key), int) else number
    if (v := get("CMS_RELAY_MIN_GAP_MS")) is not None:
        kw["relay_min_gap"] = _number("CMS_RELAY_MIN_GAP_MS", v, 0, 1000) / 1000
    if (v := get("CMS_STEP_BACKOFF")) is not None:
        kw["backoff"] = _seconds_list("CMS_STEP_BACKOFF", v)
    if (v := get("CMS_BROKER_NAMESPACE")) is not None:
        kw["namespace"] = v
    return replace(defaults, **kw)  # type: ignore[arg-type]


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read every CMS_* variable; raise ConfigError naming the first bad one."""
    env = os.environ if env is None else env
    kw: dict[str, object] = {}

    def get(name: str) -> str | None:
        value = env.get(name)
        return value if value not in (None, "") else None

    if (v := get("CMS_DATA_DIR")) is not None:
        kw["data_dir"] = Path(v)
    pg = ("postgres", "postgresql")
    if (v := get("CMS_DATABASE_URL")) is not None:
        kw["database_url"] = _url("CMS_DATABASE_URL", v, pg)
    if (v := get("CMS_DATABASE_READ_URL")) is not None:
        kw["database_read_url"] = _url("CMS_DATABASE_READ_URL", v, pg)
    if (v := get("CMS_REDIS_URL")) is not None:
        kw["redis_url"] = _url("CMS_REDIS_URL", v, ("redis", "rediss", "unix"))
    if (v := get("CMS_S3_BUCKET")) is not None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", v):
            raise ConfigError(f"CMS_S3_BUCKET={v!r}: not a valid bucket name")
        kw["s3_bucket"] = v
    if (v := get("CMS_S3_ENDPOINT_URL")) is not None:
        kw["s3_endpoint_url"] = _url("CMS_S3_ENDPOINT_URL", v, ("http", "https"))
    if (v := get("CMS_S3_PREFIX")) is not None:
        kw["s3_prefix"] = v.strip("/") + "/" if v.strip("/") else ""
    if (v := get("CMS_CDN_PROVIDER")) is not None:
        if v not in CDN_PROVIDERS:
            raise ConfigError(f"CMS_CDN_PROVIDER={v!r}: expected one of {', '.join(CDN_PROVIDERS)}")
        kw["cdn_provider"] = v
    _load_cdn_settings(get, kw)
    if (v := get("CMS_HOST")) is not None:
        kw["host"] = v
    if (v := get("CMS_DELIVERY_PORT")) is not None:
        kw["delivery_port"] = _int("CMS_DELIVERY_PORT", v, 0, 65535)
    if (v := get("CMS_MANAGEMENT_PORT")) is not None:
        kw["management_port"] = _int("CMS_MANAGEMENT_PORT", v, 0, 65535)
    for var, key in (
        ("CMS_PUBLIC_URL_DELIVERY", "public_url_delivery"),
        ("CMS_PUBLIC_URL_MANAGEMENT", "public_url_management"),
        ("CMS_ASSET_BASE_URL", "asset_base_url"),
    ):
        if (v := get(var)) is not None:
            kw[key] = _url(var, v, ("http", "https"))
    if (v := get("CMS_BOOTSTRAP_KEY")) is not None:
        if not 32 <= len(v) <= MAX_SECRET_CHARS or not re.fullmatch(r"[\x21-\x7e]+", v):
            raise ConfigError(f"CMS_BOOTSTRAP_KEY: must be 32 to {MAX_SECRET_CHARS} printable characters without spaces")
        kw["bootstrap_key"] = v
    if (v := env.get("CMS_PUBLIC_DELIVERY")) is not None:
        kw["public_delivery"] = _bool("CMS_PUBLIC_DELIVERY", v)
    if (v := get("CMS_RATE_LIMIT_MANAGEMENT")) is not None:
        kw["rate_limit_management"] = _parse_rate("CMS_RATE_LIMIT_MANAGEMENT", v)
    if (v := get("CMS_RATE_LIMIT_DELIVERY")) is not None:
        kw["rate_limit_delivery"] = _parse_rate("CMS_RATE_LIMIT_DELIVERY", v)
    if (v := get("CMS_MAX_BODY_BYTES")) is not None:
        kw["max_body_bytes"] = _int("CMS_MAX_BODY_BYTES", v, 1024, 1 << 30)
    if (v := get("CMS_MAX_UPLOAD_BYTES")) is not None:
        kw["max_upload_bytes"] = _int("CMS_MAX_UPLOAD_BYTES", v, 1024, 1 << 40)
    if (v := get("CMS_WEBHOOK_RETRY_SCHEDULE")) is not None:
        kw["webhook_retry_schedule"] = _seconds_list("CMS_WEBHOOK_RETRY_SCHEDULE", v)
    if (v := get("CMS_WORKER_METRICS_PORT")) is not None:
        kw["worker_metrics_port"] = _int("CMS_WORKER_METRICS_PORT", v, 0, 65535)
    if (v := get("CMS_WEBHOOK_TIMEOUT_SECONDS")) is not None:
        kw["webhook_timeout_seconds"] = _number("CMS_WEBHOOK_TIMEOUT_SECONDS", v, 0.1, 300)
    if (v := get("CMS_WEBHOOK_SECRET_KEY")) is not None:
        kw["webhook_secret_key"] = v  # checked where it is used (webhooks.signing.SecretBox.from_text)
    if (v := env.get("CMS_WEBHOOK_ALLOW_PRIVATE")) is not None:
        kw["webhook_allow_private"] = _bool("CMS_WEBHOOK_ALLOW_PRIVATE", v)
    if (v := env.get("CMS_GRAPHQL_INTROSPECTION")) is not None:
        kw["graphql_introspection"] = _bool("CMS_GRAPHQL_INTROSPECTION", v)
    if (v := get("CMS_CACHE_CONTROL")) is not None:
        kw["cache_control"] = v
    for var, key, low, high in (
        ("CMS_DELIVERY_CACHE_MB", "delivery_cache_mb", 0, 1 << 20),
        ("CMS_DELIVERY_MAX_INCLUDES", "max_include_entries", 1, 1_000_000),
        ("CMS_DELIVERY_MAX_INCLUDE_MB", "max_include_mb", 1, 1 << 14),
        ("CMS_DELIVERY_STATEMENT_TIMEOUT_MS", "delivery_statement_timeout_ms", 100, 600_000),
    ):
        if (v := get(var)) is not None:
            kw[key] = _int(var, v, low, high)
    if (v := get("CMS_DB_POOL_SIZE")) is not None:
        kw["db_pool_size"] = _int("CMS_DB_POOL_SIZE", v, 1, 500)
    if (v := get("CMS_SCHEMA_INLINE_ENTRIES")) is not None:
        kw["schema_inline_entries"] = _int("CMS_SCHEMA_INLINE_ENTRIES", v, 0, 100_000)
    kw["pipeline"] = _load_pipeline(get)
    return Settings(**kw)  # type: ignore[arg-type]
