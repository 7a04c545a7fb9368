"""Webhook benchmark (issue 10): 10 receiver endpoints, 1,000 publishes, every delivery accounted for.

  python bench/webhooks.py receive RECORDS_FILE BASE_PORT N     # the receivers (webhooks.sh starts them)
  python bench/webhooks.py run MANAGEMENT_URL MANAGEMENT_KEY DATA_DIR OUTDIR RECORDS_FILE
  python bench/webhooks.py report RESULTS.json                  # the tables again

`bench/webhooks.sh` runs both; see bench/README.md ("Webhook benchmark").

**The receivers** are one separate process (uvloop, a bare asyncio HTTP/1.1 server: keep-alive,
Content-Length bodies), listening on BASE_PORT … BASE_PORT+N-1, one port per endpoint, so that
the sender's connection pool treats them as N hosts. For every request they record, on arrival of
its whole body, `CLOCK_MONOTONIC` and wall-clock nanoseconds, the endpoint, the status they answer
(200, or 500 while that endpoint is told to fail) and the `webhook-id` header (the event id): one
line per request in RECORDS_FILE, flushed every 20 ms. Every SAMPLE_EVERY-th request per endpoint
(and each endpoint's first) is verified at arrival with the `standardwebhooks` library (not the
CMS's code) against the endpoint's secret, and its body decoded: `entry.published` with the entry.
The bench controls them over HTTP on any of their ports: `POST /_ctl/secret?ep=I` (body: the
secret), `POST /_ctl/fail?eps=0,1,2&until_ns=<CLOCK_MONOTONIC ns>`.

**The run** creates the content types author/article (as bench/seed.py), 10 published authors,
subscribes N_ENDPOINTS endpoints (`POST /v1/webhooks`, events `entry.published`, types `article`),
hands each secret to the receivers, warms up with 5 publishes, then runs the scenarios (SCENARIOS,
default "burst paced failing"), each on N_PUBLISHES (1,000) new articles whose drafts are created
first (not timed), once the CMS is idle and the machine quiet:

- `burst`: all endpoints answer 200; the drafts are published as fast as the management API takes
  them: PUBLISH_CONCURRENCY (8) kept-alive connections, each sending the next
  `POST /v1/entries/article/{id}/publish` when its previous one is answered (closed loop). This
  measures the throughput: ~270 publishes/s offer ~2,700 deliveries/s.
- `paced`: the same at PACED_RATE (50) publishes/s, open loop (each publish its own task at its
  scheduled time), i.e. 500 deliveries/s offered, the throughput target: the latency there.
- `paced<N>` (e.g. `paced20`): the same at N publishes/s (a rate sweep).
- `failing`: as `paced` (FAIL_RATE, default PACED_RATE; 0 = as fast as possible), while endpoints
  0 … FAIL_ENDPOINTS-1 (3) answer 500 for FAIL_S (30) s from the first publish, then 200.

After the last publish it waits until every (endpoint, event) pair has been answered 200 by its
receiver (DRAIN_TIMEOUT_S 180, or FAIL_DRAIN_TIMEOUT_S 900 for `failing`) and until PostgreSQL's
delivery log marks every delivery succeeded. Then, from PostgreSQL (`outbox_events`,
`webhook_deliveries`, `webhook_attempts`, over the embedded server's Unix socket) and the
receivers' records:

- time from the first publish sent to the last pair's first 200 at its receiver, and to the last
  delivery marked succeeded (`updated_at`); deliveries/s = pairs / the first of these;
- event → first attempt: the first request of a pair at its receiver (wall clock) minus the event's
  `outbox_events.created_at` (its transaction's start; same host clock), p50/p95/p99/max, for the
  healthy endpoints and the failing ones separately; event → 200 likewise; and the split:
  event → delivery row written (the fan-out step) and delivery row → first attempt;
- lost = expected pairs − pairs answered 200; duplicates = 200s beyond the first per pair;
  requests with an unknown webhook-id; deliveries not `succeeded` in the log;
- attempts per outcome from the worker's Prometheus metrics (CMS_WORKER_METRICS_PORT), CPU per
  CMS component and of the receivers (bench/cpuacct.py).

Env knobs: N_ENDPOINTS [10], N_PUBLISHES [1000], PUBLISH_CONCURRENCY [8], SCENARIOS
["burst paced failing"], PACED_RATE [50], FAIL_RATE [PACED_RATE], FAIL_ENDPOINTS [3], FAIL_S [30],
DRAIN_TIMEOUT_S [180], FAIL_DRAIN_TIMEOUT_S [900], LOG_WAIT_S [60], CREATE_CONCURRENCY [8],
SAMPLE_EVERY [50], RECEIVER_BASE_PORT (set by webhooks.sh), WORKER_METRICS_URL, PROFILE [""] ("1":
after the measurements, a burst again under py-spy on the worker; not part of the results), PYSPY,
PYSPY_ARGS, PG_LOG_MIN_DURATION_MS (diagnosis: PostgreSQL logs statements slower than this),
QUIET_*, SETTLE_TIMEOUT_S; set by webhooks.sh: BENCH_ROOTS, BENCH_SERVER_PIDS, BENCH_COMPONENTS,
BENCH_STAMP, RETRY_SCHEDULE (what the CMS was given, for the report).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# ---------------------------------------------------------------------------------------------
# the receivers (their own process)


class _Receivers:
    def __init__(self, records_path: str, sample_every: int) -> None:
        self.out = open(records_path, "a", buffering=1 << 16)  # noqa: SIM115 (lives as long as the process)
        self.dirty = False
        self.sample_every = sample_every
        self.fail_until: dict[int, int] = {}
        self.secrets: dict[int, Any] = {}
        self.count: dict[int, int] = {}

    def write(self, line: str) -> None:
        self.out.write(line)
        self.dirty = True

    def flush(self) -> None:
        if self.dirty:
            self.out.flush()
            self.dirty = False

    def handle(self, ep: int, method: str, target: str, headers: dict[str, str], body: bytes) -> int:
        mono, wall = time.monotonic_ns(), time.time_ns()
        if target.startswith("/_ctl/"):
            return self.control(target, body)
        n = self.count.get(ep, 0)
        self.count[ep] = n + 1
        status = 500 if mono < self.fail_until.get(ep, 0) else 200
        sig = "-"
        if (n % self.sample_every == 0) and ep in self.secrets:
            sig = self.verify(ep, headers, body)
        wid = headers.get("webhook-id", "none")
        self.write(f"{mono} r {wall} {ep} {status} {wid} {sig} {method}\n")
        return status

    def verify(self, ep: int, headers: dict[str, str], body: bytes) -> str:
        try:
            doc = self.secrets[ep].verify(body, headers)
        except Exception as exc:  # noqa: BLE001 (WebhookVerificationError and anything else: bad)
            return f"bad:{type(exc).__name__}"
        data = doc.get("data") or {}
        ok = (doc.get("type") == "entry.published" and data.get("type") == "article" and isinstance(data.get("id"), str)
              and (data.get("entry") or {}).get("id") == data["id"])
        return "ok" if ok else "badbody"

    def control(self, target: str, body: bytes) -> int:
        from standardwebhooks import Webhook

        parts = urlsplit(target)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/_ctl/secret":
            self.secrets[int(q["ep"])] = Webhook(body.decode())
        elif parts.path == "/_ctl/fail":
            until = int(q["until_ns"])
            for ep in (int(x) for x in q.get("eps", "").split(",") if x):
                self.fail_until[ep] = until
            self.write(f"{time.monotonic_ns()} fail {q.get('eps', '')} {until}\n")
        else:
            return 404
        self.flush()
        return 200


def receive(records_path: str, base_port: int, n: int) -> None:
    import uvloop

    rx = _Receivers(records_path, int(os.environ.get("SAMPLE_EVERY", "50")))
    reasons = {200: b"OK", 404: b"Not Found", 500: b"Internal Server Error"}

    class Proto(asyncio.Protocol):
        def __init__(self, ep: int) -> None:
            self.ep = ep
            self.buf = bytearray()
            self.head: tuple[str, str, dict[str, str]] | None = None
            self.need = 0
            self.transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while True:
                if self.head is None:
                    i = self.buf.find(b"\r\n\r\n")
                    if i < 0:
                        return
                    lines = bytes(self.buf[:i]).decode("latin-1").split("\r\n")
                    del self.buf[: i + 4]
                    method, target, _ = lines[0].split(" ", 2)
                    headers = {}
                    for line in lines[1:]:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                    self.head = (method, target, headers)
                    self.need = int(headers.get("content-length") or 0)
                if len(self.buf) < self.need:
                    return
                body = bytes(self.buf[: self.need])
                del self.buf[: self.need]
                method, target, headers = self.head
                self.head = None
                status = rx.handle(self.ep, method, target, headers, body)
                text = b"ok" if status == 200 else b"no"
                close = headers.get("connection", "").lower() == "close"
                self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n%s\r\n%s" % (
                    status, reasons.get(status, b"X"), len(text), b"Connection: close\r\n" if close else b"", text))
                if close:
                    self.transport.close()
                    return

    async def main() -> None:
        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(lambda ep=ep: Proto(ep), "127.0.0.1", base_port + ep, backlog=1024)
                   for ep in range(n)]
        rx.write(f"{time.monotonic_ns()} ready {base_port} {n}\n")
        rx.flush()
        parent = os.getppid()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        ticks = 0
        while not stop.is_set():
            rx.flush()
            await asyncio.sleep(0.02)
            ticks += 1
            if ticks % 25 == 0 and os.getppid() != parent:  # the parent script is gone: stop too
                break
        rx.flush()
        for s in servers:
            s.close()

    uvloop.run(main())


class Arrivals:
    """Tails the receivers' records: per (endpoint, webhook-id) the first request, the first 200,
    how many requests and how many 200s; signature checks."""

    def __init__(self, path: str) -> None:
        self.f = open(path, "rb")  # noqa: SIM115
        self.rest = b""
        self.ready = False
        self.requests = 0
        self.first: dict[tuple[int, str], tuple[int, int]] = {}      # (ep, id) -> (mono, wall) of the first request
        self.first_ok: dict[tuple[int, str], tuple[int, int]] = {}   # ... of the first 200
        self.tries: dict[tuple[int, str], int] = {}
        self.oks: dict[tuple[int, str], int] = {}
        self.sig_ok = 0
        self.sig_bad: list[str] = []

    def poll(self) -> None:
        data = self.rest + self.f.read()
        lines = data.split(b"\n")
        self.rest = lines.pop()
        for raw in lines:
            p = raw.decode().split(" ")
            if p[1] == "r":
                mono, wall, ep, status, wid, sig = int(p[0]), int(p[2]), int(p[3]), int(p[4]), p[5], p[6]
                key = (ep, wid)
                self.requests += 1
                self.first.setdefault(key, (mono, wall))
                self.tries[key] = self.tries.get(key, 0) + 1
                if status == 200:
                    self.first_ok.setdefault(key, (mono, wall))
                    self.oks[key] = self.oks.get(key, 0) + 1
                if sig == "ok":
                    self.sig_ok += 1
                elif sig != "-":
                    self.sig_bad.append(f"{ep} {wid} {sig}")
            elif p[1] == "ready":
                self.ready = True

    def missing(self, pairs: list[tuple[int, str]]) -> list[tuple[int, str]]:
        return [k for k in pairs if k not in self.first_ok]


async def start_receivers_ctl(base: str, eps_secrets: dict[int, str]) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=10) as c:
        for ep, secret in eps_secrets.items():
            r = await c.post(f"{base}/_ctl/secret?ep={ep}", content=secret.encode())
            r.raise_for_status()


async def receivers_fail(base: str, eps: list[int], until_ns: int) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(f"{base}/_ctl/fail?eps={','.join(map(str, eps))}&until_ns={until_ns}")
        r.raise_for_status()


async def subscribe(call: Any, base_port: int, n: int, receivers_url: str) -> list[str]:
    """Subscribe endpoint i at http://127.0.0.1:<base_port + i>/hook/i to article publishes; hand each
    secret to the receivers. Returns the webhook ids (index = endpoint)."""
    ids, secrets = [], {}
    for ep in range(n):
        doc = (await call("POST", "/v1/webhooks", {
            "url": f"http://127.0.0.1:{base_port + ep}/hook/{ep}", "events": ["entry.published"], "types": ["article"],
        }))["data"]
        ids.append(doc["id"])
        secrets[ep] = doc["secret"]
    await start_receivers_ctl(receivers_url, secrets)
    return ids


async def published_events(pg: Any, entry_ids: list[str]) -> dict[str, float]:
    """entry.published events of these entries: event id -> created_at (wall ns)."""
    conn = await pg()
    try:
        rows = await conn.fetch("SELECT id, created_at FROM outbox_events "
                                "WHERE type = 'entry.published' AND payload->>'id' = ANY($1::text[])", entry_ids)
    finally:
        await conn.close()
    return {r["id"]: r["created_at"].timestamp() * 1e9 for r in rows}


async def wait_deliveries(pg: Any, arr: Arrivals, n_ep: int, entry_ids: list[str], drain_s: float,
                          log: Any) -> dict[str, Any]:
    """For bench/pipeline.py (WEBHOOK_ENDPOINTS): wait until every (endpoint, publish event) pair of
    these entries was answered 200, then: lost, duplicates, event -> first attempt."""
    from pipeline import stats

    t = time.monotonic()
    created = await published_events(pg, entry_ids)
    pairs = [(ep, e) for e in created for ep in range(n_ep)]
    arr.poll()
    at_start = len(pairs) - len(arr.missing(pairs))
    missing = arr.missing(pairs)
    while missing and time.monotonic() - t < drain_s:
        await asyncio.sleep(0.05)
        arr.poll()
        missing = [k for k in missing if k not in arr.first_ok]
    waited = time.monotonic() - t
    await asyncio.sleep(0.3)
    arr.poll()
    if missing:
        log(f"webhooks: {len(missing)} of {len(pairs)} deliveries not answered 200 within {drain_s:g} s")
    first = [(arr.first[k][1] - created[k[1]]) / 1e6 for k in pairs if k in arr.first]
    t_first_event = min(created.values(), default=0)
    last_ok = max((arr.first_ok[k][1] for k in pairs if k in arr.first_ok), default=None)
    return {
        "events": len(created), "expected_pairs": len(pairs), "delivered_pairs": len(pairs) - len(missing),
        "delivered_when_publishing_ended": at_start, "lost": len(missing),
        "duplicates": sum(max(0, arr.oks.get(k, 0) - 1) for k in pairs),
        "event_to_first_attempt_ms": stats(first),
        "first_event_to_last_200_s": round((last_ok - t_first_event) / 1e9, 3) if last_ok and not missing else None,
        "waited_after_publishing_s": round(waited, 2),
        "signatures": {"ok": arr.sig_ok, "bad": len(arr.sig_bad)},
    }


def scrape(url: str | None) -> dict[str, float]:
    """cms_webhook_* samples of the worker's /metrics (empty if unset or unreachable)."""
    if not url:
        return {}
    import urllib.request

    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()  # noqa: S310 (127.0.0.1)
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("cms_webhook_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# ---------------------------------------------------------------------------------------------
# the run


class WebhookBench:
    def __init__(self, base: str, key: str, data_dir: str, outdir: str, records: str) -> None:
        import pipeline as pl  # bench/pipeline.py: the publisher, CPU, quiet-wait and settle helpers

        self.pl = pl
        self.pb = pl.Bench(base, key, data_dir, outdir, os.devnull)  # create(), call(), pg(), authors
        self.poster = pl.LeanPoster(base, key)
        self.outdir = Path(outdir)
        self.arr = Arrivals(records)
        self.n_ep = pl.env_int("N_ENDPOINTS", 10)
        self.base_port = pl.env_int("RECEIVER_BASE_PORT", 18330)
        self.rx_url = f"http://127.0.0.1:{self.base_port}"
        self.metrics_url = os.environ.get("WORKER_METRICS_URL") or None
        self.webhook_ids: list[str] = []
        self.phases: dict[str, dict[str, Any]] = {}
        self.known_events: set[str] = set()  # every event this run published (warm-up included)

    async def setup(self) -> None:
        from seed import ARTICLE_TYPE, AUTHOR_TYPE

        pb = self.pb
        await pb.call("PUT", "/v1/content-types/author", AUTHOR_TYPE)
        await pb.call("PUT", "/v1/content-types/article", ARTICLE_TYPE)
        pb.authors = list(await asyncio.gather(*(pb.create("author", {"name": f"Bench Author {i:02d}"}) for i in range(10))))
        for a in pb.authors:
            await pb.call("POST", f"/v1/entries/author/{a}/publish")
        self.webhook_ids = await subscribe(pb.call, self.base_port, self.n_ep, self.rx_url)
        self.pl.log(f"subscribed {self.n_ep} endpoints on 127.0.0.1:{self.base_port}…{self.base_port + self.n_ep - 1}")
        # Warm-up: 5 publishes to every endpoint (connections, caches, the fan-out's statements).
        ids = [await pb.create("article", self.pl.article_fields(i, "warm", pb.authors[i % 10])) for i in range(5)]
        for entry_id in ids:
            await pb.call("POST", f"/v1/entries/article/{entry_id}/publish")
        events = await self.events_of(ids)
        pairs = [(ep, e) for e in events for ep in range(self.n_ep)]
        deadline = time.monotonic() + 120
        while True:
            self.arr.poll()
            if len(events) == len(ids) and not self.arr.missing(pairs):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"webhooks: the warm-up's {len(ids) * self.n_ep} deliveries did not all arrive "
                                 f"within 120 s ({len(pairs) - len(self.arr.missing(pairs))} did)")
            await asyncio.sleep(0.1)
            events = await self.events_of(ids) if len(events) < len(ids) else events
            pairs = [(ep, e) for e in events for ep in range(self.n_ep)]
        self.known_events |= set(events)
        self.pl.log(f"warm-up done: {len(pairs)} deliveries arrived; signatures verified so far: {self.arr.sig_ok} ok, "
                    f"{len(self.arr.sig_bad)} bad")

    async def events_of(self, entry_ids: list[str]) -> dict[str, dict[str, Any]]:
        """entry.published events of these entries: event id -> {entry, created_at}."""
        conn = await self.pb.pg()
        try:
            rows = await conn.fetch(
                "SELECT id, payload->>'id' AS entry_id, created_at FROM outbox_events "
                "WHERE type = 'entry.published' AND payload->>'id' = ANY($1::text[])", entry_ids)
        finally:
            await conn.close()
        return {r["id"]: {"entry": r["entry_id"], "created_at": r["created_at"]} for r in rows}

    async def log_state(self, event_ids: list[str]) -> dict[str, Any]:
        """The delivery log of these events in PostgreSQL: rows, status counts, per pair its times."""
        conn = await self.pb.pg()
        try:
            rows = await conn.fetch(
                """SELECT d.webhook_id, d.event_id, d.status, d.attempts, d.created_at, d.updated_at,
                          (SELECT min(a.at) FROM webhook_attempts a WHERE a.delivery_id = d.id) AS first_recorded,
                          (SELECT count(*) FROM webhook_attempts a WHERE a.delivery_id = d.id) AS n_attempts
                     FROM webhook_deliveries d WHERE d.event_id = ANY($1::text[])""", event_ids)
        finally:
            await conn.close()
        return {"rows": rows}

    async def count_succeeded(self, event_ids: list[str]) -> int:
        conn = await self.pb.pg()
        try:
            return int(await conn.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE event_id = ANY($1::text[]) AND status = 'succeeded'",
                event_ids))
        finally:
            await conn.close()

    async def api_log_check(self) -> dict[str, Any]:
        """Through the API (the delivery log a user sees): no endpoint has a pending or failed delivery."""
        out = {}
        for status in ("pending", "failed"):
            n = 0
            for wid in self.webhook_ids:
                page = await self.pb.call("GET", f"/v1/webhooks/{wid}/deliveries?status={status}&limit=100")
                n += len(page["data"])
            out[status] = n
        return out

    async def scenario(self, name: str, fail_eps: list[int], fail_s: float, drain_s: float,
                       rate: float = 0) -> dict[str, Any]:
        """rate 0: publish as fast as the API answers (PUBLISH_CONCURRENCY in flight, closed loop);
        else open loop at `rate` publishes/s (each publish its own task at its scheduled time)."""
        pl, pb = self.pl, self.pb
        n = pl.env_int("N_PUBLISHES", 1000)
        conc = pl.env_int("PUBLISH_CONCURRENCY", 8)
        tag = f"{name}-{os.environ.get('BENCH_STAMP', 'x')[-7:-1].lower()}"
        pl.log(f"{name}: creating {n} article drafts (not timed)")
        ids = list(await asyncio.gather(*(pb.create("article", pl.article_fields(i, tag, pb.authors[i % 10]))
                                          for i in range(n))))
        pl.settle()
        others_before = pl.wait_quiet()
        self.arr.poll()
        requests_before = self.arr.requests
        m0 = scrape(self.metrics_url)
        c0 = pb.cpu.snap()
        start = time.monotonic_ns() + 50_000_000
        if fail_eps:
            await receivers_fail(self.rx_url, fail_eps, start + int(fail_s * 1e9))
            pl.log(f"{name}: endpoints {fail_eps} answer 500 for {fail_s:g} s from the first publish")
        sends: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)] * n  # (t0 mono, t0 wall, t1 mono, status)

        async def one(i: int) -> None:
            t0, w0 = time.monotonic_ns(), time.time_ns()
            try:
                status = await self.poster.post(f"/v1/entries/article/{ids[i]}/publish")
            except (OSError, ValueError, asyncio.IncompleteReadError):
                status = 0
            sends[i] = (t0, w0, time.monotonic_ns(), status)

        if rate > 0:
            pl.log(f"{name}: publishing {n} at {rate:g}/s (open loop)")
            tasks = []
            for i in range(n):
                delay = (start + int(i * 1e9 / rate) - time.monotonic_ns()) / 1e9
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)
        else:
            pl.log(f"{name}: publishing {n} ({conc} in flight, closed loop)")
            nxt = iter(range(n))
            await asyncio.sleep(max(0.0, (start - time.monotonic_ns()) / 1e9))

            async def worker() -> None:
                for i in nxt:
                    await one(i)

            await asyncio.gather(*(worker() for _ in range(conc)))
        t_pub_end = time.monotonic_ns()
        t_first = min(s[0] for s in sends)
        w_first = min(s[1] for s in sends)
        pub_s = (t_pub_end - t_first) / 1e9
        errors = sum(1 for s in sends if s[3] != 200)
        pl.log(f"{name}: {n} publishes answered in {pub_s:.2f} s ({n / pub_s:.0f}/s), {errors} not 200; "
               "waiting for the deliveries")
        events = await self.events_of(ids)
        for _ in range(50):  # every publish's event (they commit before the answer; belt and braces)
            if len(events) >= n - errors:
                break
            await asyncio.sleep(0.1)
            events = await self.events_of(ids)
        event_ids = list(events)
        self.known_events |= set(events)
        pairs = [(ep, e) for e in event_ids for ep in range(self.n_ep)]
        self.arr.poll()
        at_pub_end = len(pairs) - len(self.arr.missing(pairs))
        deadline = time.monotonic() + drain_s
        last_note = time.monotonic()
        missing = self.arr.missing(pairs)
        while missing and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            self.arr.poll()
            missing = [k for k in missing if k not in self.arr.first_ok]
            if time.monotonic() - last_note > 15:
                last_note = time.monotonic()
                pl.log(f"{name}: {len(pairs) - len(missing)} of {len(pairs)} delivered")
        t_drained = time.monotonic()
        # The delivery log: every delivery marked succeeded (its transaction commits after the answer).
        log_deadline = time.monotonic() + pl.env_float("LOG_WAIT_S", 60)
        succeeded = await self.count_succeeded(event_ids)
        while succeeded < len(pairs) and time.monotonic() < log_deadline:
            await asyncio.sleep(0.1)
            succeeded = await self.count_succeeded(event_ids)
        c1 = pb.cpu.snap()
        m1 = scrape(self.metrics_url)
        await asyncio.sleep(0.3)  # late duplicates, if any, reach the records
        self.arr.poll()
        state = await self.log_state(event_ids)
        api = await self.api_log_check()
        result = self.analyse(name, n, 0 if rate > 0 else conc, fail_eps, fail_s, sends, events, pairs, state["rows"], t_first, w_first,
                              t_pub_end, at_pub_end, succeeded, api)
        result.update({
            "rate": rate or None,
            "drain_waited_s": round(t_drained - (t_pub_end / 1e9), 2), "others_before": others_before,
            "cpu": pb.cpu.diff(c0, c1), "requests_at_receivers": self.arr.requests - requests_before,
            "metrics_delta": {k: round(m1.get(k, 0) - m0.get(k, 0), 3) for k in m1
                              if "attempts_total" in k or "duration_seconds_count" in k or "duration_seconds_sum" in k},
            "signatures": {"ok": self.arr.sig_ok, "bad": len(self.arr.sig_bad), "bad_first": self.arr.sig_bad[:5]},
        })
        self.phases[name] = result
        (self.outdir / f"{name}.pairs.json").write_text(json.dumps(result.pop("_pairs")))
        h = result["healthy"]["event_to_first_attempt_ms"]
        pl.log(f"{name}: all {result['delivered_pairs']}/{result['expected_pairs']} in {result['all_received_s']} s "
               f"({result['deliveries_per_s']}/s); event->first attempt (healthy) p50 {h.get('p50')} p99 {h.get('p99')} "
               f"max {h.get('max')} ms; lost {result['lost']}, duplicates {result['duplicates']}; cpu {result['cpu']}")
        return result

    def analyse(self, name: str, n: int, conc: int, fail_eps: list[int], fail_s: float, sends: list[Any],
                events: dict[str, Any], pairs: list[tuple[int, str]], rows: list[Any], t_first: int, w_first: int,
                t_pub_end: int, at_pub_end: int, succeeded: int, api: dict[str, Any]) -> dict[str, Any]:
        stats = self.pl.stats
        arr = self.arr
        ep_of = {wid: ep for ep, wid in enumerate(self.webhook_ids)}
        created = {e: v["created_at"].timestamp() * 1e9 for e, v in events.items()}
        by_pair = {(ep_of[r["webhook_id"]], r["event_id"]): r for r in rows}
        delivered = [k for k in pairs if k in arr.first_ok]
        lost = len(pairs) - len(delivered)
        duplicates = sum(max(0, arr.oks.get(k, 0) - 1) for k in pairs)
        groups: dict[str, dict[str, Any]] = {}
        out_pairs = []
        for label, eps in (("healthy", [ep for ep in range(self.n_ep) if ep not in fail_eps]), ("failing", fail_eps)):
            if not eps:
                continue
            first, ok, fanout, row_to_first, tries = [], [], [], [], []
            for ep in eps:
                for e in events:
                    k = (ep, e)
                    if k in arr.first:
                        first.append((arr.first[k][1] - created[e]) / 1e6)
                    if k in arr.first_ok:
                        ok.append((arr.first_ok[k][1] - created[e]) / 1e6)
                    r = by_pair.get(k)
                    if r is not None:
                        fanout.append((r["created_at"].timestamp() * 1e9 - created[e]) / 1e6)
                        if k in arr.first:
                            row_to_first.append((arr.first[k][1] - r["created_at"].timestamp() * 1e9) / 1e6)
                    tries.append(arr.tries.get(k, 0))
            oks_mono = [arr.first_ok[(ep, e)][0] for ep in eps for e in events if (ep, e) in arr.first_ok]
            complete = len(oks_mono) == len(eps) * len(events)
            groups[label] = {
                "endpoints": eps, "pairs": len(eps) * len(events),
                "all_200_s": round((max(oks_mono) - t_first) / 1e9, 3) if oks_mono and complete else None,
                "event_to_first_attempt_ms": stats(first), "event_to_200_ms": stats(ok),
                "event_to_delivery_row_ms": stats(fanout), "delivery_row_to_first_attempt_ms": stats(row_to_first),
                "requests_per_pair": stats([float(t) for t in tries]),
            }
        for (ep, e) in pairs:
            f, o, r = arr.first.get((ep, e)), arr.first_ok.get((ep, e)), by_pair.get((ep, e))
            out_pairs.append([ep, e, round(created[e] / 1e6 - w_first / 1e6, 2),
                              round((f[1] - created[e]) / 1e6, 2) if f else None,
                              round((o[1] - created[e]) / 1e6, 2) if o else None, arr.tries.get((ep, e), 0),
                              r["status"] if r else None, r["attempts"] if r else None])
        last_ok = max((arr.first_ok[k][0] for k in delivered), default=None)
        all_received_s = (last_ok - t_first) / 1e9 if last_ok and not lost else None
        log_status: dict[str, int] = {}
        for r in rows:
            log_status[r["status"]] = log_status.get(r["status"], 0) + 1
        last_updated = max((r["updated_at"] for r in rows if r["status"] == "succeeded"), default=None)
        all_logged_s = ((last_updated.timestamp() * 1e9 - w_first) / 1e9
                        if last_updated and succeeded == len(pairs) else None)
        attempts_logged = sum(int(r["n_attempts"]) for r in rows)
        pub_s = (t_pub_end - t_first) / 1e9
        api_ms = [(s[2] - s[0]) / 1e6 for s in sends if s[3] == 200]
        # the time until 99% and 100% of the pairs had their first 200 (backlog curve, coarse)
        oks_sorted = sorted(arr.first_ok[k][0] for k in delivered)
        p99_done = (oks_sorted[int(len(oks_sorted) * 0.99) - 1] - t_first) / 1e9 if oks_sorted else None
        return {
            "name": name, "publishes": n, "publish_concurrency": conc, "publish_errors": sum(1 for s in sends if s[3] != 200),
            "publish_s": round(pub_s, 3), "publishes_per_s": round(n / pub_s, 1) if pub_s else None,
            "publish_api_ms": stats(api_ms), "events": len(events),
            "fail_endpoints": fail_eps, "fail_s": fail_s if fail_eps else 0,
            "retry_schedule": os.environ.get("RETRY_SCHEDULE") or "default (5,300,1800,7200,18000,36000,36000)",
            "expected_pairs": len(pairs), "delivered_pairs": len(delivered), "delivered_when_publishing_ended": at_pub_end,
            "lost": lost, "duplicates": duplicates,
            "all_received_s": round(all_received_s, 3) if all_received_s else None,
            "received_99pct_s": round(p99_done, 3) if p99_done else None,
            "all_succeeded_in_log_s": round(all_logged_s, 3) if all_logged_s else None,
            "deliveries_per_s": round(len(pairs) / all_received_s, 1) if all_received_s else None,
            "log": {"rows": len(rows), "status": log_status, "attempt_rows": attempts_logged, "succeeded": succeeded,
                    "api_pending": api["pending"], "api_failed": api["failed"]},
            **groups,
            "_pairs": {"columns": ["endpoint", "event_id", "event_ms_from_first_publish", "first_attempt_ms",
                                   "first_200_ms", "requests", "log_status", "log_attempts"], "rows": out_pairs},
        }

    async def profile(self) -> None:
        comps = self.pl.components()
        targets = {k: comps[k] for k in ("worker",) if k in comps}
        spies = self.pl.start_spies("webhooks", targets, self.outdir)
        if not spies:
            return
        await asyncio.sleep(1.5)
        self.pl.log(f"PROFILE: py-spy on {targets} during a healthy round")
        try:
            await self.scenario("profile", [], 0, self.pl.env_float("DRAIN_TIMEOUT_S", 180))
        finally:
            self.pl.stop_spies("webhooks", spies, self.outdir)

    async def close(self) -> None:
        await self.pb.client.aclose()
        await self.pb.poster.aclose()
        await self.poster.aclose()


