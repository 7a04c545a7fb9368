"""Parse `wrk --latency` output into JSON and print a markdown table with ratios to the ceiling.

The parser is copied from ../shared/peers/wrkparse.py (same fields, same validity rule:
a row with non-2xx/3xx responses or no req/s is INVALID).

  python wrkparse.py one NAME LABEL RAW.txt [TARGET]   >> results.jsonl
  python wrkparse.py fail NAME LABEL REASON [TARGET]   >> results.jsonl   (a row that did not run)
  python wrkparse.py report results.jsonl meta.json OUT.json        # markdown table to stdout

TARGET is the wanted fraction of the ceiling (e.g. 0.5), or `rps:N` for an absolute target of N req/s
(e.g. `rps:2000`, stored as `target_rps`). "others' CPU" is the cores that
processes other than the benchmark's own used during the measured run (bench/cpuacct.py); from
NOISY_CORES (default 0.3) on, the row is flagged "noisy". "server CPU" is the cores the system
under test used (the CMS with its PostgreSQL and Valkey, or the ceiling app); "req per server
CPU-s" = req/s / server CPU, and its ratio to the ceiling's is much less sensitive to a busy
neighbour than the req/s ratio. The ceiling is the row named
`ceiling_bytes`; every other row's ratio is its req/s divided by the ceiling's.
"""

from __future__ import annotations

import json
import os
import re
import sys

UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
CEILING = "ceiling_bytes"
NOISY_CORES = float(os.environ.get("NOISY_CORES", "0.3"))  # others' CPU at which a row is flagged


def ms(tok: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", tok)
    if not m:
        raise ValueError(tok)
    return float(m.group(1)) * UNIT[m.group(2)]


def parse(text: str) -> dict:
    out: dict = {"rps": None, "p50_ms": None, "p75_ms": None, "p90_ms": None, "p99_ms": None,
                 "requests": None, "socket_errors": 0, "timeouts": 0, "non_2xx_3xx": 0}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        out["rps"] = float(m.group(1))
    for pct in ("50", "75", "90", "99"):
        if m := re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", text, re.M):
            out[f"p{pct}_ms"] = round(ms(m.group(1)), 3)
    if m := re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+\w+) read", text):
        out["requests"] = int(m.group(1))
        out["duration"] = m.group(2)
        out["read"] = m.group(3)
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        out["socket_errors"] = sum(int(x) for x in m.groups())
        out["timeouts"] = int(m.group(4))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        out["non_2xx_3xx"] = int(m.group(1))
    out["valid"] = bool(out["rps"]) and out["non_2xx_3xx"] == 0
    return out


def _target(argv: list[str]) -> dict:
    """{"target": fraction of the ceiling} or {"target": None, "target_rps": req/s} (`rps:N`)."""
    if not argv or not argv[0]:
        return {"target": None}
    if argv[0].startswith("rps:"):
        return {"target": None, "target_rps": float(argv[0][4:])}
    return {"target": float(argv[0])}


def table(recs: list[dict]) -> str:
    ceiling = next((r for r in recs if r["name"] == CEILING and r.get("valid")), None)
    top = ceiling["rps"] if ceiling else None
    lines = ["| scenario | req/s | p50 ms | p99 ms | × ceiling | target | errors | server CPU | "
             "req per server CPU-s | × ceiling per CPU-s | others' CPU | note |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in recs:
        err = (r.get("socket_errors") or 0) + (r.get("non_2xx_3xx") or 0)
        rps = f"{r['rps']:.0f}" if r.get("rps") is not None else "n/a"
        p50 = f"{r['p50_ms']:.2f}" if r.get("p50_ms") is not None else "n/a"
        p99 = f"{r['p99_ms']:.2f}" if r.get("p99_ms") is not None else "n/a"
        ratio = r.get("ratio")
        ratio_s = "1.00" if r["name"] == CEILING and r.get("valid") else (f"{ratio:.2f}" if ratio is not None else "n/a")
        target, target_rps = r.get("target"), r.get("target_rps")
        target_s = f"≥ {target:g}" if target is not None else (f"≥ {target_rps:g} req/s" if target_rps else "")
        if r.get("error"):
            note = f"INVALID: {r['error']}"
        elif not r.get("valid"):
            note = f"INVALID: {r.get('non_2xx_3xx', 0)} non-2xx/3xx responses" if r.get("rps") else "INVALID: no result"
        elif target is not None and ratio is not None:
            note = "meets target" if ratio >= target else "below target"
        elif target_rps and r.get("rps") is not None:
            note = "meets target" if r["rps"] >= target_rps else "below target"
        else:
            note = ""
        cpu = r.get("cpu") or {}
        if (cpu.get("others_cores") or 0) >= NOISY_CORES:
            note = (note + "; noisy (others busy)").lstrip("; ")
        if r.get("timeouts"):
            note = (note + f"; {r['timeouts']} timeouts").lstrip("; ")
        others = f"{cpu['others_cores']:.2f}" if cpu.get("others_cores") is not None else "n/a"
        server = f"{cpu['server_cores']:.2f}" if cpu.get("server_cores") is not None else "n/a"
        per_cpu = f"{r['rps_per_server_cpu']:.0f}" if r.get("rps_per_server_cpu") else "n/a"
        cpu_ratio = f"{r['cpu_ratio']:.2f}" if r.get("cpu_ratio") is not None else "n/a"
        lines.append(f"| {r['label']} | {rps} | {p50} | {p99} | {ratio_s} | {target_s} | {err} | {server} | "
                     f"{per_cpu} | {cpu_ratio} | {others} | {note} |")
    if top is None:
        lines.append("")
        lines.append("(no valid ceiling row: ratios are n/a)")
    return "\n".join(lines)


def enrich(recs: list[dict]) -> list[dict]:
    """Adds each row's ratio to the ceiling row, its req per server CPU-s and that ratio."""
    ceiling = next((r for r in recs if r["name"] == CEILING and r.get("valid")), None)
    for r in recs:
        server = (r.get("cpu") or {}).get("server_cores")
        if r.get("valid") and r.get("rps") and server:
            r["rps_per_server_cpu"] = round(r["rps"] / server, 1)
    for r in recs:
        ok = ceiling is not None and r.get("valid") and r.get("rps") is not None
        r["ratio"] = round(r["rps"] / ceiling["rps"], 3) if ok and r["name"] != CEILING else (1.0 if ok else None)
        top = ceiling.get("rps_per_server_cpu") if ceiling else None
        r["cpu_ratio"] = round(r["rps_per_server_cpu"] / top, 3) if top and r.get("rps_per_server_cpu") else None
    return recs


def main() -> None:
    cmd = sys.argv[1]
    if cmd == "one":
        name, label, raw = sys.argv[2:5]
        rec = {"name": name, "label": label, **parse(open(raw).read()), "raw": raw, **_target(sys.argv[5:])}
        print(json.dumps(rec))
    elif cmd == "fail":
        name, label, reason = sys.argv[2:5]
        print(json.dumps({"name": name, "label": label, "rps": None, "p50_ms": None, "p99_ms": None,
                          "socket_errors": 0, "non_2xx_3xx": 0, "valid": False, "error": reason,
                          **_target(sys.argv[5:])}))
    elif cmd == "report":
        recs = enrich([json.loads(line) for line in open(sys.argv[2]) if line.strip()])
        meta = json.load(open(sys.argv[3]))
        with open(sys.argv[4], "w") as out:
            json.dump({"meta": meta, "results": recs}, out, indent=2)
        print(table(recs))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
