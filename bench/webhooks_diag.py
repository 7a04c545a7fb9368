"""Diagnosis for the webhook benchmark (bench/README.md, "Webhook benchmark": where the time goes).

  python bench/webhooks_diag.py httpx [N_POSTS]      # httpx alone, as the sender configures it
  python bench/webhooks_diag.py explain DATA_ROOT    # EXPLAIN ANALYZE the sender's queries under a backlog
  python bench/webhooks_diag.py sample DATA_ROOT     # dead tuples / HOT updates / backlog every 5 s

`httpx`: starts bench/webhooks.py's receivers (10 ports from DIAG_PORT, 18390) and POSTs N_POSTS
(4,000) bodies of 2,800 B through one `httpx.AsyncClient` with the limits of
app/webhooks/sending.py (max_connections 64, 15 s timeout, streamed answer), PER (1 2 4 6) in
flight per endpoint, like the sender's per-endpoint cap. No database, no signing: what the HTTP
client alone costs per POST, on a whole core.

`explain` and `sample` attach to the newest `DATA_ROOT/run-*` of a running bench/webhooks.sh (its
embedded PostgreSQL, over the Unix socket). `explain` waits until more than 3,000 deliveries are
pending, then EXPLAIN (ANALYZE, BUFFERS)s the claim (inside a transaction it rolls back), `next_due`
and `oldest_due_seconds`. Neither is part of the benchmark's figures.
"""

from __future__ import annotations

import asyncio
import glob
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


async def _pg(root: str) -> Any:
    import asyncpg

    while True:
        for pid in sorted(glob.glob(f"{root}/run-*/postgres/postmaster.pid"))[-1:]:
            try:
                lines = open(pid).read().splitlines()  # noqa: ASYNC230, SIM115 (a tiny file)
                return await asyncpg.connect(host=lines[4], port=int(lines[3]), user="postgres", database="cms")
            except (OSError, IndexError, ValueError, ConnectionError):
                pass
        await asyncio.sleep(0.5)


async def explain(root: str) -> None:
    sys.path.insert(0, str(HERE.parent))
    from cms.app.webhooks.repository import _CLAIM

    conn = await _pg(root)
    while True:
        n = await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status IN ('pending', 'sending')")
        if n > 3000:
            break
        await asyncio.sleep(0.2)
    steps = await conn.fetchval("SELECT count(*) FROM outbox_steps WHERE step = 'webhook' AND status IN ('pending', 'running')")
    print(f"backlog: {n} deliveries pending or sending, {steps} webhook steps open")
    for label, sql, args in (
        ("claim (24 free slots, lease 60 s, 4 per endpoint)", _CLAIM, (24, 60.0, 4)),
        ("next_due", "SELECT min(d.next_attempt_at) FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id "
                     "WHERE d.status = 'pending' AND w.active", ()),
        ("oldest_due_seconds", "SELECT extract(epoch FROM now() - min(d.next_attempt_at)) FROM webhook_deliveries d "
                               "JOIN webhooks w ON w.id = d.webhook_id WHERE d.status = 'pending' "
                               "AND d.next_attempt_at <= now() AND w.active", ()),
    ):
        tr = conn.transaction()
        await tr.start()
        try:
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
        finally:
            await tr.rollback()
        print(f"--- {label}\n" + "\n".join(r[0] for r in rows))
    await conn.close()


async def sample(root: str) -> None:
    conn = await _pg(root)
    while True:
        try:
            rows = await conn.fetch(
                "SELECT relname, n_live_tup, n_dead_tup, autovacuum_count, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                "WHERE relname IN ('webhook_deliveries', 'outbox_steps') ORDER BY 1")
            backlog = await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status IN ('pending', 'sending')")
        except Exception as exc:  # noqa: BLE001 (the CMS stopped)
            print(f"stopped: {exc}", flush=True)
            return
        print(time.strftime("%H:%M:%S"), f"backlog {backlog} |", " | ".join(
            f"{r['relname']} live {r['n_live_tup']} dead {r['n_dead_tup']} autovacuums {r['autovacuum_count']} "
            f"updates {r['n_tup_upd']} HOT {r['n_tup_hot_upd']}" for r in rows), flush=True)
        await asyncio.sleep(5)


async def _posts(base: int, total: int, per: int) -> str:
    import httpx

    n_ep = 10
    body = b"x" * 2800
    client = httpx.AsyncClient(follow_redirects=False, timeout=httpx.Timeout(15),
                               limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
    sem = {ep: asyncio.Semaphore(per) for ep in range(n_ep)}
    lat: list[float] = []

    async def one(i: int) -> None:
        ep = i % n_ep
        async with sem[ep]:
            t = time.perf_counter()
            async with asyncio.timeout(15), client.stream(
                "POST", f"http://127.0.0.1:{base + ep}/hook/{ep}", content=body,
                headers={"webhook-id": f"diag{i}", "content-type": "application/json"},
            ) as r:
                async for _ in r.aiter_raw():
                    pass
            lat.append(time.perf_counter() - t)

    await asyncio.gather(*(one(i) for i in range(200)))  # warm-up: connections
    lat.clear()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(total)))
    dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    await client.aclose()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    lat.sort()
    return (f"{per} per endpoint ({per * n_ep} in flight): {total} POSTs in {dt:.2f} s = {total / dt:,.0f}/s, "
            f"client {cpu / dt:.2f} cores, {cpu / total * 1e6:,.0f} µs CPU per POST, "
            f"p50 {lat[len(lat) // 2] * 1e3:.1f} ms, p99 {lat[int(len(lat) * 0.99)] * 1e3:.1f} ms")


def httpx_bench(total: int) -> None:
    base = int(os.environ.get("DIAG_PORT", "18390"))
    with tempfile.NamedTemporaryFile(suffix=".records") as rec:
        rx = subprocess.Popen([sys.executable, str(HERE / "webhooks.py"), "receive", rec.name, str(base), "10"])
        try:
            for _ in range(40):
                if b" ready " in Path(rec.name).read_bytes():
                    break
                time.sleep(0.25)
            import httpx

            print(f"httpx {httpx.__version__}, httpcore {__import__('httpcore').__version__}")
            for per in (int(x) for x in os.environ.get("PER", "1 2 4 6").split()):
                print(asyncio.run(_posts(base, total, per)), flush=True)
        finally:
            rx.terminate()
            rx.wait()


def main() -> None:
    if len(sys.argv) in (2, 3) and sys.argv[1] == "httpx":
        httpx_bench(int(sys.argv[2]) if len(sys.argv) == 3 else 4000)
    elif len(sys.argv) == 3 and sys.argv[1] == "explain":
        asyncio.run(explain(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "sample":
        asyncio.run(sample(sys.argv[2]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