# ---------------------------------------------------------------------------------------------
# report


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def pcts(s: dict[str, Any], keys: tuple[str, ...] = ("p50", "p99", "max")) -> str:
    return " / ".join(fmt(s.get(k)) for k in keys)


def outcome_of(sample: str) -> str:
    """'cms_webhook_attempts_total{outcome="retry"}' -> 'retry'."""
    return sample.split("outcome=")[1].split('"')[1]


def report(doc: dict[str, Any]) -> str:
    ph = {k: p for k, p in doc["phases"].items() if k != "profile"}
    lines = [
        "| scenario | publishing | publishes/s | all 200s at receivers s | all succeeded in log s | deliveries/s "
        "| event → first attempt, healthy endpoints, p50 / p99 / max ms | lost | duplicates |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for k, p in ph.items():
        h = p.get("healthy", {}).get("event_to_first_attempt_ms", {})
        how = f"open loop {p['rate']:g}/s" if p.get("rate") else f"closed loop, {p['publish_concurrency']} in flight"
        if p["fail_endpoints"]:
            how += f"; endpoints {p['fail_endpoints'][0]}–{p['fail_endpoints'][-1]} answer 500 for {p['fail_s']:g} s"
        lines.append(
            f"| {k} | {how} | {fmt(p['publishes_per_s'])} | {fmt(p['all_received_s'])} | {fmt(p['all_succeeded_in_log_s'])} "
            f"| {fmt(p['deliveries_per_s'])} | {pcts(h)} | {p['lost']} | {p['duplicates']} |")
    targets = []
    if "burst" in ph:
        v = ph["burst"]["deliveries_per_s"]
        targets.append(f"≥ 500 deliveries/s (burst): {fmt(v)} {'✓' if (v or 0) >= 500 else '✗'}")
    for k in [k for k in ph if k.startswith("paced")] + ["burst"]:
        if k in ph:
            v = ph[k].get("healthy", {}).get("event_to_first_attempt_ms", {}).get("p99")
            targets.append(f"p99 event → first attempt < 1 s ({k}): {fmt(v)} ms {'✓' if (v or 1e9) < 1000 else '✗'}")
    if "failing" in ph:
        v = ph["failing"].get("healthy", {}).get("event_to_first_attempt_ms", {}).get("p99")
        targets.append(f"p99 for the 7 healthy endpoints while 3 fail: {fmt(v)} ms {'✓' if (v or 1e9) < 1000 else '✗'}")
    lost = sum(p["lost"] for p in ph.values())
    targets.append(f"nothing lost: {lost} lost {'✓' if not lost else '✗'}")
    lines += ["", "Targets: " + "; ".join(targets) + "."]
    lines += ["", "| scenario | endpoints | event → delivery row (fan-out) p50 / p99 ms | row → first attempt p50 / p99 ms "
              "| event → first attempt p50 / p95 / p99 / max ms | event → 200 p50 / p99 / max ms | requests per pair max "
              "| all 200s s |",
              "|---|---|--:|--:|--:|--:|--:|--:|"]
    for k, p in ph.items():
        for g in ("healthy", "failing"):
            if g not in p:
                continue
            s = p[g]
            lines.append(
                f"| {k} | {g} {s['endpoints'][0]}…{s['endpoints'][-1]} | {pcts(s['event_to_delivery_row_ms'], ('p50', 'p99'))} "
                f"| {pcts(s['delivery_row_to_first_attempt_ms'], ('p50', 'p99'))} "
                f"| {pcts(s['event_to_first_attempt_ms'], ('p50', 'p95', 'p99', 'max'))} "
                f"| {pcts(s['event_to_200_ms'])} | {fmt(s['requests_per_pair'].get('max'))} | {fmt(s.get('all_200_s'))} |")
    lines += ["", "| scenario | log rows / succeeded | API: pending / failed | attempts (log) | requests at receivers "
              "| worker metrics: attempts by outcome | signatures verified ok / bad | CMS cores | others cores |",
              "|---|--:|--:|--:|--:|---|--:|--:|--:|"]
    for k, p in ph.items():
        md = p.get("metrics_delta", {})
        att = ", ".join(f"{outcome_of(name)} {int(v)}" for name, v in md.items()
                        if "attempts_total" in name and "outcome=" in name) or "–"
        cpu = p["cpu"]
        lines.append(f"| {k} | {p['log']['rows']:,} / {p['log']['succeeded']:,} | {p['log']['api_pending']} / "
                     f"{p['log']['api_failed']} | {p['log']['attempt_rows']:,} | {p['requests_at_receivers']:,} | {att} "
                     f"| {p['signatures']['ok']} / {p['signatures']['bad']} | {cpu.get('server_cores', 0):.2f} "
                     f"| {cpu.get('others_cores', 0):.2f} |")
    comp = [(k, p["cpu"].get("component_cores", {})) for k, p in ph.items()]
    if comp and comp[0][1]:
        names = list(comp[0][1])
        lines += ["", "CPU by component (cores, from the first publish to the last delivery in the log):", "",
                  "| scenario | " + " | ".join(names) + " |", "|---|" + "--:|" * len(names)]
        for k, c in comp:
            lines.append(f"| {k} | " + " | ".join(f"{c.get(x, 0):.2f}" for x in names) + " |")
    return "\n".join(lines)


async def run(base: str, key: str, data_dir: str, outdir: str, records: str) -> int:
    import pipeline as pl

    b = WebhookBench(base, key, data_dir, outdir, records)
    try:
        deadline = time.monotonic() + 10
        while not b.arr.ready:
            b.arr.poll()
            if time.monotonic() > deadline:
                raise SystemExit("webhooks: the receivers did not start (no 'ready' record)")
            await asyncio.sleep(0.05)
        await b.setup()
        await b.pb.log_statements()
        fail_eps = list(range(pl.env_int("FAIL_ENDPOINTS", 3)))
        paced = pl.env_float("PACED_RATE", 50)
        drain = pl.env_float("DRAIN_TIMEOUT_S", 180)
        for name in os.environ.get("SCENARIOS", "burst paced failing").split():
            if name == "burst":
                await b.scenario("burst", [], 0, drain)
            elif name == "paced":
                await b.scenario("paced", [], 0, drain, paced)
            elif name.startswith("paced") and name[5:].replace(".", "", 1).isdigit():  # e.g. paced20: 20/s
                await b.scenario(name, [], 0, drain, float(name[5:]))
            elif name == "failing":
                await b.scenario("failing", fail_eps, pl.env_float("FAIL_S", 30), pl.env_float("FAIL_DRAIN_TIMEOUT_S", 900),
                                 pl.env_float("FAIL_RATE", paced))
            else:
                raise SystemExit(f"webhooks: unknown scenario {name!r} (burst, paced, paced<rate>, failing)")
        if os.environ.get("PROFILE"):
            await b.profile()
    finally:
        await b.close()
    b.arr.poll()
    unknown = {f"{ep} {wid}": c for (ep, wid), c in b.arr.tries.items() if wid not in b.known_events}
    doc = {"meta": pl.meta(HERE.parent), "phases": b.phases,
           "receivers": {"requests": b.arr.requests, "requests_with_unknown_webhook_id": sum(unknown.values()),
                         "unknown_first": list(unknown)[:10], "signatures_ok": b.arr.sig_ok,
                         "signatures_bad": b.arr.sig_bad[:20]}}
    doc["meta"]["config"] = {k: os.environ.get(k) for k in (
        "N_ENDPOINTS", "N_PUBLISHES", "PUBLISH_CONCURRENCY", "SCENARIOS", "FAIL_ENDPOINTS", "FAIL_S", "RETRY_SCHEDULE",
        "QUIET_MAX_CORES", "QUIET_WAIT_S")}
    stamp = os.environ.get("BENCH_STAMP") or time.strftime("%Y-%m-%d_%H%M%SZ", time.gmtime())
    out = HERE / "results" / f"webhooks-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str))
    print(f"\n## Webhooks, {stamp} (cms up --workers 1, embedded defaults, 127.0.0.1; "
          f"retry schedule: {os.environ.get('RETRY_SCHEDULE') or 'default'})\n")
    print(report(doc))
    print(f"\nreceivers: {doc['receivers']['requests']:,} requests, {doc['receivers']['requests_with_unknown_webhook_id']} "
          f"with a webhook-id this run did not publish; signatures verified at arrival: {b.arr.sig_ok} ok, "
          f"{len(b.arr.sig_bad)} bad")
    print(f"\nresults: {out}   raw: {outdir}")
    bad = [k for k, p in b.phases.items() if p["lost"] or p["publish_errors"] or p["signatures"]["bad"]] + \
        (["unknown"] if unknown else [])
    return 1 if bad else 0


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "receive":
        receive(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) == 7 and sys.argv[1] == "run":
        sys.exit(asyncio.run(run(*sys.argv[2:7])))
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        print(report(json.loads(Path(sys.argv[2]).read_text())))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
