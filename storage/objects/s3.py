"""The S3 store (AWS S3 or an S3-compatible store: MinIO, R2, moto); conditional writes guard versions."""

from __future__ import annotations

import builtins
import contextlib
import logging
from typing import Any

from .base import (
    VERSION_META,
    StoredObject,
    _is_newer,
    _metadata,
    _parse_version,
    _validate_prefix,
    validate_key,
)

log = logging.getLogger("cms.storage")


def s3_client(endpoint_url: str | None = None, *, region_name: str | None = None) -> Any:
    """A boto3 S3 client with retries (standard mode, ``max_attempts=8``, i.e. up to 8 retries after
    the first try: 500/502/503/504, throttling and connection errors are retried with jittered
    exponential backoff) and bounded connect/read timeouts. Credentials come
    from the usual boto3 chain. Path-style addressing when ``endpoint_url`` is set (S3-compatible
    stores and moto on loopback)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 8, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=32,
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name=region_name, config=config
    )


def _error_code(exc: Exception) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


class ConcurrentWriteError(RuntimeError):
    """A conditional S3 write kept losing to concurrent writers; the caller should retry later."""


class S3ObjectStore:
    """Objects in an S3 bucket under ``prefix`` (e.g. ``"site/"``; keys are stored as prefix + key).

    The version guard reads the stored ``cms-version`` with HEAD, then writes conditionally: a
    ``PutObject``/``DeleteObject`` with ``If-Match: <etag of the object just read>``, or
    ``If-None-Match: *`` when there was none, so a concurrent writer that slipped in between makes
    the write fail with 412 and the check is repeated (compare-and-swap; AWS S3, MinIO, R2 and moto
    honour these headers). If the store answers ``NotImplemented`` to a conditional request, this
    instance falls back to unconditional writes (logged once): the guard is then best effort, with
    a race window between the HEAD and the write.
    """

    CAS_ATTEMPTS = 8
    parallel_io = True  # network round trips: run many at once

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        prefix: str = "",
        client: Any = None,
        *,
        conditional_writes: bool = True,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        prefix = prefix.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.client = client if client is not None else s3_client(endpoint_url)
        self.conditional_writes = conditional_writes

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.bucket!r}, prefix={self.prefix!r})"

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _head_object(self, full_key: str) -> dict[str, Any] | None:
        """The HEAD response of the object, or None when it does not exist."""
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=full_key))
        except Exception as exc:
            code, status = _error_code(exc)
            if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _head(self, full_key: str) -> tuple[str, int | None] | None:
        """(etag, stored version) of the object, or None when it does not exist."""
        head = self._head_object(full_key)
        if head is None:
            return None
        return head["ETag"], _parse_version(head.get("Metadata", {}).get(VERSION_META))

    def _conditional(self, call: Any, kwargs: dict[str, Any], condition: dict[str, str]) -> bool:
        """Run ``call`` with the condition; False if the precondition failed (caller re-checks)."""
        if not self.conditional_writes:
            call(**kwargs)
            return True
        try:
            call(**kwargs, **condition)
        except Exception as exc:
            code, status = _error_code(exc)
            if status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 409:
                return False
            if code == "NoSuchKey" and "IfMatch" in condition:
                return False  # removed since the HEAD
            if status == 501 or code == "NotImplemented":
                log.warning("%r: conditional writes not supported, version guard is best effort", self)
                self.conditional_writes = False
                call(**kwargs)
                return True
            raise
        return True

    def put(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str,
        cache_control: str,
        surrogate_keys: builtins.list[str],
        version: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> bool:
        full_key = self._key(key)
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": full_key,
            "Body": bytes(body),
            "ContentType": content_type,
            "CacheControl": cache_control,
            "Metadata": _metadata(surrogate_keys, version, metadata),
        }
        if version is None:
            self.client.put_object(**kwargs)
            return True
        for _ in range(self.CAS_ATTEMPTS):
            current = self._head(full_key)
            if current is not None and _is_newer(current[1], version):
                return False
            condition = {"IfNoneMatch": "*"} if current is None else {"IfMatch": current[0]}
            if self._conditional(self.client.put_object, kwargs, condition):
                return True
        raise ConcurrentWriteError(f"put {full_key!r}: lost {self.CAS_ATTEMPTS} races to concurrent writers")

    def put_copies(
        self,
        keys: builtins.list[str],
        body: bytes,
        *,
        content_type: str,
        cache_control: str,
        surrogate_keys: builtins.list[str],
        version: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> builtins.list[bool]:
        """One put per key, in order (S3 has no links; a copy costs what a put does)."""
        return [self.put(key, body, content_type=content_type, cache_control=cache_control,
                         surrogate_keys=surrogate_keys, version=version, metadata=metadata) for key in keys]

    def get(self, key: str) -> StoredObject | None:
        full_key = self._key(key)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=full_key)
        except Exception as exc:
            code, status = _error_code(exc)
            if status == 404 or code in ("NoSuchKey", "404"):
                return None
            raise
        with contextlib.closing(response["Body"]) as stream:
            body = stream.read()
        return StoredObject(
            body,
            response.get("ContentType") or "application/octet-stream",
            response.get("CacheControl") or "",
            dict(response.get("Metadata") or {}),
        )

    def head(self, key: str) -> dict[str, str] | None:
        head = self._head_object(self._key(key))
        return None if head is None else dict(head.get("Metadata") or {})

    def delete(self, key: str, *, version: int | None = None) -> bool:
        full_key = self._key(key)
        if version is None:
            self.client.delete_object(Bucket=self.bucket, Key=full_key)
            return True
        kwargs = {"Bucket": self.bucket, "Key": full_key}
        for _ in range(self.CAS_ATTEMPTS):
            current = self._head(full_key)
            if current is None:
                return True
            if _is_newer(current[1], version):
                return False
            if self._conditional(self.client.delete_object, kwargs, {"IfMatch": current[0]}):
                return True
        raise ConcurrentWriteError(
            f"delete {full_key!r}: lost {self.CAS_ATTEMPTS} races to concurrent writers"
        )

    def list(self, prefix: str = "", limit: int | None = None) -> builtins.list[str]:
        _validate_prefix(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        keys: builtins.list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", ()):
                keys.append(item["Key"][len(self.prefix) :])
            if limit is not None and len(keys) >= limit:
                break  # the pages after it are never asked for
        keys.sort()
        return keys if limit is None else keys[:limit]

