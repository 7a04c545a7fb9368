"""How fast the local object store writes, then replaces, objects on this machine's filesystem: the
ceiling of a re-render's file work (a re-render replaces every file of a type).

    .venv/bin/python bench/fs_rewrite.py /tmp/fs-rewrite-<stamp> 20000

`put_copies` of N objects at an entry key and a slug key (hard-linked, as the publisher stores
them), then three more times over the same keys (one thread, two threads, one thread). Use a new
directory each time, and never delete a big one right before measuring (bench/README.md, "The
filesystem trap").
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import time

from cms.storage.objects.local import LocalObjectStore


def main(root: str, n: int) -> None:
    store = LocalObjectStore(root)
    body = os.urandom(3000)

    def put(i: int, version: int) -> None:
        store.put_copies(
            [f"entries/article/en/slugs/s-{i}.json", f"entries/article/en/e-{i}.json"], body,
            content_type="application/json", cache_control="max-age=60", surrogate_keys=["a", f"e{i}"], version=version,
        )

    def run(version: int, threads: int) -> None:
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda k: [put(i, version) for i in range(k, n, threads)], range(threads)))
        print(f"pass {version} ({'new' if version == 1 else 'replacing'}), {threads} thread(s): "
              f"{n / (time.perf_counter() - started):.0f} objects/s", flush=True)

    for version, threads in ((1, 1), (2, 1), (3, 2), (4, 1)):
        run(version, threads)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
