"""The object store: a local directory and S3 (moto's server on loopback), same behaviour."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import pytest

from cms.app.config import load_settings
from cms.storage.objects import (
    AsyncObjectStore,
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    s3_client,
    validate_key,
)
from cms.workers.outputs import object_store_from_settings
from tests.support import FailingProxy

ROOT = Path(__file__).resolve().parents[2]
JSON = "application/json"
CACHE = "public, max-age=60"
BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside.json",
    "entries/../../outside.json",
    "entries/./x.json",
    "entries//x.json",
    "entries/x.json/",
    "entries/\x00.json",
    "entries\\..\\x.json",
    ".meta/entries/x.json.meta.json",
    ".tmp/x",
    "a" * 1025,
]


# ---------------------------------------------------------------------------------------------
# fixtures


_raw_clients: dict[str, Any] = {}


def raw_client(endpoint: str) -> Any:
    """A plain boto3 client (default config) to look at the bucket behind the store's back."""
    if endpoint not in _raw_clients:
        _raw_clients[endpoint] = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        ).client("s3", endpoint_url=endpoint)
    return _raw_clients[endpoint]


@pytest.fixture(scope="session")
def store_client(moto_endpoint: str) -> Any:
    """One configured client (s3_client: retries, timeouts) shared by the S3 stores of the tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        return s3_client(moto_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    name = f"cms-test-{uuid.uuid4().hex[:12]}"
    raw_client(moto_endpoint).create_bucket(Bucket=name)
    return name


def s3_store(bucket: str, endpoint: str, client: Any, prefix: str = "") -> S3ObjectStore:
    return S3ObjectStore(bucket, endpoint, prefix=prefix, client=client)


@pytest.fixture(params=["local", "local-sidecar", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        local = LocalObjectStore(tmp_path / "objects")
        assert local.uses_xattr  # the test machines' filesystems have user extended attributes
        return local
    if request.param == "local-sidecar":
        return LocalObjectStore(tmp_path / "objects", metadata="sidecar")
    endpoint = request.getfixturevalue("moto_endpoint")
    client = request.getfixturevalue("store_client")
    return s3_store(request.getfixturevalue("bucket"), endpoint, client, prefix="site")


def put(
    store: ObjectStore, key: str, body: bytes, version: int | None, tags: list[str] | None = None
) -> bool:
    return store.put(
        key, body, content_type=JSON, cache_control=CACHE, surrogate_keys=tags or ["entry:1"], version=version
    )


# ---------------------------------------------------------------------------------------------
# both stores


def test_put_get_roundtrip(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)
    assert store.get("entries/article/en/1.json") is None
    assert store.put(
        "entries/article/en/1.json",
        b'{"id":"1"}',
        content_type=JSON,
        cache_control=CACHE,
        surrogate_keys=["entry:1", "type:article", "entry:1"],
        version=3,
    )
    obj = store.get("entries/article/en/1.json")
    assert obj is not None
    assert obj.body == b'{"id":"1"}'
    assert obj.content_type == JSON
    assert obj.cache_control == CACHE
    assert obj.metadata == {"cms-version": "3", "surrogate-key": "entry:1 type:article"}
    assert obj.version == 3
    assert obj.surrogate_keys == ["entry:1", "type:article"]
    assert store.get("entries/article/en") is None  # a "directory" of keys is not an object


def test_version_guard_on_put(store: ObjectStore) -> None:
    key = "entries/article/en/by-slug/hello.json"
    assert put(store, key, b"v2", 2)
    assert put(store, key, b"v1", 1) is False
    obj = store.get(key)
    assert obj is not None and obj.body == b"v2" and obj.version == 2
    # the same version again is applied (redelivery, re-render of a dependent entry)
    assert put(store, key, b"v2 again", 2)
    assert put(store, key, b"v4", 4)
    assert put(store, key, b"v3", 3) is False
    obj = store.get(key)
    assert obj is not None and obj.body == b"v4" and obj.version == 4
    # version=None writes unconditionally
    assert put(store, key, b"forced", None)
    obj = store.get(key)
    assert obj is not None and obj.body == b"forced" and obj.version is None


def test_put_copies_keeps_each_keys_guard(store: ObjectStore) -> None:
    slug, own = "entries/article/en/by-slug/hello.json", "entries/article/en/7.json"
    assert put(store, slug, b"v5 of another entry", 5)
    assert store.put_copies(
        [slug, own], b"v2", content_type=JSON, cache_control=CACHE, surrogate_keys=["entry:7"], version=2,
    ) == [False, True]
    assert store.get(slug).body == b"v5 of another entry"  # type: ignore[union-attr]
    both = store.put_copies(
        [slug, own], b"v6", content_type=JSON, cache_control=CACHE, surrogate_keys=["entry:7"], version=6,
    )
    assert both == [True, True]
    for key in (slug, own):
        obj = store.get(key)
        assert obj is not None and obj.body == b"v6" and obj.version == 6 and obj.surrogate_keys == ["entry:7"]
    # a later write of one key leaves the other as it was
    assert put(store, own, b"v7", 7)
    assert store.get(slug).body == b"v6" and store.get(own).body == b"v7"  # type: ignore[union-attr]
    assert store.delete(slug)
    assert store.get(slug) is None and store.get(own).body == b"v7"  # type: ignore[union-attr]
    assert store.list("entries/") == [own]


def test_local_put_copies_stores_the_bytes_once(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    keys = ["entries/article/en/by-slug/hello.json", "entries/article/en/7.json"]
    assert store.put_copies(keys, b"x" * 5000, content_type=JSON, cache_control=CACHE,
                            surrogate_keys=["entry:7"], version=1) == [True, True]
    slug_file, own_file = (store.path_for(k).stat() for k in keys)
    if store.uses_xattr:
        assert slug_file.st_ino == own_file.st_ino and own_file.st_nlink == 2  # one file, two names
    else:  # (no user xattrs here: metadata in sidecars, per key; one copy per key)
        assert slug_file.st_ino != own_file.st_ino and store.get(keys[0]) == store.get(keys[1])
    assert os.listdir(tmp_path / "objects" / ".tmp") == []
    assert put(store, keys[1], b"y", 2)  # a new file at that name: the other keeps the old one
    assert store.path_for(keys[0]).stat().st_nlink == 1 and store.get(keys[0]).body == b"x" * 5000  # type: ignore[union-attr]
    sidecars = LocalObjectStore(tmp_path / "sidecars", metadata="sidecar")  # the fallback: a copy per key
    assert sidecars.put_copies(keys, b"z", content_type=JSON, cache_control=CACHE, surrogate_keys=[], version=3) == [
        True, True]
    assert all(sidecars.get(k).body == b"z" and sidecars.get(k).version == 3 for k in keys)  # type: ignore[union-attr]


def test_head_reads_the_writers_metadata_without_the_body(store: ObjectStore) -> None:
    key, other = "entries/article/en/8.json", "entries/article/en/by-slug/hi.json"
    assert store.head(key) is None
    assert store.put_copies([other, key], b"x" * 3000, content_type=JSON, cache_control=CACHE,
                            surrogate_keys=["entry:8"], version=4, metadata={"cms-slug": "hi"}) == [True, True]
    for k in (key, other):
        assert store.head(k) == {"cms-slug": "hi", "surrogate-key": "entry:8", "cms-version": "4"}
        assert store.get(k).metadata == store.head(k)  # type: ignore[union-attr]
    assert put(store, key, b"y", 5)  # a write without metadata of the writer's replaces it too
    assert store.head(key) == {"surrogate-key": "entry:1", "cms-version": "5"}
    assert store.delete(key) and store.head(key) is None
    assert store.head("entries/article/en") is None  # a "directory" of keys is no object
    for bad in ({"cms-version": "9"}, {"surrogate-key": "x"}, {"Slug": "x"}, {"cms-slug": "two words"},
                {"cms-slug": ""}, {"cms-slug": "é"}):
        with pytest.raises(ValueError):
            store.put(key, b"z", content_type=JSON, cache_control=CACHE, surrogate_keys=[], metadata=bad)
    assert store.head(key) is None


def test_local_put_copies_copies_a_file_with_too_many_names_and_keeps_linking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EMLINK is about one file (its link count): that key gets a copy, later writes link again;
    EPERM (e.g. protected hard links) is about the place: no more links from this store."""
    store = LocalObjectStore(tmp_path / "objects")
    keys = ["entries/article/en/by-slug/a.json", "entries/article/en/1.json"]
    real_link = os.link
    refusals = iter([errno.EMLINK])

    def link(source: str, target: str) -> None:
        refusal = next(refusals, None)
        if refusal is not None:
            raise OSError(refusal, os.strerror(refusal))
        real_link(source, target)

    monkeypatch.setattr(os, "link", link)
    for version in (1, 2):
        assert store.put_copies(keys, b"v", content_type=JSON, cache_control=CACHE, surrogate_keys=[],
                                version=version) == [True, True]
        inodes = {store.path_for(k).stat().st_ino for k in keys}
        assert len(inodes) == (2 if version == 1 else 1)  # a copy after EMLINK, then links again
    refusals = iter([errno.EPERM])
    assert store.put_copies(keys, b"v", content_type=JSON, cache_control=CACHE, surrogate_keys=[], version=3)
    assert store.put_copies(keys, b"v", content_type=JSON, cache_control=CACHE, surrogate_keys=[], version=4)
    assert len({store.path_for(k).stat().st_ino for k in keys}) == 2  # no links since the EPERM
    assert all(store.get(k).version == 4 for k in keys)  # type: ignore[union-attr]


