"""The object store for prerendered files: S3 (or any S3-compatible store) and a local directory.

Both implement `ObjectStore`. The methods are synchronous and thread-safe; async callers (actors,
the delivery app) run them in a thread, e.g. ``await asyncio.to_thread(store.put, ...)``, or wrap the
store in `AsyncObjectStore`, which does exactly that.

Writes are version-guarded: an object carries its entry version in the metadata ``cms-version`` and
``put``/``delete`` with ``version=N`` never replace or remove an object whose stored version is
greater than ``N`` (equal versions are overwritten, so a redelivered event or a re-render of a
dependent entry at the same version is applied). ``version=None`` writes unconditionally.

Metadata carried with every object (S3 user metadata, ``x-amz-meta-*``; locally an extended attribute of the file, or a JSON
sidecar where the filesystem has none):

- ``cms-version``: the entry version (absent when written with ``version=None``)
- ``surrogate-key``: the surrogate keys, space-separated (CDNs read it, e.g. Fastly from
  ``x-amz-meta-surrogate-key``)

Keys are relative, ``/``-separated paths (``entries/article/en/abc.json``): not empty, at most 1024
bytes, no leading ``/``, no empty, ``.`` or ``..`` segments, no NUL or backslash, and the first
segment does not start with ``.`` (that namespace is reserved for the local store's bookkeeping).
A bad key raises `ValueError` in every store.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import fcntl
import itertools
import logging
import os
import re
import secrets
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgspec

log = logging.getLogger("cms.storage")

VERSION_META = "cms-version"
SURROGATE_META = "surrogate-key"
MAX_KEY_BYTES = 1024
_SURROGATE_KEY = re.compile(r"[\x21-\x7e]+")


class StoredObject(msgspec.Struct, frozen=True):
    body: bytes
    content_type: str
    cache_control: str
    metadata: dict[str, str]

    @property
    def version(self) -> int | None:
        return _parse_version(self.metadata.get(VERSION_META))

    @property
    def surrogate_keys(self) -> list[str]:
        return self.metadata.get(SURROGATE_META, "").split()


@runtime_checkable
class ObjectStore(Protocol):
    def put(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str,
        cache_control: str,
        surrogate_keys: builtins.list[str],
        version: int | None = None,
    ) -> bool:
        """Store ``body`` at ``key``; False (nothing written) if the stored version is newer."""
        ...

    def get(self, key: str) -> StoredObject | None:
        """The object at ``key``, or None."""
        ...

    def delete(self, key: str, *, version: int | None = None) -> bool:
        """Remove ``key``; False (nothing removed) if the stored version is newer. A missing key is True."""
        ...

    def list(self, prefix: str = "") -> builtins.list[str]:
        """Every key starting with ``prefix`` (plain string prefix), sorted."""
        ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe object key, else raise ValueError."""
    if not isinstance(key, str) or not key:
        raise ValueError("object key must be a non-empty string")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ValueError(f"object key longer than {MAX_KEY_BYTES} bytes")
    if "\x00" in key or "\\" in key:
        raise ValueError(f"object key {key!r} contains NUL or backslash")
    if key.startswith("/"):
        raise ValueError(f"object key {key!r} is absolute")
    segments = key.split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ValueError(f"object key {key!r} has an empty, '.' or '..' segment")
    if segments[0].startswith("."):
        raise ValueError(f"object key {key!r} starts with a reserved '.' segment")
    return key


def _validate_prefix(prefix: str) -> str:
    if "\x00" in prefix or "\\" in prefix or prefix.startswith("/") or ".." in prefix.split("/"):
        raise ValueError(f"bad object key prefix {prefix!r}")
    return prefix


def _metadata(surrogate_keys: builtins.list[str], version: int | None) -> dict[str, str]:
    for tag in surrogate_keys:
        if not _SURROGATE_KEY.fullmatch(tag):
            raise ValueError(f"surrogate key {tag!r} must be printable ASCII without spaces")
    meta = {SURROGATE_META: " ".join(dict.fromkeys(surrogate_keys))}
    if version is not None:
        if version < 0:
            raise ValueError("version must be >= 0")
        meta[VERSION_META] = str(version)
    return meta


