"""The mixed delivery benchmark's Python side (bench/mixed.sh runs it; see bench/README.md, "Mixed").

  python bench/mixed.py publish MANAGEMENT_URL MANAGEMENT_KEY DELIVERY_URL DELIVERY_KEY LIST_PATH TAG OUT.json READY_FILE
  python bench/mixed.py attach RESULTS.jsonl NAME PUBLISH.json CPU0.json CPU1.json
  python bench/mixed.py report RESULTS.jsonl META.json OUT.json

**publish**: the open-loop publisher with its visibility probe, running until SIGTERM/SIGINT.
It reads the ids of the published articles (`GET /v1/entries/article?status=published`), touches
READY_FILE, then every 1/RATE s (RATE, default 50) starts one job as its own task, on schedule
whatever the earlier ones are doing (open loop): `PATCH /v1/entries/article/{id}` with a new title
holding a unique marker `mx-<TAG>-<seq>`, then `POST /v1/entries/article/{id}/publish`. Jobs walk
through the published articles in slug order (from an offset that depends on TAG), so slugs and the
set of published entries stay as seeded: by-slug reads keep answering 200 and the list keeps its
950 entries, while each publish moves its article to the top of `sort=-published_at` and purges
`entry:{id}` and `type:article`.

For every PROBE_EVERY-th publish (default 10) that answered 200, the probe starts at the moment the
publish answer arrived (t_pub) and GETs LIST_PATH from delivery (the load's own list URL, so the
same cache entry) every PROBE_INTERVAL_MS (20) until the answer shows the publish, or
PROBE_TIMEOUT_S (5) has passed. The delay is the arrival of that answer − t_pub. "Shows the publish"
is either the marker itself in the page, or the marker of a publish whose POST was sent after
t_pub: that one committed after ours, so an answer holding it reflects ours too (ours may have been
pushed off the page by ≥ 20 newer publishes; at 50/s that is 0.4 s later). Requests go over
kept-alive sockets with a minimal HTTP/1.1 client (as pipeline.py's LeanPoster: httpx's pool costs
a core once hundreds of requests wait). Every time is CLOCK_MONOTONIC, as in cpuacct.py's snapshots.
OUT.json gets every job and every probe.

**attach**: adds the publisher's figures to the results row NAME (written by lib.sh `measure`):
jobs sent per second in the measured window (CPU0/CPU1's `t`), publishes completed, errors, the
PATCH+publish latency, and the visibility delays of every probed publish answered between READY
and the end of the measured window (warm-up included: the load is the same).

**report**: the markdown tables (targets with pass/fail, visibility, and wrkparse.py's detailed
table with CPU) and OUT.json = {"meta", "results", "targets"}.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import sys
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import wrkparse  # noqa: E402  (bench/wrkparse.py)

VISIBLE_MS = 1000.0  # the target: every publish visible in the list within 1 s


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def write(path: str, text: str) -> None:
    Path(path).write_text(text)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] mixed: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# a minimal HTTP/1.1 client over kept-alive sockets


class _Stale(ConnectionError):
    """The connection was closed before an answer came."""


class LeanClient:
    """Requests over kept-alive connections; another connection whenever none is idle."""

    def __init__(self, base: str, key: str) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.head = f"Host: {parts.netloc}\r\nAuthorization: Bearer {key}\r\n"
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    async def request(self, method: str, path: str, body: bytes = b"",
                      content_type: str = "application/json") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\n{self.head}Content-Length: {len(body)}\r\n"
        if body:
            head += f"Content-Type: {content_type}\r\n"
        data = (head + "\r\n").encode() + body
        while self.idle:
            # A kept-alive connection the server closed meanwhile answers nothing: take the next.
            conn = self.idle.pop()
            try:
                return await self._exchange(conn, data)
            except (OSError, asyncio.IncompleteReadError):
                conn[1].close()
        self.opened += 1
        return await self._exchange(await asyncio.open_connection(self.host, self.port), data)

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], data: bytes) -> tuple[int, bytes]:
        reader, writer = conn
        writer.write(data)
        status_line = await reader.readline()
        if not status_line:
            raise _Stale()
        length, chunked, close = 0, False, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                close = True
        if chunked:
            parts = []
            while (size := int((await reader.readline()).split(b";")[0], 16)) > 0:
                parts.append(await reader.readexactly(size))
                await reader.readline()
            await reader.readline()
            payload = b"".join(parts)
        else:
            payload = await reader.readexactly(length) if length else b""
        if close:
            writer.close()
        else:
            self.idle.append(conn)
        return int(status_line.split()[1]), payload

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


# ---------------------------------------------------------------------------------------------
# publish: the open-loop publisher and the visibility probe


async def published_articles(mgmt: LeanClient) -> list[tuple[str, str]]:
    """(slug, id) of every published article, in slug order."""
    out: list[tuple[str, str]] = []
    cursor = None
    while True:
        path = "/v1/entries/article?status=published&limit=100&fields=slug"
        if cursor:
            path += "&cursor=" + quote(cursor, safe="")
        status, body = await mgmt.request("GET", path)
        if status != 200:
            raise SystemExit(f"mixed: GET {path} -> HTTP {status}: {body[:300]!r}")
        doc = json.loads(body)
        out += [(e["fields"]["slug"], e["id"]) for e in doc["data"]]
        cursor = doc["meta"].get("next_cursor")
        if not cursor or not doc["data"]:
            return sorted(out)


async def publish(mgmt_url: str, mgmt_key: str, delivery_url: str, delivery_key: str, list_path: str,
                  tag: str, out_path: str, ready_path: str) -> None:
    if not re.fullmatch(r"[a-z0-9]+", tag):
        raise SystemExit("mixed: TAG must be lowercase letters and digits")
    rate = env_float("RATE", 50)
    probe_every = int(env_float("PROBE_EVERY", 10))
    interval_probe = env_float("PROBE_INTERVAL_MS", 20) / 1e3
    probe_timeout = env_float("PROBE_TIMEOUT_S", 5)
    mgmt = LeanClient(mgmt_url, mgmt_key)
    reader = LeanClient(delivery_url, delivery_key)
    articles = await published_articles(mgmt)
    if not articles:
        raise SystemExit("mixed: no published articles")
    offset = zlib.crc32(tag.encode()) % len(articles)
    marker_re = re.compile(rb"mx-" + tag.encode() + rb"-(\d{7})")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # jobs[seq] = [t_sched, t_patch_sent, t_patch_done, t_pub_sent, t_pub_done, patch_status, pub_status, id]
    jobs: list[list[Any]] = []
    pub_sent: dict[int, float] = {}  # seq -> when its publish POST was sent
    probes: list[list[Any]] = []  # [seq, t_pub_done, t_seen or None, how, polls, statuses]
    probe_tasks: set[asyncio.Task[None]] = set()

    async def probe(seq: int, t_pub: float) -> None:
        marker = f"mx-{tag}-{seq:07d}".encode()
        polls, how, t_seen, statuses = 0, None, None, {}
        next_send = t_pub
        while True:
            delay = next_send - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            t_send = time.monotonic()
            try:
                status, body = await reader.request("GET", list_path)
            except (OSError, ValueError, asyncio.IncompleteReadError):
                status, body = 0, b""
            t_recv = time.monotonic()
            polls += 1
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                if marker in body:
                    how = "own"
                elif any(pub_sent.get(int(m), 0.0) > t_pub for m in marker_re.findall(body)):
                    how = "newer"
            if how is not None:
                t_seen = t_recv
                break
            if t_recv - t_pub > probe_timeout:
                break
            next_send = t_send + interval_probe
        probes.append([seq, t_pub, t_seen, how, polls, statuses])

    async def job(seq: int, t_sched: float) -> None:
        slug, entry_id = articles[(offset + seq) % len(articles)]
        row: list[Any] = [t_sched, time.monotonic(), None, None, None, 0, 0, entry_id]
        jobs[seq] = row
        title = f"Republished {slug} mx-{tag}-{seq:07d}"
        try:
            row[5], _ = await mgmt.request("PATCH", f"/v1/entries/article/{entry_id}",
                                           json.dumps({"fields": {"title": title}}).encode())
            row[2] = time.monotonic()
            if row[5] != 200:
                return
            row[3] = pub_sent[seq] = time.monotonic()
            row[6], _ = await mgmt.request("POST", f"/v1/entries/article/{entry_id}/publish")
            row[4] = time.monotonic()
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            log(f"job {seq}: {type(exc).__name__}: {exc}")
            return
        if row[6] == 200 and seq % probe_every == 0:
            task = asyncio.create_task(probe(seq, row[4]))
            probe_tasks.add(task)
            task.add_done_callback(probe_tasks.discard)

    write(ready_path, f"{len(articles)} articles\n")
    t_ready = time.monotonic()
    log(f"{tag}: {len(articles)} published articles; republishing at {rate:g}/s (open loop), "
        f"probing every {probe_every}th publish at {list_path}")
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic() + 0.01
    seq = 0
    while not stop.is_set():
        t_sched = start + seq / rate
        delay = t_sched - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                break
            except TimeoutError:
                pass
        jobs.append([])
        task = asyncio.create_task(job(seq, t_sched))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        seq += 1
    t_stop = time.monotonic()
    log(f"{tag}: stopping after {seq} jobs; waiting for {len(tasks)} jobs and {len(probe_tasks)} probes in flight")
    while tasks or probe_tasks:
        await asyncio.gather(*tasks, *probe_tasks)
    mgmt.close()
    reader.close()
    doc = {"tag": tag, "rate": rate, "probe_every": probe_every, "probe_interval_ms": interval_probe * 1e3,
           "probe_timeout_s": probe_timeout, "list_path": list_path, "articles": len(articles),
           "t_ready": t_ready, "t_stop": t_stop, "connections_opened": {"management": mgmt.opened, "delivery": reader.opened},
           "job_columns": ["t_sched", "t_patch_sent", "t_patch_done", "t_pub_sent", "t_pub_done", "patch_status",
                           "pub_status", "id"],
           "jobs": jobs,
           "probe_columns": ["seq", "t_pub_done", "t_seen", "how", "polls", "statuses"],
           "probes": sorted(probes)}
    write(out_path, json.dumps(doc))
    log(f"{tag}: wrote {out_path}")


# ---------------------------------------------------------------------------------------------
# attach: the publisher's figures, into the results row


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
            "p99": round(pct(values, 99), 1), "max": round(max(values), 1)}


def summarize(doc: dict[str, Any], t0: float, t1: float) -> dict[str, Any]:
    """t0..t1: the measured window; the whole load window is t_ready..t1."""
    jobs = [j for j in doc["jobs"] if j]
    load = [j for j in jobs if doc["t_ready"] <= j[1] <= t1]
    window = [j for j in load if t0 <= j[1] <= t1]
    done_in_window = [j for j in jobs if j[4] is not None and t0 <= j[4] <= t1 and j[6] == 200]
    errors: dict[str, int] = {}
    for j in load:
        if j[5] != 200:
            errors[f"patch {j[5]}"] = errors.get(f"patch {j[5]}", 0) + 1
        elif j[6] != 200:
            errors[f"publish {j[6]}"] = errors.get(f"publish {j[6]}", 0) + 1
    api_ms = [(j[4] - j[1]) * 1e3 for j in load if j[4] is not None and j[6] == 200]
    lag_ms = [(j[1] - j[0]) * 1e3 for j in load]
    probes = [p for p in doc["probes"] if doc["t_ready"] <= p[1] <= t1]
    seen_ms = [(p[2] - p[1]) * 1e3 for p in probes if p[2] is not None]
    unseen = sum(1 for p in probes if p[2] is None)
    probe_statuses: dict[str, int] = {}
    for p in probes:
        for status, n in p[5].items():
            probe_statuses[str(status)] = probe_statuses.get(str(status), 0) + n
    secs = max(t1 - t0, 1e-6)
    return {
        "rate": doc["rate"], "articles": doc["articles"],
        "sent_per_s": round(len(window) / secs, 2), "published_per_s": round(len(done_in_window) / secs, 2),
        "jobs_in_load": len(load), "errors": errors, "send_lag_ms": stats(lag_ms),
        "patch_publish_ms": stats(api_ms),
        "visible_ms": stats(seen_ms), "probes": len(probes), "not_seen": unseen,
        "over_1s": unseen + sum(1 for v in seen_ms if v > VISIBLE_MS),
        "seen_by": {how: sum(1 for p in probes if p[3] == how) for how in ("own", "newer")},
        "polls": stats([float(p[4]) for p in probes]), "probe_statuses": probe_statuses,
        "probe_timeout_s": doc["probe_timeout_s"], "probe_every": doc["probe_every"],
        "probe_interval_ms": doc["probe_interval_ms"], "list_path": doc["list_path"],
        "connections_opened": doc.get("connections_opened"),
    }


def attach(results: str, name: str, publish_json: str, cpu0: str, cpu1: str) -> None:
    doc = json.loads(Path(publish_json).read_text())
    t0, t1 = json.loads(Path(cpu0).read_text())["t"], json.loads(Path(cpu1).read_text())["t"]
    summary = summarize(doc, t0, t1)
    lines = [json.loads(line) for line in Path(results).read_text().splitlines() if line.strip()]
    for rec in lines:
        if rec["name"] == name:
            rec["publish"] = summary
    Path(results).write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    v = summary["visible_ms"]
    log(f"{name}: sent {summary['sent_per_s']}/s, published {summary['published_per_s']}/s, errors {summary['errors']}, "
        f"PATCH+publish p50 {summary['patch_publish_ms'].get('p50')} p99 {summary['patch_publish_ms'].get('p99')} ms; "
        f"visible p50 {v.get('p50')} p99 {v.get('p99')} max {v.get('max')} ms over {summary['probes']} probes, "
        f"{summary['over_1s']} over 1 s ({summary['not_seen']} not seen within {summary['probe_timeout_s']:g} s)")


# ---------------------------------------------------------------------------------------------
# report


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def row_result(r: dict[str, Any]) -> tuple[str, bool | None]:
    """(text, passed) of a row against its ratio target (None: no target)."""
    target = r.get("target")
    if r.get("error"):
        return f"INVALID: {r['error']}", False if target is not None else None
    if not r.get("valid"):
        return f"INVALID: {r.get('non_2xx_3xx', 0)} non-2xx/3xx", False if target is not None else None
    pub = r.get("publish")
    if pub is not None and pub["sent_per_s"] < 0.95 * pub["rate"]:
        return f"✗ publisher sent only {pub['sent_per_s']:g}/s", False
    if target is None or r.get("ratio") is None:
        return "", None
    ok = r["ratio"] >= target
    return ("✓" if ok else f"✗ ({r['ratio'] / target:.0%} of the target)"), ok


def report(results: str, meta_path: str, out_path: str) -> None:
    recs = wrkparse.enrich([json.loads(line) for line in Path(results).read_text().splitlines() if line.strip()])
    meta = json.loads(Path(meta_path).read_text())
    ceiling = next((r for r in recs if r["name"] == wrkparse.CEILING and r.get("valid")), None)
    targets: list[dict[str, Any]] = []
    print("| scenario | req/s | p50 ms | p99 ms | × ceiling | target | result | publishes/s | visible p50 / p99 / max ms | > 1 s | others' CPU |")
    print("|---|--:|--:|--:|--:|--:|:-:|--:|--:|--:|--:|")
    for r in recs:
        text, ok = row_result(r)
        ratio = "1.00" if r["name"] == wrkparse.CEILING and r.get("valid") else fmt(r.get("ratio"), 2)
        pub = r.get("publish")
        pub_s = vis = over = ""
        if pub is not None:
            v = pub["visible_ms"]
            pub_s = f"{pub['published_per_s']:g}"
            errs = sum(pub["errors"].values())
            if errs:
                pub_s += f" ({errs} errors)"
            vis = f"{fmt(v.get('p50'))} / {fmt(v.get('p99'))} / {fmt(v.get('max'))}"
            over = f"{pub['over_1s']} of {pub['probes']}"
        others = (r.get("cpu") or {}).get("others_cores")
        if others is not None and others >= wrkparse.NOISY_CORES:
            text = (text + " noisy").strip()
        target = f"≥ {r['target']:g}" if r.get("target") is not None else ""
        print(f"| {r['label']} | {fmt(r.get('rps'), 0)} | {fmt(r.get('p50_ms'), 2)} | {fmt(r.get('p99_ms'), 2)} | "
              f"{ratio} | {target} | {text} | {pub_s} | {vis} | {over} | {fmt(others, 2)} |")
        if ok is not None:
            targets.append({"name": r["name"], "what": f"{r['label']}: ≥ {r['target']:g}× the ceiling",
                            "value": r.get("ratio"), "passed": ok})
    pubs = [r for r in recs if r.get("publish")]
    if pubs:
        probes = sum(r["publish"]["probes"] for r in pubs)
        over = sum(r["publish"]["over_1s"] for r in pubs)
        worst = max((r["publish"]["visible_ms"].get("max") or 0.0) for r in pubs)
        unseen = sum(r["publish"]["not_seen"] for r in pubs)
        ok = probes > 0 and over == 0
        targets.append({"name": "visible_1s", "what": "every probed publish visible in the list within 1 s",
                        "value": {"probes": probes, "over_1s": over, "not_seen": unseen, "max_ms": worst}, "passed": ok})
        print()
        print("| during | publishes sent/s | published/s | errors | PATCH+publish p50 / p99 ms | probes | visible p50 / p95 / p99 / max ms | seen: own / newer | > 1 s |")
        print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
        for r in pubs:
            p, v, a = r["publish"], r["publish"]["visible_ms"], r["publish"]["patch_publish_ms"]
            errs = ", ".join(f"{k}: {n}" for k, n in p["errors"].items()) or "0"
            late = str(p["over_1s"])
            if p["not_seen"]:
                late += f" ({p['not_seen']} not seen in {p['probe_timeout_s']:g} s)"
            print(f"| {r['label']} | {p['sent_per_s']:g} | {p['published_per_s']:g} | {errs} | {fmt(a.get('p50'))} / {fmt(a.get('p99'))} | "
                  f"{p['probes']} | {fmt(v.get('p50'))} / {fmt(v.get('p95'))} / {fmt(v.get('p99'))} / {fmt(v.get('max'))} | "
                  f"{p['seen_by']['own']} / {p['seen_by']['newer']} | {late} |")
        print()
        print(f"Every probed publish visible in the list within 1 s: {'✓' if ok else '✗'} "
              f"({over} of {probes} over 1 s; worst {worst:,.0f} ms{f'; {unseen} never seen' if unseen else ''}).")
    with_parts = [r for r in recs if (r.get("cpu") or {}).get("component_cores")]
    if with_parts:
        names = ["delivery", "management", "worker", "postgres", "valkey", "scheduler", "publisher"]
        print()
        print("CPU in cores over each measured window (a process tree each; \"wrk + rest\" = the benchmark's own "
              "processes minus the CMS and the publisher, mostly wrk):")
        print()
        print("| scenario | " + " | ".join(names) + " | wrk + rest | others | machine |")
        print("|---|" + "--:|" * (len(names) + 3))
        for r in with_parts:
            cpu = r["cpu"]
            parts = cpu["component_cores"]
            rest = cpu["ours_cores"] - (cpu.get("server_cores") or 0.0) - parts.get("publisher", 0.0)
            cells = [fmt(parts.get(n), 2) if n in parts else "" for n in names]
            print(f"| {r['label']} | " + " | ".join(cells) + f" | {rest:.2f} | {cpu['others_cores']:.2f} | {cpu['machine_cores']:.2f} |")
    if ceiling is None:
        print("\n(no valid ceiling row: ratios are n/a, ratio targets count as failed)")
    passed = sum(1 for t in targets if t["passed"])
    print(f"\nTargets: {passed} of {len(targets)} met.")
    print("\n<details><summary>All rows with CPU (wrkparse.py)</summary>\n")
    print(wrkparse.table(recs))
    print("\n</details>")
    Path(out_path).write_text(json.dumps({"meta": meta, "results": recs, "targets": targets}, indent=2))


def main() -> None:
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "publish" and len(sys.argv) == 10:
        try:
            import uvloop
        except ImportError:
            asyncio.run(publish(*sys.argv[2:10]))
        else:
            uvloop.run(publish(*sys.argv[2:10]))
    elif cmd == "attach" and len(sys.argv) == 7:
        attach(*sys.argv[2:7])
    elif cmd == "report" and len(sys.argv) == 5:
        report(*sys.argv[2:5])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