def test_version_guard_on_delete(store: ObjectStore) -> None:
    key = "entries/article/en/2.json"
    assert put(store, key, b"v3", 3)
    assert store.delete(key, version=2) is False
    assert store.get(key) is not None
    assert store.delete(key, version=3)
    assert store.get(key) is None
    assert store.delete(key, version=1)  # already gone: nothing to refuse
    assert put(store, key, b"v5", 5)
    assert store.delete(key)  # unguarded
    assert store.get(key) is None
    assert store.list("entries/") == []


def test_list_by_prefix(store: ObjectStore) -> None:
    keys = [
        "entries/article/en/1.json",
        "entries/article/en/index.json",
        "entries/article/en/by-slug/a.json",
        "entries/article/de/1.json",
        "entries/author/en/9.json",
    ]
    for key in keys:
        assert put(store, key, key.encode(), 1)
    assert store.list("") == sorted(keys)
    assert store.list("entries/article/en/") == sorted(k for k in keys if k.startswith("entries/article/en/"))
    assert store.list("entries/art") == sorted(k for k in keys if k.startswith("entries/article/"))
    assert store.list("entries/article/en/by-slug/") == ["entries/article/en/by-slug/a.json"]
    assert store.list("nothing/") == []
    # limit: at most that many of the prefix's keys (bounded steps, e.g. a deleted locale's files)
    some = store.list("entries/article/", limit=2)
    assert len(some) == 2 and set(some) <= {k for k in keys if k.startswith("entries/article/")}
    assert sorted(store.list("entries/article/", limit=100)) == sorted(k for k in keys if k.startswith("entries/article/"))


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        put(store, key, b"x", 1)
    with pytest.raises(ValueError):
        store.get(key)
    with pytest.raises(ValueError):
        store.delete(key, version=1)


