"""The local directory store: files under a root directory, each with its metadata beside it."""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import itertools
import logging
import os
import secrets
import zlib
from collections.abc import Iterator
from pathlib import Path

import msgspec

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
        self._links = True  # hard links (put_copies), until the filesystem refuses one

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

    def _new_tmp(self) -> str:
        # Unique within the store (counter) and between stores (pid and a random token); O_EXCL
        # guards the rest.
        return f"{self._tmp_s}/put-{self._tmp_token}-{next(self._tmp_names)}.tmp"

    def _write_tmp(self, data: bytes, xattr: bytes | None = None) -> str:
        """A new temporary file holding data (and the attribute): its path."""
        self._ensure_dir(self._tmp_s)
        tmp = self._new_tmp()
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
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return tmp

    def _move(self, tmp: str, target: str) -> None:
        """Move the temporary file into place (removed if that fails)."""
        self._ensure_dir(os.path.dirname(target))
        try:
            try:
                os.replace(tmp, target)
            except FileNotFoundError:
                self._ensure_dir(os.path.dirname(target), again=True)
                os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _write_atomic(self, target: str, data: bytes, xattr: bytes | None = None) -> None:
        self._move(self._write_tmp(data, xattr), target)

    def _linked(self, source: str, data: bytes, xattr: bytes) -> str:
        """A new temporary name for the file `source` (a hard link), or a copy where links fail."""
        if self._links:
            link = self._new_tmp()
            try:
                os.link(source, link)
                return link
            except OSError as exc:
                if exc.errno == errno.EMLINK:  # this file has too many names: a copy for this key only
                    return self._write_tmp(data, xattr)
                if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                self._links = False
                log.info("%s: no hard links here (%s); every key gets its own file", self.root, exc)
        return self._write_tmp(data, xattr)

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
        return self.put_copies(
            [key], body, content_type=content_type, cache_control=cache_control, surrogate_keys=surrogate_keys,
            version=version, metadata=metadata,
        )[0]

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
        """`put` of one object at every key, in order: one file hard-linked at each key (its bytes and
        metadata are stored once: an entry's by-slug file costs no second copy). Each key keeps its
        own version guard; a later write of either key replaces that path with a new file and leaves
        the other as it was. Without links here: a copy per key."""
        meta = _sidecar_encoder.encode(_Sidecar(content_type, cache_control, _metadata(surrogate_keys, version, metadata)))
        targets = [f"{self._root_s}/{validate_key(key)}" for key in keys]
        if not self.uses_xattr:
            return [self._put_with_sidecar(key, target, bytes(body), meta, version)
                    for key, target in zip(keys, targets, strict=True)]
        source: str | None = None  # written when the first key takes it; the last key gets the file itself
        written: builtins.list[bool] = []
        try:
            for i, (key, target) in enumerate(zip(keys, targets, strict=True)):
                with self._locked(key, exclusive=True):
                    current, in_sidecar = self._stored_meta(key, target)
                    if current is not None and _is_newer(_parse_version(current.metadata.get(VERSION_META)), version):
                        written.append(False)
                        continue
                    if source is None:
                        source = self._write_tmp(bytes(body), meta)
                    if i == len(keys) - 1:
                        placed, source = source, None
                    else:
                        placed = self._linked(source, bytes(body), meta)
                    self._move(placed, target)
                    if in_sidecar:  # an older layout's sidecar must not outlive the metadata it described
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(f"{self._meta_s}/{key}.meta.json")
                    written.append(True)
        finally:
            if source is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(source)
        return written

    def _put_with_sidecar(self, key: str, target: str, body: bytes, meta: bytes, version: int | None) -> bool:
        with self._locked(key, exclusive=True):
            current, _ = self._stored_meta(key, target)
            if current is not None and _is_newer(_parse_version(current.metadata.get(VERSION_META)), version):
                return False
            # metadata first: after a crash between the two, the sidecar already carries the new
            # version, so an older write stays refused and the redelivered write restores the body
            self._write_atomic(f"{self._meta_s}/{key}.meta.json", meta)
            self._write_atomic(target, body)
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

    def head(self, key: str) -> dict[str, str] | None:
        """The metadata alone: one getxattr by path (no open, no read of the body)."""
        target = str(self.path_for(key))
        if self.uses_xattr:
            try:
                raw = os.getxattr(target, self.XATTR)
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError as exc:
                if exc.errno != errno.ENODATA:
                    raise
            else:
                meta = self._decode_meta(key, raw)
                return dict(meta.metadata) if meta is not None else {}
        with self._locked(key, exclusive=False):
            if not os.path.isfile(target):
                return None
            sidecar = self._read_sidecar(key)
        return dict(sidecar.metadata) if sidecar is not None else {}

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

    def list(self, prefix: str = "", limit: int | None = None) -> builtins.list[str]:
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
            if limit is not None and len(keys) >= limit:
                break
        keys.sort()
        return keys if limit is None else keys[:limit]

