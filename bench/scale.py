"""Issue 13 ("Scale to a million entries"): seeding through POST /v1/bulk and cache-miss latency.

  python bench/scale.py seed MGMT_URL MGMT_KEY FROM TO OUT.json   articles FROM..TO-1 (types + authors when FROM=0)
  python bench/scale.py key MGMT_URL MGMT_KEY KEY_FILE             a delivery key (rate limit lifted)
  python bench/scale.py measure DELIVERY_URL MGMT_URL DKEY MKEY N OUT.json   every row, REQS sequential requests
  python bench/scale.py sizes DATA_DIR N OUT.json                  PostgreSQL / object-store bytes per entry
  python bench/scale.py explain DATA_DIR on|off                    auto_explain (ANALYZE, BUFFERS) for new sessions
  python bench/scale.py plans PLANS.log [TOP]                      the slowest logged plans, slowest first
  python bench/scale.py prep DATA_DIR OUT.json                     VACUUM ANALYZE of published_documents,
                                                                   published_values and entries

Dataset (deterministic per index i): type `article` with title (text, 5 words + number), slug
`article-<i:07d>`, body (long_text, 2 KB of words), author (reference to one of 50 authors),
category (text, indexed, one of 20 values: CATEGORIES[i % 20]) and rank (integer, indexed, = i).
Every body holds the common word `magna` (almost surely); every 1,000th article (i % 1000 == 123)
also the rare word `zeppelin`. All articles are published. Seeding: atomic bulk requests of
BATCH (default 1000) actions: BATCH/2 upserts (with ids `a<i:07d>`) then their BATCH/2 publishes,
CONCURRENCY (default 2) requests in flight.

measure: with the delivery cache off (the caller starts the CMS with CMS_DELIVERY_CACHE_MB=0),
for each row: WARM (default 10) warm-up requests, then REQS (default 200) sequential requests over
one kept-alive connection (http.client); p50/p95/mean/max in ms, plus meta.total and
meta.total_relation of the first answer. A non-200 marks the row failed.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import re
import statistics
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from seed import ARTICLE_TYPE as SEED_ARTICLE  # bench/ is the script's directory
from seed import AUTHOR_TYPE, WORDS


def _write_json(path: str, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2))


def _du(*args: str) -> int:
    """Bytes `du` reports (blocking: run in a thread)."""
    import subprocess

    return int(subprocess.run(["du", *args], capture_output=True, text=True, check=True).stdout.split()[0])

BATCH = int(os.environ.get("BATCH", "1000"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "2"))
REQS = int(os.environ.get("REQS", "200"))
WARM = int(os.environ.get("WARM", "10"))
N_AUTHORS = 50
BODY_BYTES = 2048
COMMON_WORD = "magna"
RARE_WORD = "zeppelin"
TITLE_WORD = "magna"          # filter[title][contains]
CATEGORIES = ("news sports technology science health business politics culture travel food "
              "fashion music movies books gaming education environment finance history opinion").split()
CATEGORY_EQ = "science"       # 5%
CATEGORY_CONTAINS = "ech"     # 'technology' only: 5%

# The delivery bench's article with the two indexed fields.
ARTICLE_TYPE = {**SEED_ARTICLE, "fields": [
    *SEED_ARTICLE["fields"],
    {"id": "category", "type": "text", "indexed": True},
    {"id": "rank", "type": "integer", "indexed": True, "validations": {"min": 0}},
]}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] scale.py: {msg}", file=sys.stderr, flush=True)


def article(i: int) -> dict[str, Any]:
    rnd = random.Random(i * 7919 + 13)
    words: list[str] = []
    size = 0
    while size < BODY_BYTES:
        w = rnd.choice(WORDS)
        words.append(w)
        size += len(w) + 1
    if i % 1000 == 123:
        words[len(words) // 2] = RARE_WORD
    body = " ".join(words)[:BODY_BYTES]
    title = " ".join(rnd.choice(WORDS) for _ in range(5)).capitalize()
    return {"title": f"{title} {i:07d}", "slug": f"article-{i:07d}", "body": body,
            "author": {"id": f"au{i % N_AUTHORS:02d}", "type": "author"},
            "category": CATEGORIES[i % len(CATEGORIES)], "rank": i}


# --- seeding ------------------------------------------------------------------------------------

async def seed(base: str, key: str, start: int, stop: int, out: str) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base.rstrip("/"), headers=headers, timeout=600) as c:
        async def call(method: str, path: str, body: Any) -> Any:
            r = await c.request(method, path, json=body)
            if r.status_code not in (200, 201):
                raise SystemExit(f"seed: {method} {path} -> HTTP {r.status_code}: {r.text[:800]}")
            return r.json()

        if start == 0:
            await call("PUT", "/v1/content-types/author", AUTHOR_TYPE)
            await call("PUT", "/v1/content-types/article", ARTICLE_TYPE)
            acts = [{"op": "upsert", "type": "author", "id": f"au{a:02d}", "fields": {"name": f"Author {a:02d}"}}
                    for a in range(N_AUTHORS)]
            acts += [{"op": "publish", "type": "author", "id": f"au{a:02d}"} for a in range(N_AUTHORS)]
            await call("POST", "/v1/bulk", {"atomic": True, "actions": acts})
            log(f"content types and {N_AUTHORS} authors")

        half = BATCH // 2
        batches = [(s, min(s + half, stop)) for s in range(start, stop, half)]
        queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        for b in batches:
            queue.put_nowait(b)
        times: list[float] = []
        done = [0]
        t0 = time.monotonic()

        async def runner() -> None:
            while not queue.empty():
                a, b = queue.get_nowait()
                acts = [{"op": "upsert", "type": "article", "id": f"a{i:07d}", "fields": article(i)} for i in range(a, b)]
                acts += [{"op": "publish", "type": "article", "id": f"a{i:07d}"} for i in range(a, b)]
                t = time.monotonic()
                await call("POST", "/v1/bulk", {"atomic": True, "actions": acts})
                times.append(time.monotonic() - t)
                done[0] += b - a
                if done[0] % 20000 < half:
                    el = time.monotonic() - t0
                    log(f"{start + done[0]} articles ({done[0] / el:.0f} entries/s so far)")

        await asyncio.gather(*(runner() for _ in range(CONCURRENCY)))
        wall = time.monotonic() - t0
    res = {"from": start, "to": stop, "entries": stop - start, "wall_s": round(wall, 2),
           "entries_per_s": round((stop - start) / wall, 1), "batch_actions": BATCH, "concurrency": CONCURRENCY,
           "request_s_p50": round(statistics.median(times), 3), "request_s_max": round(max(times), 3)}
    log(json.dumps(res))
    await asyncio.to_thread(_write_json, out, res)


def make_key(base: str, key: str, key_file: str) -> None:
    import httpx

    r = httpx.post(base.rstrip("/") + "/v1/keys", headers={"Authorization": f"Bearer {key}"},
                   json={"name": "scale", "kind": "delivery", "rate_limit": "999999999/1"}, timeout=60)
    r.raise_for_status()
    Path(key_file).write_text(r.json()["data"]["secret"] + "\n")


# --- latency ------------------------------------------------------------------------------------

class Client:
    def __init__(self, base: str, key: str) -> None:
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)

    def get(self, path: str) -> tuple[int, bytes, float]:
        t = time.perf_counter()
        try:
            self.conn.request("GET", path, headers=self.headers)
            r = self.conn.getresponse()
            body = r.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            self.conn.request("GET", path, headers=self.headers)
            r = self.conn.getresponse()
            body = r.read()
        return r.status, body, (time.perf_counter() - t) * 1000


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def rows(n: int) -> list[tuple[str, str, str, str]]:
    """(name, label, app, path): app 'd' delivery, 'm' management."""
    L = "/api/v1/entries/article"
    q = urllib.parse.quote
    return [
        ("slug", "by slug", "d", f"{L}/by-slug/article-{n // 2:07d}"),
        ("list_author", "list 20, `-published_at`, `include=author`", "d", f"{L}?limit=20&sort=-published_at&include=author"),
        ("rank_gte", f"list `filter[rank][gte]={n // 2}`, `sort=rank` (indexed)", "d",
         f"{L}?limit=20&{q('filter[rank][gte]')}={n // 2}&sort=rank"),
        ("category_eq", f"list `filter[category][eq]={CATEGORY_EQ}` (5%, indexed)", "d",
         f"{L}?limit=20&{q('filter[category][eq]')}={CATEGORY_EQ}"),
        ("title_contains", f"list `filter[title][contains]={TITLE_WORD}` (not indexed)", "d",
         f"{L}?limit=20&{q('filter[title][contains]')}={TITLE_WORD}"),
        ("category_contains", f"list `filter[category][contains]={CATEGORY_CONTAINS}` (5%, indexed: trigram)", "d",
         f"{L}?limit=20&{q('filter[category][contains]')}={CATEGORY_CONTAINS}"),
        ("q_common", f"`q={COMMON_WORD}` (in ~every document)", "d", f"{L}?limit=20&q={COMMON_WORD}"),
        ("q_rare", f"`q={RARE_WORD}` (1 in 1,000 documents)", "d", f"{L}?limit=20&q={RARE_WORD}"),
        ("page26", "page 26 by cursor (`-published_at`, `include=author`)", "d", "PAGE26"),
        ("mgmt_list", "management list of drafts (`GET /v1/entries/article`)", "m", "/v1/entries/article?limit=20"),
    ]


def measure(dbase: str, mbase: str, dkey: str, mkey: str, n: int, out: str) -> None:
    d, m = Client(dbase, dkey), Client(mbase, mkey)
    results = []
    for name, label, app, path in rows(n):
        c = d if app == "d" else m
        if path == "PAGE26":
            path = "/api/v1/entries/article?limit=20&sort=-published_at&include=author"
            for _ in range(25):
                st, body, _ = c.get(path)
                cur = json.loads(body)["meta"]["next_cursor"]
                path = f"/api/v1/entries/article?limit=20&sort=-published_at&include=author&cursor={urllib.parse.quote(cur)}"
        st, body, first_ms = c.get(path)
        row: dict[str, Any] = {"name": name, "label": label, "path": path[:300], "status": st,
                               "first_ms": round(first_ms, 2), "bytes": len(body)}
        if st != 200:
            row["error"] = body[:300].decode(errors="replace")
            results.append(row)
            log(f"{name}: HTTP {st} {row['error']}")
            continue
        doc = json.loads(body)
        meta = doc.get("meta") or {}
        row["total"] = meta.get("total")
        row["total_relation"] = meta.get("total_relation")
        row["items"] = len(doc["data"]) if isinstance(doc.get("data"), list) else 1
        for _ in range(WARM):
            c.get(path)
        lat: list[float] = []
        bad = 0
        for _ in range(REQS):
            st, _, ms = c.get(path)
            bad += st != 200
            lat.append(ms)
        row.update(p50=round(pct(lat, 50), 2), p95=round(pct(lat, 95), 2), mean=round(statistics.fmean(lat), 2),
                   max=round(max(lat), 2), n=REQS, non200=bad)
        log(f"{name}: p50 {row['p50']} ms p95 {row['p95']} ms total {row['total']} {row['total_relation']}")
        results.append(row)
    Path(out).write_text(json.dumps({"n": n, "reqs": REQS, "rows": results}, indent=2))


# --- PostgreSQL ---------------------------------------------------------------------------------

async def pg(data_dir: str) -> Any:
    import asyncpg

    lines = (Path(data_dir) / "postgres" / "postmaster.pid").read_text().splitlines()
    return await asyncpg.connect(host=lines[4], port=int(lines[3]), user="postgres", database="cms")


async def sizes(data_dir: str, n: int, out: str) -> None:
    conn = await pg(data_dir)
    try:
        await conn.execute("CHECKPOINT")
        tables = await conn.fetch(
            """SELECT c.relname, pg_total_relation_size(c.oid) AS total, pg_relation_size(c.oid) AS heap,
                      pg_indexes_size(c.oid) AS indexes,
                      COALESCE(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0) AS toast, c.reltuples
                 FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'm') AND ns.nspname NOT IN ('pg_catalog', 'information_schema')
                ORDER BY 2 DESC""")
        db = await conn.fetchval("SELECT pg_database_size('cms')")
        idx = await conn.fetch(
            """SELECT i.relname AS index, t.relname AS table, pg_relation_size(i.oid) AS bytes
                 FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
                 JOIN pg_namespace ns ON ns.oid = t.relnamespace WHERE ns.nspname = 'public'
                ORDER BY 3 DESC LIMIT 25""")
    finally:
        await conn.close()
    obj = Path(data_dir) / "objects"
    files = 0
    apparent = 0
    for p in obj.rglob("*"):
        if p.is_file():
            files += 1
            apparent += p.stat().st_size
    du = await asyncio.to_thread(_du, "-sb", "--apparent-size", str(obj))
    du_disk = await asyncio.to_thread(_du, "-sB1", str(obj))
    pg_total = sum(r["total"] for r in tables)
    res = {
        "n": n, "pg_database_bytes": db, "pg_tables_bytes": pg_total,
        "pg_bytes_per_entry": round(pg_total / n, 1), "pg_database_bytes_per_entry": round(db / n, 1),
        "tables": [{"table": r["relname"], "total": r["total"], "heap": r["heap"], "indexes": r["indexes"],
                    "toast": r["toast"], "rows_est": int(r["reltuples"]), "per_entry": round(r["total"] / n, 1)}
                   for r in tables if r["total"] > 65536],
        "indexes": [dict(r) for r in idx],
        "objects": {"files": files, "apparent_bytes": apparent, "du_disk_bytes": du_disk, "du_apparent": du,
                    "apparent_per_entry": round(apparent / n, 1), "disk_per_entry": round(du_disk / n, 1)},
    }
    await asyncio.to_thread(_write_json, out, res)
    log(f"PostgreSQL {res['pg_bytes_per_entry']} B/entry (tables), objects {res['objects']['disk_per_entry']} B/entry on disk")


async def explain(data_dir: str, on: str) -> None:
    conn = await pg(data_dir)
    try:
        if on == "on":
            for stmt in ("ALTER SYSTEM SET session_preload_libraries = 'auto_explain'",
                         "ALTER SYSTEM SET auto_explain.log_min_duration = 0",
                         "ALTER SYSTEM SET auto_explain.log_analyze = on",
                         "ALTER SYSTEM SET auto_explain.log_buffers = on",
                         "ALTER SYSTEM SET auto_explain.log_nested_statements = on",
                         "ALTER SYSTEM SET auto_explain.log_verbose = off"):
                await conn.execute(stmt)
        else:
            for s in ("session_preload_libraries", "auto_explain.log_min_duration", "auto_explain.log_analyze",
                      "auto_explain.log_buffers", "auto_explain.log_nested_statements", "auto_explain.log_verbose"):
                await conn.execute(f"ALTER SYSTEM RESET {s}")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


PREP_TABLES = ("published_documents", "published_values", "entries")


async def prep(data_dir: str, out: str) -> None:
    """VACUUM ANALYZE of the tables delivery lists read: published_documents, published_values (a
    filtered total is counted by an index-only scan of it, which skips the heap only for pages the
    visibility map marks all-visible) and entries. Seeding through POST /v1/bulk never vacuums;
    autovacuum may or may not have come by. A table this data dir lacks (published_values before
    migration 0014) is skipped. (Until 2026-12-07 it also created the newest-first indexes of
    b7b5ce1 on older data; the CMS creates those itself since, so that step is gone.)"""
    conn = await pg(data_dir)
    steps = []
    try:
        for table in PREP_TABLES:
            if await conn.fetchval("SELECT to_regclass($1)", table) is None:
                log(f"no table {table}: skipped")
                continue
            stmt = f"VACUUM ANALYZE {table}"
            t = time.monotonic()
            await conn.execute(stmt)
            s = round(time.monotonic() - t, 1)
            r = await conn.fetchrow("SELECT relpages, relallvisible, reltuples FROM pg_class WHERE oid = $1::regclass",
                                    table)
            steps.append({"sql": stmt, "s": s, "relpages": r["relpages"], "relallvisible": r["relallvisible"],
                          "reltuples": int(r["reltuples"])})
            log(f"{s} s: {stmt} (all-visible {r['relallvisible']} of {r['relpages']} pages)")
        idx = await conn.fetch("SELECT indrelid::regclass::text AS table, indexrelid::regclass::text AS index, "
                               "pg_relation_size(indexrelid) AS bytes FROM pg_index "
                               "WHERE indrelid::regclass::text = ANY($1::text[]) ORDER BY 1, 2", list(PREP_TABLES))
    finally:
        await conn.close()
    await asyncio.to_thread(_write_json, out, {"steps": steps, "indexes": [dict(r) for r in idx]})


def plans(path: str, top: int) -> None:
    """Splits auto_explain's log into one block per statement; prints the TOP slowest (duration, query, plan)."""
    head = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ UTC \[(\d+)\] (\w+):\s+(.*)$")
    blocks: list[tuple[float, list[str]]] = []
    cur: list[str] | None = None
    for line in Path(path).read_text(errors="replace").splitlines():
        m = head.match(line)
        if m:
            cur = None
            d = re.match(r"duration: ([\d.]+) ms\s+plan:", m.group(3))
            if d:
                cur = []
                blocks.append((float(d.group(1)), cur))
        elif cur is not None:
            cur.append(line)
    blocks.sort(key=lambda b: -b[0])
    for ms, lines in blocks[:top]:
        print(f"=== {ms:.2f} ms")
        print("\n".join(lines))
        print()