def test_bad_surrogate_keys_are_rejected(store: ObjectStore) -> None:
    with pytest.raises(ValueError):
        put(store, "entries/x.json", b"x", 1, tags=["two words"])


async def test_async_wrapper(store: ObjectStore) -> None:
    wrapped = AsyncObjectStore(store)
    assert await wrapped.put(
        "entries/a/en/1.json", b"1", content_type=JSON, cache_control=CACHE, surrogate_keys=["a"], version=1
    )
    assert (await wrapped.get("entries/a/en/1.json")).body == b"1"  # type: ignore[union-attr]
    assert await wrapped.list("entries/") == ["entries/a/en/1.json"]
    assert await wrapped.delete("entries/a/en/1.json", version=0) is False
    assert await wrapped.delete("entries/a/en/1.json", version=1)


async def test_run_all_keeps_order_and_lets_every_operation_finish(store: ObjectStore) -> None:
    """A long run of local operations goes to threads: results stay in order, and an error is raised
    only after the other threads are done (none keeps writing behind the caller's back)."""
    wrapped = AsyncObjectStore(store)
    n = AsyncObjectStore.THREADED_FROM + 6
    keys = [f"entries/a/en/{i}.json" for i in range(n)]
    calls = [partial(put, store, key, key.encode(), 1) for key in keys]
    assert await wrapped.run_all(calls) == [True] * n
    assert await wrapped.run_all([partial(store.get, key) for key in keys]) == [store.get(key) for key in keys]

    def broken() -> bool:
        raise OSError("disk on fire")

    again = [partial(put, store, key, b"v2", 2) for key in keys]
    with pytest.raises(OSError, match="disk on fire"):
        await wrapped.run_all([broken, *again])
    # raised once the others were done: nothing changes after it
    after = [store.get(key) for key in keys]
    await asyncio.sleep(0.05)
    assert [store.get(key) for key in keys] == after and after[-1].body == b"v2"  # type: ignore[union-attr]

    # cancelled: what has not started does not start, what runs is waited for
    def slow_put(key: str) -> bool:
        time.sleep(0.005)
        return put(store, key, b"v3", 3)

    task = asyncio.create_task(wrapped.run_all([partial(slow_put, key) for key in keys]))
    await asyncio.sleep(0.03)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    settled = [store.get(key).body for key in keys]  # type: ignore[union-attr]
    await asyncio.sleep(0.1)
    assert [store.get(key).body for key in keys] == settled  # type: ignore[union-attr]
    assert 0 < settled.count(b"v3") < n


