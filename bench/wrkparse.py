"""Parse `wrk --latency` output into JSON and print a markdown table with ratios to the ceiling.

The parser is copied from /work/shared/peers/wrkparse.py (same fields, same validity rule:
a row with non-2xx/3xx responses or no req/s is INVALID).

  python wrkparse.py one NAME LABEL RAW.txt [TARGET]   >> results.jsonl
  python wrkparse.py fail NAME LABEL REASON [TARGET]   >> results.jsonl   (a row that did not run)
  python wrkparse.py report results.jsonl meta.json OUT.json        # markdown table to stdout

TARGET is the wanted fraction of the ceiling (e.g. 0.5). The ceiling is the row named
`ceiling_bytes`; every other row's ratio is its req/s divided by the ceiling's.
"""

from __future__ import annotations

import json
import re
import sys

UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
CEILING = "ceiling_bytes"


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


def _target(argv: list[str]) -> float | None:
    return float(argv[0]) if argv and argv[0] else None


def table(recs: list[dict]) -> str:
    ceiling = next((r for r in recs if r["name"] == CEILING and r.get("valid")), None)
    top = ceiling["rps"] if ceiling else None
    lines = ["| scenario | req/s | p50 ms | p99 ms | × ceiling | target | errors | note |",
             "|---|--:|--:|--:|--:|--:|--:|---|"]
    for r in recs:
        err = (r.get("socket_errors") or 0) + (r.get("non_2xx_3xx") or 0)
        rps = f"{r['rps']:.0f}" if r.get("rps") is not None else "n/a"
        p50 = f"{r['p50_ms']:.2f}" if r.get("p50_ms") is not None else "n/a"
        p99 = f"{r['p99_ms']:.2f}" if r.get("p99_ms") is not None else "n/a"
        ratio = r.get("ratio")
        ratio_s = "1.00" if r["name"] == CEILING and r.get("valid") else (f"{ratio:.2f}" if ratio is not None else "n/a")
        target = r.get("target")
        target_s = f"≥ {target:g}" if target is not None else ""
        if r.get("error"):
            note = f"INVALID: {r['error']}"
        elif not r.get("valid"):
            note = f"INVALID: {r.get('non_2xx_3xx', 0)} non-2xx/3xx responses" if r.get("rps") else "INVALID: no result"
        elif target is not None and ratio is not None:
            note = "meets target" if ratio >= target else "below target"
        else:
            note = ""
        if r.get("timeouts"):
            note = (note + f"; {r['timeouts']} timeouts").lstrip("; ")
        lines.append(f"| {r['label']} | {rps} | {p50} | {p99} | {ratio_s} | {target_s} | {err} | {note} |")
    if top is None:
        lines.append("")
        lines.append("(no valid ceiling row: ratios are n/a)")
    return "\n".join(lines)


def main() -> None:
    cmd = sys.argv[1]
    if cmd == "one":
        name, label, raw = sys.argv[2:5]
        rec = {"name": name, "label": label, **parse(open(raw).read()), "raw": raw, "target": _target(sys.argv[5:])}
        print(json.dumps(rec))
    elif cmd == "fail":
        name, label, reason = sys.argv[2:5]
        print(json.dumps({"name": name, "label": label, "rps": None, "p50_ms": None, "p99_ms": None,
                          "socket_errors": 0, "non_2xx_3xx": 0, "valid": False, "error": reason,
                          "target": _target(sys.argv[5:])}))
    elif cmd == "report":
        recs = [json.loads(line) for line in open(sys.argv[2]) if line.strip()]
        meta = json.load(open(sys.argv[3]))
        ceiling = next((r for r in recs if r["name"] == CEILING and r.get("valid")), None)
        for r in recs:
            ok = ceiling is not None and r.get("valid") and r.get("rps") is not None
            r["ratio"] = round(r["rps"] / ceiling["rps"], 3) if ok and r["name"] != CEILING else (1.0 if ok else None)
        with open(sys.argv[4], "w") as out:
            json.dump({"meta": meta, "results": recs}, out, indent=2)
        print(table(recs))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
