"""Publish-pipeline benchmark: publish -> file in the object store -> CDN purge, and bulk import.

  python bench/pipeline.py observe RECORDS_FILE WATCH_DIR CDN_PORT   # the observer (pipeline.sh starts it)
  python bench/pipeline.py run MANAGEMENT_URL MANAGEMENT_KEY DATA_DIR OUTDIR RECORDS_FILE

`bench/pipeline.sh` runs both; see bench/README.md ("Publish pipeline benchmark").

**The observer** is a separate process, so that its timestamps do not wait for the publisher's GIL.
It is the CDN: a tiny HTTP server on 127.0.0.1:CDN_PORT (the CMS runs with CMS_CDN_PROVIDER=http
and CMS_CDN_HTTP_URLS pointing at it) that answers every PURGE/BAN with 200 and records its time,
path and Surrogate-Key header. It also watches WATCH_DIR (`<data dir>/objects/entries/article/en`)
with inotify and records the time every file is moved into place there (the local object store
writes a temporary file and `os.replace`s it, which is an IN_MOVED_TO). Without inotify it falls back
to listing the directory every POLL_MS. Every record is one line `<CLOCK_MONOTONIC ns> <kind> ...`
in RECORDS_FILE; CLOCK_MONOTONIC is the same clock in every process, so the publisher compares
its own send times with them directly.

**The run** creates the content types author/article (as bench/seed.py) and 10 published authors,
publishes a few warm-up articles, then:

- Latency runs (RATES, default "10:30 100:20" = 10/s for 30 s, then 100/s for 20 s). Before each
  run it creates all the run's article drafts (not timed), waits until the CMS is idle and the
  machine quiet, then an open-loop publisher sends `POST /v1/entries/article/{id}/publish` at the
  fixed rate (one task per publish at its scheduled time; a slow answer never delays the next
  send). For each publish, from the moment it is sent (t0): *file visible* = the observer saw
  `{id}.json` appear, *purge sent* = the observer received a purge whose Surrogate-Key holds
  `entry:{id}`. Then it waits (up to DRAIN_TIMEOUT_S) until every file and purge has been seen.
- Bulk (BULK_N entries, default 5,000): `POST /v1/bulk` with BULK_ACTIONS (1,000) actions per
  request, atomic, each entry an `upsert` (with its id and fields) followed by a `publish` of the
  same id, BULK_CONCURRENCY (2) requests in flight. Bodies are encoded before the clock starts.
  Times from the first request to the last response (API) and to the last file seen (end to end).
- Cross-check: reads `GET /v1/events` from the start and matches each `entry.published` with its
  `entry.delivered` (by `source_event`): delivered.created_at - published.created_at, as the
  database's clock saw it (millisecond resolution; both are transaction start times).
- CPU: for every run, the cores used by other processes on this shared machine (bench/cpuacct.py),
  by the CMS as a whole and per component (worker, management, delivery, PostgreSQL, Valkey).

Env knobs: RATES ["10:30 100:20"] (rate:seconds pairs), BULK_N [5000], BULK_ACTIONS [1000],
BULK_CONCURRENCY [2], DRAIN_TIMEOUT_S [90], CREATE_CONCURRENCY [8], SETTLE_TIMEOUT_S [60],
QUIET_MAX_CORES [0.3], QUIET_WAIT_S [60], PROFILE [""] (a subset of "rate100 bulk": after the
measurements, run that phase again under `py-spy record` on the worker and the management app;
not part of the results), PROFILE_RATE [100] PROFILE_S [20], PYSPY [/tmp/pyspy/bin/py-spy],
PYSPY_ARGS [--gil], PG_LOG_MIN_DURATION_MS [""] (PostgreSQL logs slower statements),
WEBHOOK_ENDPOINTS [0] (N > 0: after the RATES runs, subscribe N endpoints served by bench/webhooks.py's
receivers, which pipeline.sh then starts, on WEBHOOK_BASE_PORT [18140] …, and run the RATES again
while the webhooks fire, `<run>-webhooks<N>`, waiting up to WEBHOOK_DRAIN_S [180] for every delivery;
then, WEBHOOK_CONTROL [1], deactivate them and run the RATES once more, `<run>-after`).
PUBLISH_TYPES ["article"] (issue 14: "article landing" runs every RATES item for each type in turn,
the landing pages (bench/seed.py's `landing`, 20 blocks, ~6 KB, 3 cta references to published
articles) as `<run>-landing`; bulk and the webhook runs stay articles).
Set by pipeline.sh: BENCH_ROOTS, BENCH_SERVER_PIDS, BENCH_COMPONENTS
("name=pid ..."), BENCH_STAMP, POLL_MS [3] (observer fallback only).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import os
import platform
import signal
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cpuacct  # noqa: E402  (bench/cpuacct.py)

# ---------------------------------------------------------------------------------------------
# the observer process: CDN recorder + file watcher

IN_CREATE = 0x100
IN_MOVED_TO = 0x80
IN_Q_OVERFLOW = 0x4000


def observe(records_path: str, watch_dirs: str, port: int) -> None:
    parent = os.getppid()
    out = open(records_path, "a", buffering=1)  # noqa: SIM115 (lives as long as the process)
    lock = threading.Lock()

    def rec(t: int, line: str) -> None:
        with lock:
            out.write(f"{t} {line}\n")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            t = time.monotonic_ns()
            n = int(self.headers.get("content-length") or 0)
            if n:
                self.rfile.read(n)
            keys = " ".join(self.headers.get("surrogate-key", "").split())
            rec(t, f"p {self.command} {self.path} {keys}".rstrip())
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PURGE = do_BAN = do_GET = do_POST = _any

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="cdn", daemon=True).start()
    rec(time.monotonic_ns(), f"ready cdn 127.0.0.1:{port}")

    def watch(watch_dir: str) -> None:
        while not os.path.isdir(watch_dir):
            time.sleep(0.02)
        libc = ctypes.CDLL(None, use_errno=True)
        fd = -1
        with contextlib.suppress(Exception):
            fd = libc.inotify_init1(os.O_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, watch_dir.encode(), IN_MOVED_TO | IN_CREATE) < 0:
                os.close(fd)
                fd = -1
        if fd < 0:
            poll_s = float(os.environ.get("POLL_MS", "3")) / 1000
            rec(time.monotonic_ns(), f"watching poll {watch_dir}")
            seen = set(os.listdir(watch_dir))
            while True:
                names = set(os.listdir(watch_dir))
                t = time.monotonic_ns()
                for name in names - seen:
                    rec(t, f"f {name}")
                seen = names
                time.sleep(poll_s)
        rec(time.monotonic_ns(), f"watching inotify {watch_dir}")
        while True:
            buf = os.read(fd, 1 << 16)
            t = time.monotonic_ns()
            lines = []
            off = 0
            while off + 16 <= len(buf):
                _wd, mask, _cookie, length = struct.unpack_from("iIII", buf, off)
                name = buf[off + 16 : off + 16 + length].rstrip(b"\0").decode(errors="replace")
                off += 16 + length
                if mask & IN_Q_OVERFLOW:
                    lines.append("overflow")
                elif name and not name.startswith("."):
                    lines.append(f"f {name}")
            with lock:
                out.writelines(f"{t} {line}\n" for line in lines)

    for watch_dir in watch_dirs.split(","):  # one thread per directory (PUBLISH_TYPES: one per type)
        threading.Thread(target=watch, args=(watch_dir,), name="watch", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while os.getppid() == parent:  # the parent (pipeline.sh) is gone: stop too
        time.sleep(0.5)
    os._exit(0)


class Records:
    """Tails the observer's file: first time each file was seen, each entry tag purged."""

    def __init__(self, path: str) -> None:
        self.f = open(path, "rb")  # noqa: SIM115
        self.rest = b""
        self.files: dict[str, list[int]] = {}
        self.purges: dict[str, list[int]] = {}      # entry id -> times of tag purges naming it
        self.path_purges: dict[str, list[int]] = {}  # object path -> times
        self.purge_requests = 0
        self.overflow = 0
        self.watching = ""
        self.watched: set[str] = set()  # every directory the observer watches (PUBLISH_TYPES)
        self.cdn_ready = False

    def poll(self) -> None:
        data = self.rest + self.f.read()
        lines = data.split(b"\n")
        self.rest = lines.pop()
        for raw in lines:
            parts = raw.decode().split(" ")
            t, kind = int(parts[0]), parts[1]
            if kind == "f":
                self.files.setdefault(parts[2], []).append(t)
            elif kind == "p":
                self.purge_requests += 1
                path = parts[3]
                if path != "/":
                    self.path_purges.setdefault(path, []).append(t)
                for key in parts[4:]:
                    if key.startswith("entry:"):
                        self.purges.setdefault(key[6:], []).append(t)
            elif kind == "ready":
                self.cdn_ready = True
            elif kind == "watching":
                self.watching = parts[2]
                self.watched.add(parts[3] if len(parts) > 3 else "")
            elif kind == "overflow":
                self.overflow += 1

    @staticmethod
    def first_after(times: list[int] | None, t0: int) -> int | None:
        if not times:
            return None
        after = [t for t in times if t >= t0]
        return min(after) if after else None