# ---------------------------------------------------------------------------------------------
# local directory


@pytest.mark.parametrize("metadata", ["xattr", "sidecar"])
def test_local_files_are_served_bytes_and_metadata_is_hidden(tmp_path: Path, metadata: str) -> None:
    root = tmp_path / "objects"
    store = LocalObjectStore(root, metadata=metadata)
    assert put(store, "entries/article/en/1.json", b'{"a":1}', 7)
    assert (root / "entries/article/en/1.json").read_bytes() == b'{"a":1}'
    assert store.path_for("entries/article/en/1.json") == root / "entries/article/en/1.json"
    # only the bodies are outside the dot-directories; no temporary files left behind
    visible = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.relative_to(root).parts[0].startswith(".")
    )
    assert visible == ["entries/article/en/1.json"]
    sidecar = root / ".meta/entries/article/en/1.json.meta.json"
    if metadata == "xattr":
        # body and metadata are one inode: replaced together, no sidecar file, no per-key lock file
        assert b'"cms-version":"7"' in os.getxattr(root / "entries/article/en/1.json", LocalObjectStore.XATTR)
        assert not sidecar.exists()
    else:
        assert sidecar.is_file()
    assert not list((root / ".meta").rglob("*.json.lock"))
    assert list((root / ".tmp").iterdir()) == []
    assert store.list() == ["entries/article/en/1.json"]