def _parse_version(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _is_newer(stored: int | None, version: int | None) -> bool:
    """True if an object at ``stored`` must not be replaced by a write at ``version``."""
    return version is not None and stored is not None and stored > version


# ---------------------------------------------------------------------------------------------
# local directory


class _Sidecar(msgspec.Struct):
    content_type: str
    cache_control: str
    metadata: dict[str, str]


_sidecar_encoder = msgspec.json.Encoder()
_sidecar_decoder = msgspec.json.Decoder(_Sidecar)


def _stored(body: bytes, meta: _Sidecar | None) -> StoredObject:
    if meta is None:
        return StoredObject(body, "application/octet-stream", "", {})
    return StoredObject(body, meta.content_type, meta.cache_control, dict(meta.metadata))


class LocalObjectStore:
    """Files under ``root`` (served as-is at ``/cdn/``); each file's metadata rides with it.

    Writes go to a temporary file in ``root/.tmp/`` and are moved into place with ``os.replace``, so
    readers see the old or the new bytes, never a torn file. The metadata (content type, cache
    control, version, surrogate keys) is an extended attribute (``user.cms``) set on the temporary
    file before the move, so body and metadata are replaced together, with one new inode per write
    and no lock needed to read them as a pair. On a filesystem without user extended attributes
    (``metadata="sidecar"``, chosen automatically) the metadata is a JSON sidecar in
    ``root/.meta/<key>.meta.json`` instead, written before the body, and ``get`` reads the pair
    under a shared lock; sidecars left by that layout are read (and replaced) by the other one.
    ``put``/``delete`` hold an exclusive ``flock`` on one of ``LOCK_STRIPES`` lock files in
    ``root/.meta/locks/`` (chosen by the key's hash) while they check the version and write, which
    makes the version guard safe between threads and processes on one host. Anything serving
    ``root`` must not serve the dot-directories (`validate_key` refuses keys that would reach them).
    ``fsync=True`` also flushes every file to disk before it is moved into place.
    """

    META_DIR = ".meta"
    TMP_DIR = ".tmp"
    XATTR = "user.cms"
    # Per-key lock files cost an inode per key; stripes are created once. Only writers of keys
    # on the same stripe wait for each other, for the few system calls of one write.
    LOCK_STRIPES = 256
    parallel_io = False  # local files: many small operations are cheapest one after another

    def __init__(self, root: Path | str, *, fsync: bool = False, metadata: str = "auto") -> None:
        if metadata not in ("auto", "xattr", "sidecar"):
            raise ValueError(f"metadata={metadata!r}: expected auto, xattr or sidecar")
        self.root = Path(root)
        self.fsync = fsync
        self._meta_root = self.root / self.META_DIR
        self._tmp_root = self.root / self.TMP_DIR
        # Plain strings and a memo of the directories made: a put is a handful of system calls.
        self._root_s = str(self.root)
        self._meta_s = str(self._meta_root)
        self._tmp_s = str(self._tmp_root)
        self._locks_s = f"{self._meta_s}/locks"
        self._dirs: set[str] = set()
        self._tmp_names = itertools.count()
        self._tmp_token = f"{os.getpid()}-{secrets.token_hex(4)}"  # hosts sharing the directory too
        self._xattr: bool | None = None if metadata == "auto" else metadata == "xattr"

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    def path_for(self, key: str) -> Path:
        """Where the body of ``key`` lives (validated)."""
        return self.root / validate_key(key)

    def _meta_path(self, key: str) -> Path:
        return self._meta_root / f"{key}.meta.json"

    @property
    def uses_xattr(self) -> bool:
        """True when metadata is kept in extended attributes (probed once on this filesystem)."""
        if self._xattr is None:
            if not hasattr(os, "setxattr"):  # not Linux (e.g. macOS): no os.*xattr functions
                self._xattr = False
                return False
            self._ensure_dir(self._tmp_s)
            probe = f"{self._tmp_s}/probe-{self._tmp_token}-{next(self._tmp_names)}"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.setxattr(fd, self.XATTR, b"{}")
                self._xattr = os.getxattr(fd, self.XATTR) == b"{}"
            except OSError as exc:
                # Only "not supported here" decides the layout; anything else (a full disk, a
                # quota) must not silently switch this process to sidecars, whose readers would
                # not see the versions other processes keep in attributes.
                if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                self._xattr = False
                log.info("%s: no user extended attributes here; metadata goes to sidecar files", self.root)
            finally:
                os.close(fd)
                os.unlink(probe)
        return self._xattr

    @contextlib.contextmanager
    def _locked(self, key: str, *, exclusive: bool) -> Iterator[None]:
        """Hold the lock of the key's stripe."""
        lock_path = f"{self._locks_s}/{zlib.crc32(key.encode('utf-8', 'surrogatepass')) % self.LOCK_STRIPES}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:  # first use, or the directory was removed behind our back
            self._ensure_dir(self._locks_s, again=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _read_sidecar(self, key: str) -> _Sidecar | None:
        try:
            with open(f"{self._meta_s}/{key}.meta.json", "rb") as handle:
                raw = handle.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return self._decode_meta(key, raw)

    def _decode_meta(self, key: str, raw: bytes) -> _Sidecar | None:
        try:
            return _sidecar_decoder.decode(raw)
        except msgspec.DecodeError:
            log.warning("ignoring unreadable metadata for %s", key)
            return None

    def _stored_meta(self, key: str, target: str) -> tuple[_Sidecar | None, bool]:
        """(the stored metadata, whether it is a sidecar file); the caller holds the key's lock."""
        if self.uses_xattr:
            try:
                return self._decode_meta(key, os.getxattr(target, self.XATTR)), False
            except (FileNotFoundError, NotADirectoryError):
                pass  # no body: a sidecar may still guard the version (a crash between the two)
            except OSError as exc:
                if exc.errno != errno.ENODATA:
                    raise
        sidecar = self._read_sidecar(key)
        return sidecar, sidecar is not None

    def _ensure_dir(self, directory: str, *, again: bool = False) -> None:
        if again or directory not in self._dirs:
            os.makedirs(directory, exist_ok=True)
            self._dirs.add(directory)

    def _write_atomic(self, target: str, data: bytes, xattr: bytes | None = None) -> None:
        self._ensure_dir(self._tmp_s)
        self._ensure_dir(os.path.dirname(target))
        # Unique within the store (counter) and between stores (pid and a random token); O_EXCL
        # guards the rest.
        tmp = f"{self._tmp_s}/put-{self._tmp_token}-{next(self._tmp_names)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            self._ensure_dir(self._tmp_s, again=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            try:
                os.fchmod(fd, 0o644)  # whatever the umask: the files are served to everyone
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if xattr is not None:
                    os.setxattr(fd, self.XATTR, xattr)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.replace(tmp, target)
            except FileNotFoundError:
                self._ensure_dir(os.path.dirname(target), again=True)
                os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str,
        cache_control: str,
        surrogate_keys: builtins.list[str],
        version: int | None = None,
    ) -> bool:
        target = f"{self._root_s}/{validate_key(key)}"
        meta = _sidecar_encoder.encode(_Sidecar(content_type, cache_control, _metadata(surrogate_keys, version)))
        with self._locked(key, exclusive=True):
            current, in_sidecar = self._stored_meta(key, target)
            if current is not None and _is_newer(_parse_version(current.metadata.get(VERSION_META)), version):
                return False
            if self.uses_xattr:
                self._write_atomic(target, bytes(body), meta)
                if in_sidecar:  # an older layout's sidecar must not outlive the metadata it described
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{self._meta_s}/{key}.meta.json")
                return True
            # metadata first: after a crash between the two, the sidecar already carries the new
            # version, so an older write stays refused and the redelivered write restores the body
            self._write_atomic(f"{self._meta_s}/{key}.meta.json", meta)
            self._write_atomic(target, bytes(body))
        return True

    def get(self, key: str) -> StoredObject | None:
        target = str(self.path_for(key))
        if self.uses_xattr:
            # One open file is one inode: its bytes and its attribute always belong together.
            try:
                fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None
            try:
                try:
                    with open(fd, "rb", closefd=False) as handle:
                        body = handle.read()
                except IsADirectoryError:  # a key that names a directory of other keys
                    return None
                try:
                    raw: bytes | None = os.getxattr(fd, self.XATTR)
                except OSError as exc:
                    if exc.errno != errno.ENODATA:
                        raise
                    raw = None
            finally:
                os.close(fd)
            if raw is not None:
                return _stored(body, self._decode_meta(key, raw))
        # the sidecar layout (or a file it wrote): read the pair under the lock
        with self._locked(key, exclusive=False):
            try:
                body = Path(target).read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None
            sidecar = self._read_sidecar(key)
        return _stored(body, sidecar)

    def delete(self, key: str, *, version: int | None = None) -> bool:
        target = self.path_for(key)
        with self._locked(key, exclusive=True):
            current, _ = self._stored_meta(key, str(target))
            if current is not None and _is_newer(_parse_version(current.metadata.get(VERSION_META)), version):
                return False
            for path in (target, self._meta_path(key)):
                try:
                    path.unlink()
                except (FileNotFoundError, NotADirectoryError):
                    pass
        return True

    def list(self, prefix: str = "") -> builtins.list[str]:
        _validate_prefix(prefix)
        # walk only below the deepest directory the prefix names
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / directory if directory else self.root
        if not start.is_dir():
            return []
        keys: builtins.list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == ".":
                rel_dir = ""
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                key = f"{rel_dir}/{name}" if rel_dir else name
                if key.startswith(prefix) and not key.startswith("."):
                    keys.append(key)
        keys.sort()
        return keys


# ---------------------------------------------------------------------------------------------
# S3


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

    def _head(self, full_key: str) -> tuple[str, int | None] | None:
        """(etag, stored version) of the object, or None when it does not exist."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=full_key)
        except Exception as exc:
            code, status = _error_code(exc)
            if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
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
    ) -> bool:
        full_key = self._key(key)
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": full_key,
            "Body": bytes(body),
            "ContentType": content_type,
            "CacheControl": cache_control,
            "Metadata": _metadata(surrogate_keys, version),
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

    def list(self, prefix: str = "") -> builtins.list[str]:
        _validate_prefix(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        keys: builtins.list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", ()):
                keys.append(item["Key"][len(self.prefix) :])
        keys.sort()
        return keys


# ---------------------------------------------------------------------------------------------


T = TypeVar("T")


class AsyncObjectStore:
    """The same operations as coroutines.

    A network store (S3) runs each operation in a worker thread, so a store that stops answering
    never blocks the event loop and a step's time limit still interrupts the step. A local store
    runs them on the event loop itself: each takes well under a millisecond, and a thread hand-off
    costs more, above all while the loop is busy (the I/O thread then waits for the GIL after every
    system call; at 50 publishes/s that doubled the deliver latency). A stuck local disk would stall
    the worker's loop, but it would stall PostgreSQL on the same disk as well.
    """

    CONCURRENCY = 16  # operations in flight at once in `run_all` on a network store
    INLINE_CHUNK = 32  # local operations between two yields to the event loop

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.inline = not getattr(store, "parallel_io", True)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)`, a blocking store operation, run as this store should run it."""
        if self.inline:
            return fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def run_all(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """Run many store operations (closures over `store`); results in order, the first error raised."""
        if self.inline:
            results: list[T] = []
            for start in range(0, len(calls), self.INLINE_CHUNK):
                if start:
                    await asyncio.sleep(0)
                results.extend(call() for call in calls[start : start + self.INLINE_CHUNK])
            return results
        limit = asyncio.Semaphore(self.CONCURRENCY)

        async def one(call: Callable[[], T]) -> T:
            async with limit:
                return await asyncio.to_thread(call)

        return list(await asyncio.gather(*(one(call) for call in calls)))

    async def put(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str,
        cache_control: str,
        surrogate_keys: builtins.list[str],
        version: int | None = None,
    ) -> bool:
        return await self.call(
            self.store.put,
            key,
            body,
            content_type=content_type,
            cache_control=cache_control,
            surrogate_keys=surrogate_keys,
            version=version,
        )

    async def get(self, key: str) -> StoredObject | None:
        return await self.call(self.store.get, key)

    async def delete(self, key: str, *, version: int | None = None) -> bool:
        return await self.call(self.store.delete, key, version=version)

    async def list(self, prefix: str = "") -> builtins.list[str]:
        return await self.call(self.store.list, prefix)