# ---------------------------------------------------------------------------------------------
# helpers


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


def stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(pct(values, 50), 1), "p95": round(pct(values, 95), 1),
            "p99": round(pct(values, 99), 1), "max": round(max(values), 1),
            "mean": round(sum(values) / len(values), 1)}


def pids_env(name: str) -> list[int]:
    return cpuacct.pids(os.environ.get(name, ""))


def components() -> dict[str, int]:
    out = {}
    for item in os.environ.get("BENCH_COMPONENTS", "").split():
        name, _, pid = item.partition("=")
        if pid.isdigit():
            out[name] = int(pid)
    return out


class Cpu:
    """CPU over a window: others / ours / the CMS (cpuacct), plus each CMS component's tree."""

    def snap(self) -> dict[str, Any]:
        s = cpuacct.snap(pids_env("BENCH_ROOTS"), pids_env("BENCH_SERVER_PIDS") or None)
        # management_worker is inside management's tree (it is there for py-spy only)
        s["components"] = {name: cpuacct.ours([pid]) for name, pid in components().items()
                           if name != "management_worker"}
        return s

    def diff(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = cpuacct.diff(a, b)
        secs = max(b["t"] - a["t"], 1e-6)
        out["component_cores"] = {
            name: round((b["components"].get(name, 0) - ticks) / cpuacct.TICK / secs, 3)
            for name, ticks in a["components"].items()
        }
        return out


def wait_quiet() -> float | None:
    """Up to QUIET_WAIT_S, wait for a 2 s window in which others use < QUIET_MAX_CORES."""
    wait_s, max_cores = env_float("QUIET_WAIT_S", 60), env_float("QUIET_MAX_CORES", 0.3)
    if wait_s <= 0 or not os.environ.get("BENCH_ROOTS"):
        return None
    deadline = time.monotonic() + wait_s
    while True:
        roots = pids_env("BENCH_ROOTS")
        a = cpuacct.snap(roots)
        time.sleep(2)
        others = cpuacct.diff(a, cpuacct.snap(roots))["others_cores"]
        if others < max_cores:
            return others
        if time.monotonic() >= deadline:
            log(f"machine still busy (others use {others} cores); measuring anyway")
            return others
        log(f"others use {others} cores (>= {max_cores}): waiting for a quieter moment")


def settle() -> None:
    """Up to SETTLE_TIMEOUT_S, wait until the CMS is idle (< 0.1 cores over 2 s)."""
    server = pids_env("BENCH_SERVER_PIDS")
    if not server:
        time.sleep(2)
        return
    deadline = time.monotonic() + env_float("SETTLE_TIMEOUT_S", 60)
    while True:
        a = cpuacct.snap([], server)
        time.sleep(2)
        cores = cpuacct.diff(a, cpuacct.snap([], server)).get("server_cores", 0.0)
        if cores < 0.1:
            return
        if time.monotonic() >= deadline:
            log(f"CMS still busy ({cores} cores); measuring anyway")
            return
        log(f"CMS busy ({cores} cores): waiting")


# ---------------------------------------------------------------------------------------------
# the CMS side

def article_fields(i: int, tag: str, author_id: str) -> dict[str, Any]:
    import random

    from seed import WORDS

    rnd = random.Random(f"{tag}-{i}")
    words: list[str] = []
    size = 0
    while size < 2048:
        w = rnd.choice(WORDS)
        words.append(w)
        size += len(w) + 1
    title = " ".join(rnd.choice(WORDS) for _ in range(5)).capitalize()
    return {"title": f"{title} {tag} {i}", "slug": f"{tag}-{i:05d}", "body": " ".join(words)[:2048],
            "author": {"id": author_id, "type": "author"}}


def landing_fields_for(i: int, tag: str, targets: list[str]) -> dict[str, Any]:
    """Issue 14: a landing page of 20 blocks (bench/seed.py's generator), its 3 cta blocks pointing
    at published articles (`targets`)."""
    import random

    from seed import landing_fields

    rnd = random.Random(f"{tag}-{i}")
    picks = [targets[(i * 3 + j) % len(targets)] for j in range(3)]
    return landing_fields(rnd, f"Landing {tag} {i}", f"{tag}-{i:05d}", picks)


def publish_types() -> list[str]:
    """PUBLISH_TYPES ["article"]: the types each RATES item publishes, in order (article, landing)."""
    types = os.environ.get("PUBLISH_TYPES", "article").split() or ["article"]
    for t in types:
        if t not in ("article", "landing"):
            raise SystemExit(f"pipeline: PUBLISH_TYPES: unknown type {t!r} (article, landing)")
    return types


class _Stale(ConnectionError):
    """The connection was closed before an answer came."""


class LeanPoster:
    """Body-less POSTs over kept-alive HTTP/1.1 connections, for the open-loop publisher.

    httpx's pool scans its waiting requests on every release: once a few hundred publishes are in
    flight it burns a core of the machine it measures. This opens another connection whenever none
    is idle (the loop stays open) and parses only the status line and Content-Length.
    """

    def __init__(self, base: str, key: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.head = f"Host: {parts.netloc}\r\nAuthorization: Bearer {key}\r\nContent-Length: 0\r\n\r\n"
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str) -> int:
        while self.idle:
            # A kept-alive connection the server closed meanwhile answers nothing: take the next.
            conn = self.idle.pop()
            try:
                return await self._post(conn, path)
            except (OSError, asyncio.IncompleteReadError):
                conn[1].close()
        return await self._post(await asyncio.open_connection(self.host, self.port), path)

    async def _post(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], path: str) -> int:
        reader, writer = conn
        writer.write(f"POST {path} HTTP/1.1\r\n{self.head}".encode())
        status_line = await reader.readline()
        if not status_line:
            raise _Stale()
        length, close = 0, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        if length:
            await reader.readexactly(length)
        if close:
            writer.close()
        else:
            self.idle.append(conn)
        return int(status_line.split()[1])

    async def aclose(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


class Bench:
    def __init__(self, base: str, key: str, data_dir: str, outdir: str, records: str) -> None:
        import httpx

        self.httpx = httpx
        self.base = base.rstrip("/")
        self.key = key
        self.objects = Path(data_dir) / "objects"
        self.watch_dir = self.objects / "entries" / "article" / "en"
        self.types = publish_types()
        self.cta_targets: list[str] = []  # published articles the landing pages' cta blocks point at
        self.outdir = Path(outdir)
        self.rec = Records(records)
        self.cpu = Cpu()
        self.create_sem = asyncio.Semaphore(env_int("CREATE_CONCURRENCY", 8))
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        self.client = httpx.AsyncClient(base_url=self.base, headers={"Authorization": f"Bearer {key}"},
                                        timeout=httpx.Timeout(300, connect=10), limits=limits)
        self.poster = LeanPoster(self.base, key)
        self.authors: list[str] = []
        self.phases: dict[str, dict[str, Any]] = {}
        self.ids_of: dict[str, list[str]] = {}

    async def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        r = await self.client.request(method, path, json=body)
        if r.status_code not in ok:
            raise SystemExit(f"pipeline: {method} {path} -> HTTP {r.status_code}: {r.text[:600]}")
        return r.json() if r.content else None

    async def create(self, type_id: str, fields: dict[str, Any], entry_id: str | None = None) -> str:
        async with self.create_sem:
            if entry_id:
                doc = await self.call("PUT", f"/v1/entries/{type_id}/{entry_id}", {"fields": fields})
            else:
                doc = await self.call("POST", f"/v1/entries/{type_id}", {"fields": fields})
        return str(doc["data"]["id"])

    async def setup(self) -> None:
        from seed import ARTICLE_TYPE, AUTHOR_TYPE, LANDING_TYPE

        await self.call("PUT", "/v1/content-types/author", AUTHOR_TYPE)
        await self.call("PUT", "/v1/content-types/article", ARTICLE_TYPE)
        if "landing" in self.types:
            await self.call("PUT", "/v1/content-types/landing", LANDING_TYPE)
        self.authors = list(await asyncio.gather(
            *(self.create("author", {"name": f"Bench Author {i:02d}"}) for i in range(10))))
        for a in self.authors:
            await self.call("POST", f"/v1/entries/author/{a}/publish")
        # Warm-up: a few publishes end to end (connection pools, caches), which also makes the
        # directory the observer watches.
        ids = [await self.create("article", article_fields(i, "warm", self.authors[i % 10])) for i in range(5)]
        for entry_id in ids:
            await self.call("POST", f"/v1/entries/article/{entry_id}/publish")
        self.cta_targets = ids
        files = [self.watch_dir / f"{i}.json" for i in ids]
        if "landing" in self.types:
            # The landing pages' cta targets: 20 published articles (more than the 5 above).
            more = [await self.create("article", article_fields(i, "cta", self.authors[i % 10])) for i in range(15)]
            for entry_id in more:
                await self.call("POST", f"/v1/entries/article/{entry_id}/publish")
            self.cta_targets = ids + more
            # and a few landing pages end to end (which makes the landing directory the observer watches)
            lids = [await self.create("landing", landing_fields_for(i, "warm-landing", self.cta_targets)) for i in range(5)]
            for entry_id in lids:
                await self.call("POST", f"/v1/entries/landing/{entry_id}/publish")
            files += [self.type_dir("landing") / f"{i}.json" for i in lids]
        want_watched = {str(self.type_dir(t)) for t in self.types}
        deadline = time.monotonic() + 120
        while not all(f.exists() for f in files) or not want_watched <= self.rec.watched:
            if time.monotonic() > deadline:
                raise SystemExit(f"pipeline: warm-up files not written within 120 s (or the observer "
                                 f"is not watching {sorted(want_watched - self.rec.watched)})")
            await asyncio.sleep(0.05)
            self.rec.poll()
        log(f"warm-up done; observer watching ({self.rec.watching}), CDN purges seen: {self.rec.purge_requests}")
        if not self.rec.purge_requests:
            raise SystemExit("pipeline: the CDN recorder got no purge: is CMS_CDN_PROVIDER=http set?")

    async def drain(self, ids: list[str], t_start: int, *, purges: bool = True) -> float:
        """Wait until every id's file (and purge) was seen after t_start; returns the seconds waited."""
        t = time.monotonic()
        deadline = t + env_float("DRAIN_TIMEOUT_S", 90)
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            self.rec.poll()
            pending = {i for i in pending
                       if Records.first_after(self.rec.files.get(f"{i}.json"), t_start) is None
                       or (purges and Records.first_after(self.rec.purges.get(i), t_start) is None)}
        if pending:
            log(f"{len(pending)} of {len(ids)} not seen (file and purge) within the drain timeout")
        return time.monotonic() - t

    def type_dir(self, type_id: str) -> Path:
        return self.objects / "entries" / type_id / "en"

    def check_files(self, ids: list[str], type_id: str = "article") -> dict[str, Any]:
        """Every file exists on disk; a sample decodes to the right entry."""
        folder = self.type_dir(type_id)
        missing = [i for i in ids if not (folder / f"{i}.json").exists()]
        bad = []
        for i in ids[:: max(1, len(ids) // 20)]:
            p = folder / f"{i}.json"
            if p.exists():
                d = json.loads(p.read_bytes())
                f = d["data"]["fields"]
                if type_id == "landing":
                    ok = d["data"]["id"] == i and len(f["body"]) == 20 and all("fields" in b for b in f["body"]) \
                        and sum(1 for b in f["body"] if b["block"] == "cta" and (b["fields"].get("target") or {}).get("id")) == 3
                else:
                    ok = d["data"]["id"] == i and len(f["body"]) >= 2000 and "fields" in (f.get("author") or {})
                if not ok:
                    bad.append(i)
        return {"missing_on_disk": len(missing), "sample_checked": len(ids[:: max(1, len(ids) // 20)]),
                "sample_bad": len(bad)}

    # -- latency ---------------------------------------------------------------------------

    async def latency(self, name: str, rate: float, seconds: float, type_id: str = "article") -> dict[str, Any]:
        n = max(1, int(round(rate * seconds)))
        tag = f"{name}-{os.environ.get('BENCH_STAMP', 'x')[-7:-1].lower()}"
        log(f"{name}: creating {n} {type_id} drafts (not timed)")
        if type_id == "landing":
            drafts = [landing_fields_for(i, tag, self.cta_targets) for i in range(n)]
        else:
            drafts = [article_fields(i, tag, self.authors[i % 10]) for i in range(n)]
        ids = list(await asyncio.gather(*(self.create(type_id, f) for f in drafts)))
        self.ids_of[name] = ids
        settle()
        others_before = wait_quiet()
        log(f"{name}: publishing {n} at {rate:g}/s for {seconds:g} s (open loop)")
        self.rec.poll()
        c0 = self.cpu.snap()
        sends: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)] * n

        async def one(i: int, t_sched: int) -> None:
            t0 = time.monotonic_ns()
            try:
                status = await self.poster.post(f"/v1/entries/{type_id}/{ids[i]}/publish")
            except (OSError, ValueError, asyncio.IncompleteReadError):
                status = 0
            sends[i] = (t_sched, t0, time.monotonic_ns(), status)

        tasks = []
        start = time.monotonic_ns() + 50_000_000
        interval = 1e9 / rate
        for i in range(n):
            t_sched = start + int(i * interval)
            delay = (t_sched - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, t_sched)))
        await asyncio.gather(*tasks)
        t_api_end = time.monotonic_ns()
        waited = await self.drain(ids, start)
        c1 = self.cpu.snap()
        # CPU of the sending window only would be cleaner, but the pipeline's work continues after
        # the last send; the window is the whole run including the drain.
        file_ms, purge_ms, path_ms, api_ms, lag_ms = [], [], [], [], []
        errors = 0
        missing_file = missing_purge = 0
        for i, (t_sched, t0, t1, status) in enumerate(sends):
            if status != 200:
                errors += 1
                continue
            api_ms.append((t1 - t0) / 1e6)
            lag_ms.append((t0 - t_sched) / 1e6)
            tf = Records.first_after(self.rec.files.get(f"{ids[i]}.json"), t0)
            tp = Records.first_after(self.rec.purges.get(ids[i]), t0)
            tpp = Records.first_after(self.rec.path_purges.get(f"/cdn/entries/{type_id}/en/{ids[i]}.json"), t0)
            if tf is None:
                missing_file += 1
            else:
                file_ms.append((tf - t0) / 1e6)
            if tp is None:
                missing_purge += 1
            else:
                purge_ms.append((tp - t0) / 1e6)
            if tpp is not None:
                path_ms.append((tpp - t0) / 1e6)
        # Per publish (for plots and debugging): offset of t0 from the start, file and purge ms.
        samples = [[round((t0 - start) / 1e6, 2), ids[i],
                    round((tf - t0) / 1e6, 2) if (tf := Records.first_after(self.rec.files.get(f"{ids[i]}.json"), t0)) else None,
                    round((tp - t0) / 1e6, 2) if (tp := Records.first_after(self.rec.purges.get(ids[i]), t0)) else None]
                   for i, (_, t0, _, _) in enumerate(sends)]
        (self.outdir / f"{name}.samples.json").write_text(json.dumps(
            {"columns": ["t0_ms_from_start", "id", "file_ms", "purge_ms"], "rows": samples}))
        t0s = sorted(s[1] for s in sends if s[1])
        error_statuses: dict[str, int] = {}  # the answers other than 200, by status (0: no answer)
        for *_, status in sends:
            if status != 200:
                error_statuses[str(status)] = error_statuses.get(str(status), 0) + 1
        achieved = (len(t0s) - 1) / ((t0s[-1] - t0s[0]) / 1e9) if len(t0s) > 1 and t0s[-1] > t0s[0] else None
        result = {
            "name": name, "type": type_id, "rate": rate, "seconds": seconds, "publishes": n, "errors": errors,
            "statuses": error_statuses,
            "achieved_rate": round(achieved, 2) if achieved else None,
            "send_lag_ms": stats(lag_ms), "publish_api_ms": stats(api_ms),
            "file_visible_ms": stats(file_ms), "purge_sent_ms": stats(purge_ms),
            "purge_path_ms": stats(path_ms),
            "missing_file": missing_file, "missing_purge": missing_purge,
            "api_s": round((t_api_end - start) / 1e9, 2), "drain_s": round(waited, 2),
            "files": self.check_files(ids, type_id), "cpu": self.cpu.diff(c0, c1), "others_before": others_before,
            "observer_overflows": self.rec.overflow,
        }
        self.phases[name] = result
        f, p = result["file_visible_ms"], result["purge_sent_ms"]
        log(f"{name}: achieved {result['achieved_rate']}/s, file p50 {f.get('p50')} p99 {f.get('p99')} ms, "
            f"purge p50 {p.get('p50')} p99 {p.get('p99')} ms, errors {errors} {error_statuses or ''}, cpu {result['cpu']}")
        return result

    # -- bulk ------------------------------------------------------------------------------

    async def bulk(self, name: str = "bulk") -> dict[str, Any]:
        n = env_int("BULK_N", 5000)
        per = max(1, env_int("BULK_ACTIONS", 1000) // 2)
        conc = env_int("BULK_CONCURRENCY", 2)
        tag = f"{name}-{os.environ.get('BENCH_STAMP', 'x')[-7:-1].lower()}"
        ids = [f"{tag}-{i:05d}" for i in range(n)]
        self.ids_of[name] = ids
        bodies = []
        for start_i in range(0, n, per):
            actions: list[dict[str, Any]] = []
            for i in range(start_i, min(n, start_i + per)):
                actions.append({"op": "upsert", "type": "article", "id": ids[i],
                                "fields": article_fields(i, tag, self.authors[i % 10])})
                actions.append({"op": "publish", "type": "article", "id": ids[i]})
            bodies.append(json.dumps({"atomic": True, "actions": actions}).encode())
        settle()
        others_before = wait_quiet()
        log(f"{name}: {n} entries in {len(bodies)} requests of {2 * per} actions "
            f"({sum(map(len, bodies)) / len(bodies) / 1e6:.2f} MB each), {conc} in flight")
        self.rec.poll()
        c0 = self.cpu.snap()
        sem = asyncio.Semaphore(conc)
        req: list[dict[str, Any]] = []
        t_start = time.monotonic_ns()

        async def send(k: int, body: bytes) -> None:
            async with sem:
                t0 = time.monotonic_ns()
                r = await self.client.post("/v1/bulk", content=body, headers={"Content-Type": "application/json"})
                t1 = time.monotonic_ns()
            ok = r.status_code == 200 and all(x.get("error") is None for x in r.json()["data"]["results"])
            req.append({"k": k, "status": r.status_code, "ok": ok, "ms": round((t1 - t0) / 1e6, 1),
                        "end_s": round((t1 - t_start) / 1e9, 3), "detail": None if ok else r.text[:400]})

        await asyncio.gather(*(send(k, b) for k, b in enumerate(bodies)))
        t_api_end = time.monotonic_ns()
        failed = [r for r in req if not r["ok"]]
        if failed:
            log(f"{name}: {len(failed)} bulk request(s) failed, first: {failed[0]}")
        api_s = (t_api_end - t_start) / 1e9
        log(f"{name}: API done in {api_s:.2f} s ({n / api_s:.0f} entries/s); waiting for the files")
        waited = await self.drain(ids, t_start)
        c1 = self.cpu.snap()
        file_t = [Records.first_after(self.rec.files.get(f"{i}.json"), t_start) for i in ids]
        purge_t = [Records.first_after(self.rec.purges.get(i), t_start) for i in ids]
        seen = [t for t in file_t if t is not None]
        seen_p = [t for t in purge_t if t is not None]
        files = self.check_files(ids)
        complete = len(seen) == n and files["missing_on_disk"] == 0 and not failed
        e2e_s = (max(seen) - t_start) / 1e9 if seen else None
        result = {
            "name": name, "entries": n, "requests": len(bodies), "actions_per_request": 2 * per,
            "concurrency": conc, "failed_requests": len(failed), "request_ms": sorted(req, key=lambda r: r["k"]),
            "api_s": round(api_s, 3), "api_entries_per_s": round(n / api_s, 1),
            "files_seen": len(seen), "purges_seen": len(seen_p), "complete": complete,
            "first_file_s": round((min(seen) - t_start) / 1e9, 3) if seen else None,
            "end_to_end_s": round(e2e_s, 3) if e2e_s else None,
            "end_to_end_entries_per_s": round(n / e2e_s, 1) if e2e_s and complete else None,
            "after_last_response_s": round(e2e_s - api_s, 3) if e2e_s else None,
            "last_purge_s": round((max(seen_p) - t_start) / 1e9, 3) if seen_p else None,
            "drain_s": round(waited, 2), "files": files, "cpu": self.cpu.diff(c0, c1),
            "others_before": others_before, "observer_overflows": self.rec.overflow,
        }
        self.phases[name] = result
        log(f"{name}: end to end {result['end_to_end_s']} s ({result['end_to_end_entries_per_s']} entries/s), "
            f"cpu {result['cpu']}")
        return result

    # -- the same latency runs while webhooks fire (WEBHOOK_ENDPOINTS) ----------------------------

    async def webhook_runs(self, n: int, rates: list[tuple[float, float]]) -> None:
        """Subscribe n endpoints (bench/webhooks.py's receivers, started by pipeline.sh) to article
        publishes, run every RATES item again (`<name>-webhooks<n>`) and wait for its deliveries; then
        (WEBHOOK_CONTROL=1) deactivate them and run the RATES once more (`<name>-after`) as a control."""
        import webhooks as wh

        base_port = env_int("WEBHOOK_BASE_PORT", 18140)
        arr = wh.Arrivals(os.environ["WEBHOOK_RECORDS"])
        deadline = time.monotonic() + 10
        while not arr.ready:
            arr.poll()
            if time.monotonic() > deadline:
                raise SystemExit("pipeline: the webhook receivers did not start (no 'ready' record)")
            await asyncio.sleep(0.05)
        ids = await wh.subscribe(self.call, base_port, n, f"http://127.0.0.1:{base_port}")
        log(f"subscribed {n} webhook endpoints (entry.published, article) on 127.0.0.1:{base_port}…{base_port + n - 1}")
        for rate, secs in rates:
            name = f"rate{rate:g}".replace(".", "p") + f"-webhooks{n}"
            result = await self.latency(name, rate, secs)
            result["webhooks"] = await wh.wait_deliveries(self.pg, arr, n, self.ids_of[name],
                                                          env_float("WEBHOOK_DRAIN_S", 180), log)
            w = result["webhooks"]
            log(f"{name}: webhooks {w['delivered_pairs']}/{w['expected_pairs']} delivered, lost {w['lost']}, "
                f"duplicates {w['duplicates']}, event->first attempt {w['event_to_first_attempt_ms']}, "
                f"first event -> last 200 {w['first_event_to_last_200_s']} s")
        if env_int("WEBHOOK_CONTROL", 1):
            for wid in ids:
                await self.call("PATCH", f"/v1/webhooks/{wid}", {"active": False})
            log("webhooks deactivated; the same runs again without them")
            for rate, secs in rates:
                await self.latency(f"rate{rate:g}".replace(".", "p") + "-after", rate, secs)

    # -- cross-check through the events feed ---------------------------------------------------

    async def pg(self) -> Any:
        """A superuser connection to the embedded PostgreSQL over its Unix socket."""
        import asyncpg

        lines = (self.objects.parent / "postgres" / "postmaster.pid").read_text().splitlines()
        return await asyncpg.connect(host=lines[4], port=int(lines[3]), user="postgres", database="cms")

    async def log_statements(self) -> None:
        """PG_LOG_MIN_DURATION_MS (diagnosis): PostgreSQL logs every statement slower than that, with
        its duration, to <data dir>/postgres/log (costs some CPU itself)."""
        ms = os.environ.get("PG_LOG_MIN_DURATION_MS", "")
        if not ms:
            return
        conn = await self.pg()
        try:
            await conn.execute(f"ALTER SYSTEM SET log_min_duration_statement = {int(ms)}")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()
        log(f"PostgreSQL logs statements slower than {int(ms)} ms")

    async def events(self) -> dict[str, Any]:
        """entry.published -> entry.delivered per run, from PostgreSQL (and how much GET /v1/events shows)."""
        conn = await self.pg()
        try:
            rows = await conn.fetch(
                """SELECT p.payload->>'id' AS entry_id, p.created_at AS published, p.relayed_at AS relayed,
                          s.done_at AS done, d.created_at AS delivered
                     FROM outbox_events p
                     LEFT JOIN outbox_steps s ON s.event_id = p.id AND s.step = 'deliver'
                     LEFT JOIN outbox_events d ON d.type = 'entry.delivered' AND d.payload->>'source_event' = p.id
                    WHERE p.type = 'entry.published'""")
            db_total = await conn.fetchval("SELECT count(*) FROM outbox_events")
        finally:
            await conn.close()
        by_entry = {r["entry_id"]: r for r in rows}
        out: dict[str, Any] = {"source": "PostgreSQL outbox_events/outbox_steps (created_at = transaction start)"}
        for name, ids in self.ids_of.items():
            got = [by_entry[i] for i in ids if i in by_entry]

            def ms(col: str, got: list[Any] = got) -> list[float]:
                return [(r[col] - r["published"]).total_seconds() * 1000 for r in got if r[col] is not None]

            item: dict[str, Any] = {
                "published_events": len(got), "delivered_events": sum(1 for r in got if r["delivered"]),
                "relayed_minus_published_ms": stats(ms("relayed")), "step_done_minus_published_ms": stats(ms("done")),
                "delivered_minus_published_ms": stats(ms("delivered")),
            }
            if got and all(r["delivered"] for r in got):
                item["first_published_to_last_delivered_s"] = round(
                    (max(r["delivered"] for r in got) - min(r["published"] for r in got)).total_seconds(), 3)
            out[name] = item
        # The same events through the API feed, paged from the start: does it show them all?
        seen = 0
        cursor = None
        while True:
            page = await self.call("GET", "/v1/events?limit=100" + (f"&after={cursor}" if cursor else ""))
            seen += len(page["data"])
            if not page["data"]:
                break
            cursor = page["meta"]["next_cursor"]
        out["feed_api"] = {"events_in_db": db_total, "events_seen_paging_get_v1_events": seen}
        if seen < db_total:
            log(f"GET /v1/events showed {seen} of {db_total} events when paged from the start")
        return out

    # -- profiling (optional, after the measurements) -----------------------------------------

    async def profile(self, what: str) -> None:
        comps = components()
        targets = {k: comps[k] for k in ("worker", "management_worker") if k in comps}
        spies = start_spies(what, targets, self.outdir)
        if not spies:
            return
        await asyncio.sleep(1.5)
        log(f"PROFILE {what}: py-spy on {targets}")
        try:
            if what == "bulk":
                await self.bulk("profile-bulk")
            else:
                rate = env_float("PROFILE_RATE", 100)
                await self.latency(f"profile-{what}", rate, env_float("PROFILE_S", 20))
        finally:
            stop_spies(what, spies, self.outdir)


def start_spies(what: str, targets: dict[str, int], outdir: Path) -> dict[str, tuple[Path, Any]]:
    spy = os.environ.get("PYSPY", "/tmp/pyspy/bin/py-spy")
    args = os.environ.get("PYSPY_ARGS", "--gil").split()
    if not os.access(spy, os.X_OK) or not targets:
        log(f"PROFILE: no py-spy at {spy} or no worker pid; skipped")
        return {}
    spies = {}
    for label, pid in targets.items():
        out = outdir / f"profile-{what}-{label}.txt"
        with open(outdir / f"py-spy-{what}-{label}.log", "w") as logf:
            spies[label] = (out, subprocess.Popen(
                [spy, "record", "-r", "200", "-f", "raw", "-o", str(out), *args, "--pid", str(pid)],
                stdout=logf, stderr=subprocess.STDOUT))
    return spies


def stop_spies(what: str, spies: dict[str, tuple[Path, Any]], outdir: Path) -> None:
    for label, (out, p) in spies.items():
        p.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if out.exists() and out.stat().st_size:
            top = subprocess.run([sys.executable, str(HERE / "pyspy_top.py"), str(out), "30"],
                                 capture_output=True, text=True, timeout=120)
            (outdir / f"profile-{what}-{label}.top.txt").write_text(top.stdout + top.stderr)
            log(f"PROFILE {what} {label}:\n{top.stdout}{top.stderr}")


# ---------------------------------------------------------------------------------------------
# report

def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def cores(v: Any) -> str:
    return "–" if v is None else f"{v:.2f}"


def noisy(cpu: dict[str, Any]) -> str:
    o = cpu.get("others_cores", 0)
    return f"{o:.2f}" + (" (noisy)" if o >= 0.3 else "")


def run_suffix(name: str) -> str:
    """' (webhooks10)' for the run `rate100-webhooks10`, '' for `rate100`."""
    _, _, suffix = name.partition("-")
    return f" ({suffix})" if suffix else ""


def report(doc: dict[str, Any]) -> str:
    lines = []
    lat = [p for k, p in doc["phases"].items() if "rate" in p and not k.startswith("profile")]
    if lat:
        lines += [
            "| publishes/s (target → achieved) | n | publish API p50 / p99 ms | file visible p50 / p95 / p99 / max ms "
            "| purge sent p50 / p95 / p99 / max ms | `entry.delivered` − published p50 / p99 ms | CMS cores "
            "| others cores | p99 < 300 ms |",
            "|---|--:|--:|--:|--:|--:|--:|--:|:-:|",
        ]
        for p in lat:
            f, pu, a = p["file_visible_ms"], p["purge_sent_ms"], p["publish_api_ms"]
            ev = doc.get("events", {}).get(p["name"], {}).get("delivered_minus_published_ms", {})
            worst = max(f.get("p99") or 1e9, pu.get("p99") or 1e9)
            miss = p["missing_file"] + p["missing_purge"] + p["errors"]
            lines.append(
                f"| {p['rate']:g} → {fmt(p['achieved_rate'])}{run_suffix(p['name'])} | {p['publishes']} | {fmt(a.get('p50'))} / {fmt(a.get('p99'))} "
                f"| {fmt(f.get('p50'))} / {fmt(f.get('p95'))} / {fmt(f.get('p99'))} / {fmt(f.get('max'))} "
                f"| {fmt(pu.get('p50'))} / {fmt(pu.get('p95'))} / {fmt(pu.get('p99'))} / {fmt(pu.get('max'))} "
                f"| {fmt(ev.get('p50'))} / {fmt(ev.get('p99'))} | {cores(p['cpu'].get('server_cores'))} "
                f"| {noisy(p['cpu'])} | {'✓' if worst < 300 and not miss else '✗'}"
                f"{f' ({miss} missing/errors)' if miss else ''} |")
    whs = [p for p in lat if "webhooks" in p]
    if whs:
        lines += [
            "",
            "| run with webhooks | deliveries | delivered | lost | duplicates | event → first attempt p50 / p99 / max ms "
            "| first event → last 200 s | delivered when the last file was seen |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for p in whs:
            w = p["webhooks"]
            e = w["event_to_first_attempt_ms"]
            lines.append(f"| {p['name']} | {w['expected_pairs']:,} | {w['delivered_pairs']:,} | {w['lost']} | {w['duplicates']} "
                         f"| {fmt(e.get('p50'))} / {fmt(e.get('p99'))} / {fmt(e.get('max'))} "
                         f"| {fmt(w['first_event_to_last_200_s'])} | {w['delivered_when_publishing_ended']:,} |")
    b = doc["phases"].get("bulk")
    if b:
        lines += [
            "",
            "| bulk | requests × actions | API s | API entries/s | end to end s (last file) | end-to-end entries/s "
            "| worker after last response s | last purge s | CMS cores | others cores | ≥ 1,000/s e2e |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
            f"| {b['entries']:,} entries | {b['requests']} × {b['actions_per_request']} | {fmt(b['api_s'])} "
            f"| {fmt(b['api_entries_per_s'])} | {fmt(b['end_to_end_s'])} | {fmt(b['end_to_end_entries_per_s'])} "
            f"| {fmt(b['after_last_response_s'])} | {fmt(b['last_purge_s'])} | {cores(b['cpu'].get('server_cores'))} "
            f"| {noisy(b['cpu'])} "
            f"| {'✓' if (b['end_to_end_entries_per_s'] or 0) >= 1000 else '✗'}{'' if b['complete'] else ' (incomplete)'} |",
        ]
    comp = [(k, p["cpu"].get("component_cores", {})) for k, p in doc["phases"].items() if not k.startswith("profile")]
    if comp and comp[0][1]:
        names = list(comp[0][1])
        lines += ["", "CPU by component (cores, averaged over each run including its drain):", "",
                  "| run | " + " | ".join(names) + " |", "|---|" + "--:|" * len(names)]
        for k, c in comp:
            lines.append(f"| {k} | " + " | ".join(cores(c.get(n)) for n in names) + " |")
    return "\n".join(lines)


def meta(root: Path) -> dict[str, Any]:
    import importlib.metadata as md

    def sh(c: str) -> str:
        try:
            r = subprocess.run(c, shell=True, capture_output=True, text=True, timeout=20)
            return r.stdout.strip() or r.stderr.strip()
        except Exception as e:  # noqa: BLE001
            return f"n/a ({e})"

    def ver(p: str) -> str | None:
        try:
            return md.version(p)
        except Exception:  # noqa: BLE001
            return None

    return {
        "date_utc": os.environ.get("BENCH_STAMP"), "host_cpus": os.cpu_count(), "kernel": platform.release(),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        "git": {"commit": sh(f"git -C '{root}' rev-parse --short HEAD"),
                "dirty_app": bool(sh(f"git -C '{root}' status --porcelain -- app workers storage")),
                "cms_from_commit": os.environ.get("BENCH_COMMIT_SHA"), "commit_at_start": os.environ.get("BENCH_GIT_HEAD")},
        "versions": {"python": platform.python_version(),
                     **{p: ver(p) for p in ("granian", "litestar", "dramatiq", "asyncpg", "redis", "httpx")}},
        "config": {k: os.environ.get(k) for k in ("RATES", "BULK_N", "BULK_ACTIONS", "BULK_CONCURRENCY",
                                                   "DRAIN_TIMEOUT_S", "QUIET_MAX_CORES", "QUIET_WAIT_S",
                                                   "WEBHOOK_ENDPOINTS", "CMS_ENV", "PUBLISH_TYPES")},
        "notes": "shared noisy 2-core VM; the publisher, the observer and the CMS share the same cores",
    }


async def run(base: str, key: str, data_dir: str, outdir: str, records: str) -> int:
    b = Bench(base, key, data_dir, outdir, records)
    try:
        deadline = time.monotonic() + 10
        while not b.rec.cdn_ready:
            b.rec.poll()
            if time.monotonic() > deadline:
                raise SystemExit("pipeline: the observer did not start (no 'ready' record)")
            await asyncio.sleep(0.05)
        await b.setup()
        await b.log_statements()
        rates = [(float(r), float(s or 20)) for r, _, s in (i.partition(":") for i in os.environ.get("RATES", "10:30 100:20").split())]
        for rate, secs in rates:
            for type_id in b.types:  # PUBLISH_TYPES: article as `rate100`, landing pages as `rate100-landing`
                suffix = "" if type_id == "article" else f"-{type_id}"
                await b.latency(f"rate{rate:g}".replace(".", "p") + suffix, rate, secs, type_id)
        if env_int("WEBHOOK_ENDPOINTS", 0) > 0:
            await b.webhook_runs(env_int("WEBHOOK_ENDPOINTS", 0), rates)
        if env_int("BULK_N", 5000) > 0:
            await b.bulk()
        log("cross-checking with GET /v1/events")
        events = await b.events()
        for what in os.environ.get("PROFILE", "").split():
            await b.profile(what)
    finally:
        await b.client.aclose()
        await b.poster.aclose()
    root = HERE.parent
    doc = {"meta": meta(root), "phases": b.phases, "events": events,
           "observer": {"watching": b.rec.watching, "purge_requests": b.rec.purge_requests,
                        "overflows": b.rec.overflow}}
    stamp = os.environ.get("BENCH_STAMP") or time.strftime("%Y-%m-%d_%H%M%SZ", time.gmtime())
    out = HERE / "results" / f"pipeline-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(f"\n## Publish pipeline, {stamp} (cms up --workers 1, embedded defaults, 127.0.0.1)\n")
    print(report(doc))
    print(f"\nresults: {out}   raw: {outdir}")
    bad = [k for k, p in b.phases.items() if p.get("errors") or p.get("missing_file") or p.get("failed_requests")
           or p.get("complete") is False or (p.get("webhooks") or {}).get("lost")]
    return 1 if bad else 0


def main() -> None:
    if len(sys.argv) >= 5 and sys.argv[1] == "observe":
        observe(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) == 7 and sys.argv[1] == "run":
        sys.exit(asyncio.run(run(*sys.argv[2:7])))
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        print(report(json.loads(Path(sys.argv[2]).read_text())))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