def test_local_sidecar_layout_is_read_and_replaced_by_the_xattr_layout(tmp_path: Path) -> None:
    """A directory written with sidecars (older versions, or a filesystem without xattrs) keeps
    its version guard and metadata when a store with extended attributes takes over."""
    root = tmp_path / "objects"
    old = LocalObjectStore(root, metadata="sidecar")
    assert put(old, "entries/a.json", b"v5", 5, ["entry:a"])
    sidecar = root / ".meta/entries/a.json.meta.json"
    assert sidecar.is_file()
    new = LocalObjectStore(root, metadata="xattr")
    obj = new.get("entries/a.json")
    assert obj is not None and obj.version == 5 and obj.surrogate_keys == ["entry:a"] and obj.body == b"v5"
    assert put(new, "entries/a.json", b"v4", 4) is False  # the sidecar's version still guards
    assert put(new, "entries/a.json", b"v6", 6, ["entry:a", "type:x"])
    assert not sidecar.exists()  # it must not outlive the metadata it described
    obj = new.get("entries/a.json")
    assert obj is not None and obj.version == 6 and obj.surrogate_keys == ["entry:a", "type:x"]
    # a body that vanished (crash between sidecar and body) is still guarded by its sidecar
    assert put(old, "entries/b.json", b"v9", 9)
    (root / "entries/b.json").unlink()
    assert put(new, "entries/b.json", b"v8", 8) is False
    assert new.delete("entries/b.json", version=8) is False
    assert new.delete("entries/b.json", version=9) and not (root / ".meta/entries/b.json.meta.json").exists()


def test_local_store_rejects_an_unknown_metadata_layout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metadata"):
        LocalObjectStore(tmp_path, metadata="db")


@pytest.mark.parametrize("metadata", ["xattr", "sidecar"])
def test_local_concurrent_writers_keep_the_newest_version(tmp_path: Path, metadata: str) -> None:
    store = LocalObjectStore(tmp_path / "objects", metadata=metadata)
    versions = list(range(60))
    versions.reverse()
    versions[10], versions[50] = versions[50], versions[10]

    def write(version: int) -> None:
        put(store, "entries/race.json", f"v{version}".encode(), version)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, versions))
    obj = store.get("entries/race.json")
    assert obj is not None and obj.version == 59 and obj.body == b"v59"


WRITER = """
import random, sys
from cms.storage.objects import LocalObjectStore
store = LocalObjectStore(sys.argv[1], metadata=sys.argv[3])
versions = list(range(int(sys.argv[2]), 200, 4))
random.shuffle(versions)
for v in versions:
    store.put("entries/race.json", b"v%d" % v, content_type="application/json", cache_control="no-cache",
              surrogate_keys=["race"], version=v)
    obj = store.get("entries/race.json")
    assert obj is not None and obj.version is not None and obj.version >= v
    assert obj.body == b"v%d" % obj.version
"""


@pytest.mark.parametrize("metadata", ["xattr", "sidecar"])
def test_local_version_guard_holds_across_processes(tmp_path: Path, metadata: str) -> None:
    root = tmp_path / "objects"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(offset), metadata], cwd=ROOT, stderr=subprocess.PIPE
        )
        for offset in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    obj = LocalObjectStore(root).get("entries/race.json")
    assert obj is not None and obj.version == 199 and obj.body == b"v199"


def test_validate_key_accepts_ordinary_keys() -> None:
    for key in (
        "entries/article/en/1.json",
        "entries/a/en/by-slug/h\u00e9llo-w\u00f6rld.json",
        "a",
        "x/.well-known",
    ):
        assert validate_key(key) == key


def test_object_store_from_settings(tmp_path: Path, moto_endpoint: str, aws_env: None) -> None:
    local = object_store_from_settings(load_settings({"CMS_DATA_DIR": str(tmp_path)}))
    assert isinstance(local, LocalObjectStore) and local.root == tmp_path / "objects"
    s3 = object_store_from_settings(
        load_settings(
            {"CMS_S3_BUCKET": "my-bucket", "CMS_S3_ENDPOINT_URL": moto_endpoint, "CMS_S3_PREFIX": "/p/q/"}
        )
    )
    assert isinstance(s3, S3ObjectStore)
    assert (s3.bucket, s3.prefix, s3.endpoint_url) == ("my-bucket", "p/q/", moto_endpoint)
    retries = s3.client.meta.config.retries
    assert retries["total_max_attempts"] == 9 and retries["mode"] == "standard"  # 8 retries


