"""Where the worker's output goes: the object store and the CDN purger, from Settings.

`cms.storage` never imports the app, so it knows nothing of its configuration: these two factories
read `Settings` and build the store (``CMS_S3_*``, else ``CMS_DATA_DIR``) and the purger
(``CMS_CDN_*``) that the worker and ``cms republish`` write to.
"""

from __future__ import annotations

from cms.app.config import ConfigError, Settings
from cms.storage.cdn import CdnPurger, CloudflarePurger, CloudFrontPurger, FastlyPurger, HttpPurger, NoPurger
from cms.storage.objects import LocalObjectStore, ObjectStore, S3ObjectStore


def object_store_from_settings(settings: Settings) -> ObjectStore:
    """S3 when ``CMS_S3_BUCKET`` is set, else the local directory ``CMS_DATA_DIR/objects``."""
    if settings.s3_bucket:
        return S3ObjectStore(settings.s3_bucket, settings.s3_endpoint_url, settings.s3_prefix)
    return LocalObjectStore(settings.objects_dir)


def purger_from_settings(settings: Settings) -> CdnPurger:
    """The purger for ``settings.cdn_provider``; ConfigError naming the variable if a setting is missing."""
    provider = settings.cdn_provider

    def need(value: str | None, variable: str) -> str:
        if not value:
            raise ConfigError(f"{variable}: required when CMS_CDN_PROVIDER={provider}")
        return value

    if provider == "none":
        return NoPurger()
    if provider == "cloudfront":
        return CloudFrontPurger(
            need(settings.cdn_distribution_id, "CMS_CDN_DISTRIBUTION_ID"),
            endpoint_url=settings.cdn_endpoint_url,
        )
    if provider == "fastly":
        return FastlyPurger(
            need(settings.cdn_fastly_service_id, "CMS_CDN_FASTLY_SERVICE_ID"),
            need(settings.cdn_fastly_token, "CMS_CDN_FASTLY_TOKEN"),
            api_url=settings.cdn_fastly_api_url,
        )
    if provider == "cloudflare":
        return CloudflarePurger(
            need(settings.cdn_cloudflare_zone_id, "CMS_CDN_CLOUDFLARE_ZONE_ID"),
            need(settings.cdn_cloudflare_token, "CMS_CDN_CLOUDFLARE_TOKEN"),
            api_url=settings.cdn_cloudflare_api_url,
        )
    if provider == "http":
        if not settings.cdn_http_urls:
            raise ConfigError("CMS_CDN_HTTP_URLS: required when CMS_CDN_PROVIDER=http")
        return HttpPurger(settings.cdn_http_urls, method=settings.cdn_http_method)
    raise ConfigError(f"CMS_CDN_PROVIDER={provider!r}: unknown provider")
