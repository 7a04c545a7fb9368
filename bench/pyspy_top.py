"""Summarise a `py-spy record -f raw` file (collapsed stacks): top functions by self time.

  python pyspy_top.py PROFILE.txt [N]

Frames are grouped by function and file (line numbers dropped). "self" is the share of samples
whose innermost Python frame is that function: for a frame that calls into native code (granian's
Rust runtime, asyncpg, msgspec), that native time is counted as the caller's self time.
Also prints self time grouped by package (the file's top directory). py-spy names the CMS's own
`graphql/` modules by their bare file name (`executor.py`, `routes.py`): a bare name of a file in
the checkout's `graphql/` that is no standard-library module counts as "graphql (cms)"; the
graphql-core library (`graphql/…/x.py`) as "graphql-core".

Left out of the percentages, and counted separately: samples with no Python frame at all (a
granian thread in native code, or idle) and samples of threads blocked in a known wait
(the logging QueueListener thread sitting in Condition.wait shows up although it uses no CPU).
"""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

IDLE = {("Condition.wait", "threading.py"), ("Event.wait", "threading.py"), ("Queue.get", "queue.py")}
CMS_GRAPHQL = {p.name for p in (Path(__file__).resolve().parent.parent / "graphql").glob("*.py")}
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def key(frame: str) -> tuple[str, str]:
    m = FRAME.match(frame)
    return (m.group("func"), m.group("file")) if m else (frame, "?")


def area(file: str) -> str:
    if file.startswith("cms/"):  # the CMS run from an exported commit (lib.sh's BENCH_COMMIT)
        top = file.split("/", 2)[1]
        return {"app": "app (cms)", "graphql": "graphql (cms)"}.get(top, top)
    if file.startswith("<frozen") or "/" not in file:
        if file in CMS_GRAPHQL and file.removesuffix(".py") not in sys.stdlib_module_names:
            return "graphql (cms)"
        return "stdlib" if file.startswith("<frozen") or file.endswith(".py") else file
    top = file.split("/", 1)[0]
    return {"app": "app (cms)", "graphql": "graphql-core"}.get(top, top)


def main() -> None:
    path = sys.argv[1]
    n_top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    own: collections.Counter[tuple[str, str]] = collections.Counter()
    total: collections.Counter[tuple[str, str]] = collections.Counter()
    by_area: collections.Counter[str] = collections.Counter()
    n = no_python = idle = 0
    for line in open(path):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        if not stack.strip():
            no_python += c
            continue
        frames = [key(f) for f in stack.split(";")]
        if frames[-1] in IDLE:
            idle += c
            continue
        n += c
        own[frames[-1]] += c
        by_area[area(frames[-1][1])] += c
        for f in set(frames):
            total[f] += c
    if not n:
        raise SystemExit("no samples")
    print(f"py-spy: {n} samples with Python frames (left out: {no_python} without any, {idle} idle waits).")
    print(f"Top {n_top} functions by self time (self %, inclusive %):")
    for (func, file), c in own.most_common(n_top):
        print(f"{100 * c / n:6.1f}%  {100 * total[(func, file)] / n:6.1f}%  {func}  ({file})")
    print("\nSelf time by package of the innermost frame:")
    for name, c in by_area.most_common(15):
        print(f"{100 * c / n:6.1f}%  {name}")


if __name__ == "__main__":
    main()