def change(mbase: str, key: str, n: int, out: str) -> None:
    """Issue 13's content-type change: add one optional field to the article type (n entries), time
    the PUT, then poll GET /v1/content-types/article until its background work (entries, documents,
    files, dependents, indexes) is done; entries/s = entries of the type / background seconds."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=mbase, headers=headers, timeout=600) as c:
        current = c.get("/v1/content-types/article").json()["data"]
        # A new field each run (named by the time): removing one again would make the next run wait
        # (409) until that removal's background work is done.
        added = "note_" + time.strftime("%Y%m%d%H%M%S", time.gmtime())
        fields = [*current["fields"], {"id": added, "type": "text"}]
        body = {"name": current["name"], "display_field": current.get("display_field"), "fields": fields}
        t0 = time.perf_counter()
        r = c.put("/v1/content-types/article", json=body)
        request_s = time.perf_counter() - t0
        r.raise_for_status()
        rendering = r.json()["data"].get("rendering") or {}
        # Kept at once: a run stopped before the background work ends still has the request's time.
        _write_json(out, {"n": n, "request_s": round(request_s, 3), "background_s": None})
        samples = []
        while True:
            time.sleep(1.0)
            rendering = c.get("/v1/content-types/article").json()["data"]["rendering"]
            samples.append({"t": round(time.perf_counter() - t0, 1), "phase": rendering["phase"],
                            "done": rendering["entries_done"], "dependents": rendering["dependents_done"]})
            if len(samples) % 30 == 0:  # progress, every 30 s
                _write_json(out, {"n": n, "request_s": round(request_s, 3), "background_s": None,
                                  "samples": samples[-20:]})
            if rendering["status"] == "done":
                break
        background_s = time.perf_counter() - t0
    res = {"n": n, "request_s": round(request_s, 3), "background_s": round(background_s, 1),
           "entries": rendering["entries_done"], "entries_per_s": round(rendering["entries_done"] / background_s, 1),
           "added": added, "samples": samples[-20:]}
    log(json.dumps({k: v for k, v in res.items() if k != "samples"}))
    _write_json(out, res)


def main() -> None:
    a = sys.argv[1:]
    if not a:
        raise SystemExit(__doc__)
    if a[0] == "seed":
        asyncio.run(seed(a[1], a[2], int(a[3]), int(a[4]), a[5]))
    elif a[0] == "key":
        make_key(a[1], a[2], a[3])
    elif a[0] == "measure":
        measure(a[1], a[2], Path(a[3]).read_text().strip(), a[4], int(a[5]), a[6])
    elif a[0] == "sizes":
        asyncio.run(sizes(a[1], int(a[2]), a[3]))
    elif a[0] == "explain":
        asyncio.run(explain(a[1], a[2]))
    elif a[0] == "prep":
        asyncio.run(prep(a[1], a[2]))
    elif a[0] == "change":
        change(a[1], a[2], int(a[3]), a[4])
    elif a[0] == "plans":
        plans(a[1], int(a[2]) if len(a) > 2 else 20)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