# ---------------------------------------------------------------------------------------------
# S3


def test_s3_object_carries_prefix_and_headers(moto_endpoint: str, bucket: str, store_client: Any) -> None:
    store = s3_store(bucket, moto_endpoint, store_client, prefix="/site/")
    assert store.prefix == "site/"
    assert put(store, "entries/article/en/1.json", b"{}", 5, tags=["entry:1", "type:article"])
    raw = raw_client(moto_endpoint)
    listed = [o["Key"] for o in raw.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == ["site/entries/article/en/1.json"]
    head = raw.head_object(Bucket=bucket, Key="site/entries/article/en/1.json")
    assert head["ContentType"] == JSON
    assert head["CacheControl"] == CACHE
    assert head["Metadata"] == {"cms-version": "5", "surrogate-key": "entry:1 type:article"}
    assert store.list("") == ["entries/article/en/1.json"]
    # an object outside the prefix is invisible to this store
    raw.put_object(Bucket=bucket, Key="other/x.json", Body=b"x")
    assert store.list("") == ["entries/article/en/1.json"]
    assert s3_store(bucket, moto_endpoint, store_client).list("") == [
        "other/x.json",
        "site/entries/article/en/1.json",
    ]


class RacingStore(S3ObjectStore):
    """Lets another writer slip in between the version check (HEAD) and the conditional write."""

    def __init__(self, *args: Any, interloper: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.interloper = interloper
        self.heads = 0

    def _head(self, full_key: str) -> tuple[str, int | None] | None:
        result = super()._head(full_key)
        self.heads += 1
        if self.heads == 1:
            self.interloper()
        return result


def test_s3_version_guard_is_compare_and_swap(moto_endpoint: str, bucket: str, store_client: Any) -> None:
    other = s3_store(bucket, moto_endpoint, store_client)
    assert put(other, "k.json", b"v1", 1)
    racing = RacingStore(
        bucket, moto_endpoint, client=store_client, interloper=lambda: put(other, "k.json", b"v5", 5)
    )
    assert put(racing, "k.json", b"v3", 3) is False  # If-Match failed, re-checked, v5 is newer
    assert racing.heads == 2
    obj = other.get("k.json")
    assert obj is not None and obj.body == b"v5"

    # a create racing a create: If-None-Match: *
    racing = RacingStore(
        bucket, moto_endpoint, client=store_client, interloper=lambda: put(other, "new.json", b"v9", 9)
    )
    assert put(racing, "new.json", b"v2", 2) is False
    assert other.get("new.json").body == b"v9"  # type: ignore[union-attr]

    # delete racing a newer write
    racing = RacingStore(
        bucket, moto_endpoint, client=store_client, interloper=lambda: put(other, "k.json", b"v8", 8)
    )
    assert racing.delete("k.json", version=6) is False
    assert other.get("k.json").body == b"v8"  # type: ignore[union-attr]


def test_s3_5xx_is_retried(moto_endpoint: str, bucket: str, aws_env: None) -> None:
    host, port = moto_endpoint.removeprefix("http://").split(":")
    proxy = FailingProxy((host, int(port)), failures=3).start()
    try:
        store = S3ObjectStore(bucket, proxy.url, prefix="p")
        assert put(store, "entries/a/en/1.json", b"survived", 1)
        assert [s[2] for s in proxy.seen].count(503) == 3
        assert any(method == "PUT" and status == 0 for method, _, status in proxy.seen)
        # written once, with its metadata, as seen directly on the server
        head = raw_client(moto_endpoint).head_object(Bucket=bucket, Key="p/entries/a/en/1.json")
        assert head["Metadata"]["cms-version"] == "1"
        proxy.failures = 5  # two more 503s on the next requests
        obj = store.get("entries/a/en/1.json")
        assert obj is not None and obj.body == b"survived"
        assert [s[2] for s in proxy.seen].count(503) == 5
        assert store.delete("entries/a/en/1.json", version=1)
    finally:
        proxy.stop()
