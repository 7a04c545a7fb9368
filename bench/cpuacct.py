"""How much CPU did processes other than ours use? (The machine is shared; wrk and the servers
share its 2 cores, so a busy neighbour skews a row.)

  python cpuacct.py snap OUT.json "ROOT_PID..." ["SERVER_PID..."] ["NAME=PID ..."]  # machine busy time + our trees
  python cpuacct.py diff BEFORE.json AFTER.json  # JSON: cores used by others / us / the server / steal
  python cpuacct.py quiet SECONDS "ROOT_PID..."  # prints the cores others used over SECONDS
  python cpuacct.py busy SECONDS "ROOT_PID..."   # prints the cores these trees used over SECONDS

"Ours" = every live process in the trees under ROOT_PID (this script's shell, which also holds
the finished wrk runs in its children's times, and the embedded PostgreSQL postmaster and the Valkey daemon), each
counted with utime+stime plus the times of its waited-for children. Machine busy time is
/proc/stat user+nice+system+irq+softirq+steal over all CPUs. others = machine - ours.
"Server" = the trees under SERVER_PID (the system under test: the CMS with its PostgreSQL and
Valkey, or the ceiling app), so ours - server is mostly wrk. Requests per server CPU-second is
much less sensitive to a busy neighbour than req/s. The optional "NAME=PID ..." list names
components (e.g. delivery=<granian main pid>): `diff` then also gives each one's tree's cores.
"""

from __future__ import annotations

import json
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def machine() -> tuple[int, int]:
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
    return user + nice + system + irq + softirq + steal, steal


def processes() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime+cutime+cstime) for every process we can read."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2:].split()  # after "pid (comm) "
        ppid = int(fields[1])
        ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        out[int(name)] = (ppid, ticks)
    return out


def ours(roots: list[int]) -> int:
    procs = processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    stack = [r for r in roots if r in procs]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, ()))
    return sum(procs[p][1] for p in seen)


def pids(text: str) -> list[int]:
    return [int(p) for p in text.split() if p.isdigit()]


def snap(roots: list[int], server: list[int] | None = None, components: dict[str, int] | None = None) -> dict:
    busy, steal = machine()
    out = {"t": time.monotonic(), "busy": busy, "steal": steal, "ours": ours(roots),
           "server": ours(server) if server else None}
    if components:
        out["components"] = {name: ours([pid]) for name, pid in components.items()}
    return out


def named(text: str) -> dict[str, int]:
    """"name=pid ..." -> {name: pid} (items without a numeric pid are left out)."""
    out = {}
    for item in text.split():
        name, _, pid = item.partition("=")
        if pid.isdigit():
            out[name] = int(pid)
    return out


def diff(a: dict, b: dict) -> dict:
    secs = max(b["t"] - a["t"], 1e-6)
    busy = (b["busy"] - a["busy"]) / TICK / secs
    mine = (b["ours"] - a["ours"]) / TICK / secs
    out = {"seconds": round(secs, 2), "machine_cores": round(busy, 2), "ours_cores": round(mine, 2),
           "others_cores": round(max(busy - mine, 0.0), 2),
           "steal_cores": round((b["steal"] - a["steal"]) / TICK / secs, 2)}
    if a.get("server") is not None and b.get("server") is not None:
        out["server_cores"] = round((b["server"] - a["server"]) / TICK / secs, 3)
    if a.get("components") and b.get("components"):
        out["component_cores"] = {name: round((b["components"].get(name, ticks) - ticks) / TICK / secs, 3)
                                  for name, ticks in a["components"].items()}
    return out


def main() -> None:
    cmd = sys.argv[1]
    if cmd == "snap":
        with open(sys.argv[2], "w") as f:
            json.dump(snap(pids(sys.argv[3]), pids(sys.argv[4]) if len(sys.argv) > 4 else None,
                           named(sys.argv[5]) if len(sys.argv) > 5 else None), f)
    elif cmd == "diff":
        print(json.dumps(diff(json.load(open(sys.argv[2])), json.load(open(sys.argv[3])))))
    elif cmd == "quiet":
        roots = pids(sys.argv[3])
        a = snap(roots)
        time.sleep(float(sys.argv[2]))
        print(diff(a, snap(roots))["others_cores"])
    elif cmd == "busy":
        roots = pids(sys.argv[3])
        a = snap([], roots)
        time.sleep(float(sys.argv[2]))
        print(diff(a, snap([], roots))["server_cores"])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
