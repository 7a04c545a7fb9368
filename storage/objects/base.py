"""What every object store shares: `StoredObject`, the `ObjectStore` protocol, key validation, the
metadata every object carries, the version comparison, and `AsyncObjectStore`.

The methods of an `ObjectStore` are synchronous and thread-safe; async callers (actors, the
delivery app) run them in a thread, e.g. ``await asyncio.to_thread(store.put, ...)``, or wrap the
store in `AsyncObjectStore`, which does exactly that.

Writes are version-guarded: an object carries a version (the publisher uses its document's render
number) in the metadata ``cms-version`` and
``put``/``delete`` with ``version=N`` never replace or remove an object whose stored version is
greater than ``N`` (equal versions are overwritten, so a redelivered event or a re-render of a
dependent entry at the same version is applied). ``version=None`` writes unconditionally.

Metadata carried with every object (S3 user metadata, ``x-amz-meta-*``; locally an extended attribute of the file, or a JSON
sidecar where the filesystem has none):

- ``cms-version``: the version (absent when written with ``version=None``)
- ``surrogate-key``: the surrogate keys, space-separated (CDNs read it, e.g. Fastly from
  ``x-amz-meta-surrogate-key``)
- what the writer adds (``metadata=`` of ``put``/``put_copies``: lowercase names, printable ASCII
  values), e.g. the publisher's ``cms-slug``; `head` reads it back without the body.

Keys are relative, ``/``-separated paths (``entries/article/en/abc.json``): not empty, at most 1024
bytes, no leading ``/``, no empty, ``.`` or ``..`` segments, no NUL or backslash, and the first
segment does not start with ``.`` (that namespace is reserved for the local store's bookkeeping).
A bad key raises `ValueError` in every store.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgspec

VERSION_META = "cms-version"
SURROGATE_META = "surrogate-key"
MAX_KEY_BYTES = 1024
_SURROGATE_KEY = re.compile(r"[\x21-\x7e]+")
_META_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_META_VALUE = re.compile(r"[\x21-\x7e]{1,256}")  # S3 user metadata travels as HTTP headers


class StoredObject(msgspec.Struct, frozen=True):
    body: bytes
    content_type: str
    cache_control: str
    metadata: dict[str, str]

    @property
    def version(self) -> int | None:
        return version_of(self.metadata)

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
        metadata: dict[str, str] | None = None,
    ) -> bool:
        """Store ``body`` at ``key`` (with the writer's ``metadata``); False (nothing written) if the
        stored version is newer."""
        ...

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
        """``put`` of the same object at every key, in order (each with its own version guard); a
        store may keep the bytes once (hard links)."""
        ...

    def get(self, key: str) -> StoredObject | None:
        """The object at ``key``, or None."""
        ...

    def head(self, key: str) -> dict[str, str] | None:
        """The metadata of the object at ``key`` without its body (S3 HEAD, a file's attribute), or None."""
        ...

    def delete(self, key: str, *, version: int | None = None) -> bool:
        """Remove ``key``; False (nothing removed) if the stored version is newer. A missing key is True."""
        ...

    def list(self, prefix: str = "", limit: int | None = None) -> builtins.list[str]:
        """Every key starting with ``prefix`` (plain string prefix), sorted; with ``limit``, at most
        that many of them (not necessarily the first: for work in bounded steps, e.g. deleting)."""
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


def _metadata(
    surrogate_keys: builtins.list[str], version: int | None, extra: dict[str, str] | None = None,
) -> dict[str, str]:
    for tag in surrogate_keys:
        if not _SURROGATE_KEY.fullmatch(tag):
            raise ValueError(f"surrogate key {tag!r} must be printable ASCII without spaces")
    meta = {}
    for name, value in (extra or {}).items():
        if not _META_NAME.fullmatch(name) or name in (SURROGATE_META, VERSION_META):
            raise ValueError(f"metadata name {name!r}: lowercase letters, digits and '-', not a reserved name")
        if not _META_VALUE.fullmatch(value):
            raise ValueError(f"metadata {name!r}: 1 to 256 printable ASCII characters without spaces")
        meta[name] = value
    meta[SURROGATE_META] = " ".join(dict.fromkeys(surrogate_keys))
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


def version_of(metadata: dict[str, str]) -> int | None:
    """The version an object's metadata (`head`) carries, or None."""
    return _parse_version(metadata.get(VERSION_META))


def _is_newer(stored: int | None, version: int | None) -> bool:
    """True if an object at ``stored`` must not be replaced by a write at ``version``."""
    return version is not None and stored is not None and stored > version


T = TypeVar("T")


class _Stop:
    """Set when the caller of `run_all` is cancelled: operations not started yet are not started."""

    stopped = False


def _run_each(stop: _Stop, calls: Sequence[Callable[[], T]]) -> list[T]:
    results = []
    for call in calls:
        if stop.stopped:
            raise asyncio.CancelledError
        results.append(call())
    return results


async def _all_done(stop: _Stop, awaitables: list[Awaitable[T]]) -> list[T]:
    """Their results in order, or the first error, once every one is done. A cancelled caller starts
    no further operation and waits for those already in a thread (they cannot be stopped) before it
    is cancelled itself."""
    gathered = asyncio.gather(*awaitables, return_exceptions=True)
    try:
        results = await asyncio.shield(gathered)
    except asyncio.CancelledError:
        stop.stopped = True
        with contextlib.suppress(BaseException):
            await gathered
        raise
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


class AsyncObjectStore:
    """The same operations as coroutines.

    A network store (S3) runs each operation in a worker thread, so a store that stops answering
    never blocks the event loop and a step's time limit still interrupts the step. A local store
    runs them on the event loop itself: each takes well under a millisecond, and a thread hand-off
    costs more, above all while the loop is busy (the I/O thread then waits for the GIL after every
    system call; at 50 publishes/s that doubled the deliver latency). A stuck local disk would stall
    the worker's loop, but it would stall PostgreSQL on the same disk as well. A long `run_all` of
    local operations (a re-render's or a bulk's files) is the exception: its operations wait on the
    disk (a rename over a file not in the page cache), which blocked the loop for a third of a 1M
    re-render; they run in two threads (one hand-off each) while the loop goes on with the other
    parts' database work (1,011 -> 1,111 entries/s at 1M, bench/README.md).
    """

    CONCURRENCY = 16  # operations in flight at once in `run_all` on a network store
    INLINE_CHUNK = 32  # local operations between two yields to the event loop
    THREADED_FROM = 64  # a `run_all` of this many local operations or more runs in THREADS threads
    THREADS = 2  # (4 measured slower: the renames of one directory wait for each other)

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.inline = not getattr(store, "parallel_io", True)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)`, a blocking store operation, run as this store should run it."""
        if self.inline:
            return fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def run_all(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """Run many store operations (closures over `store`); results in order, the first error raised.
        Operations in threads are waited for, also when the caller is cancelled: none goes on
        writing behind the caller's back (after its transaction and locks are gone)."""
        stop = _Stop()
        if self.inline and len(calls) >= self.THREADED_FROM:
            size = -(-len(calls) // self.THREADS)
            chunks = await _all_done(stop, [
                asyncio.to_thread(_run_each, stop, calls[start : start + size]) for start in range(0, len(calls), size)
            ])
            return [result for chunk in chunks for result in chunk]
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
                return (await asyncio.to_thread(_run_each, stop, [call]))[0]

        return await _all_done(stop, [one(call) for call in calls])

    async def put(
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
        return await self.call(
            self.store.put,
            key,
            body,
            content_type=content_type,
            cache_control=cache_control,
            surrogate_keys=surrogate_keys,
            version=version,
            metadata=metadata,
        )

    async def get(self, key: str) -> StoredObject | None:
        return await self.call(self.store.get, key)

    async def head(self, key: str) -> dict[str, str] | None:
        return await self.call(self.store.head, key)

    async def delete(self, key: str, *, version: int | None = None) -> bool:
        return await self.call(self.store.delete, key, version=version)

    async def list(self, prefix: str = "", limit: int | None = None) -> builtins.list[str]:
        return await self.call(self.store.list, prefix, limit)
