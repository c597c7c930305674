"""Measure the deduplication window: bytes per remembered id and admits per second.

Each size runs in a fresh interpreter so the RSS delta is the window's and not
the leftovers of a previous size.  Memory is reported two ways:

* ``nbytes/id``: the window's own arrays, ``DedupWindow.nbytes() / capacity``;
* ``rss/id``: VmRSS growth of the process from before the window exists until
  it holds ``capacity`` ids, divided by ``capacity``.  This includes anything
  the allocator kept from the batches of test ids, so it is the all-in figure.

Throughput is timed around the window calls only (generating ids is not
counted), with UUID-shaped text ids:

* ``fill``: admit_many into a window that is not yet full;
* ``new single`` / ``new batch``: fresh ids into a full window, so every admit
  also evicts the oldest id (the steady state of a long-running consumer);
* ``dup batch``: ids the window holds, all reported as duplicates.

Usage: python bench/dedup_memory.py [--sizes 1000000,10000000] [--batch 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

try:
    from cdc.core.dedup import DedupWindow
except ImportError:  # measuring a commit from before cdc/core/ (python -m bench.run --cdc-ref)
    from cdc.dedup import DedupWindow  # type: ignore[no-redef,import-not-found]

CHUNK = 100_000  # ids generated at a time, so test data never dominates RSS
SAMPLE = 200_000  # ids per steady-state throughput measurement


def rss_bytes() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # Peak, not current, but the best portable fallback; KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def uuid_chunks(rng: random.Random, total: int) -> Iterator[list[str]]:
    done = 0
    while done < total:
        n = min(CHUNK, total - done)
        chunk = []
        for _ in range(n):
            h = f"{rng.getrandbits(128):032x}"
            chunk.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}")
        yield chunk
        done += n


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(capacity: int, batch: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    rss_before = rss_bytes()
    window = DedupWindow(capacity=capacity, max_age=3600.0)
    rss_allocated = rss_bytes()

    fill_s = 0.0
    for chunk in uuid_chunks(rng, capacity):

        def fill(chunk: list[str] = chunk) -> None:
            for k in range(0, len(chunk), batch):
                if not all(window.admit_many(chunk[k : k + batch], 0.0)):
                    raise AssertionError("a distinct id was reported as a duplicate")

        fill_s += timed(fill)
        del chunk, fill  # only the window may be left holding memory when RSS is read
    assert len(window) == capacity
    rss_full = rss_bytes()

    fresh = next(uuid_chunks(rng, SAMPLE))
    half = len(fresh) // 2
    single_s = timed(lambda: [window.admit(x, 1.0) for x in fresh[:half]])

    def new_batch() -> None:
        for k in range(half, len(fresh), batch):
            window.admit_many(fresh[k : k + batch], 1.0)

    batch_s = timed(new_batch)
    recent = fresh[-capacity:]  # the newest ids, all still inside the window
    dups: list[bool] = []

    def dup_batch() -> None:
        for k in range(0, len(recent), batch):
            dups.extend(window.admit_many(recent[k : k + batch], 2.0))

    dup_s = timed(dup_batch)
    if any(dups):
        raise AssertionError("a remembered id was admitted again")

    return {
        "capacity": capacity,
        "nbytes": window.nbytes(),
        "nbytes_per_id": window.nbytes() / capacity,
        "rss_alloc_per_id": (rss_allocated - rss_before) / capacity,
        "rss_per_id": (rss_full - rss_before) / capacity,
        "fill_per_s": capacity / fill_s,
        "new_single_per_s": half / single_s,
        "new_batch_per_s": (len(fresh) - half) / batch_s,
        "dup_batch_per_s": len(recent) / dup_s,
        "batch": batch,
    }


def run_child(capacity: int, batch: int, seed: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(capacity), "--batch", str(batch), "--seed", str(seed)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("ids", "nbytes/id", "rss/id", "fill/s", "new 1-by-1/s", "new batch/s", "dup batch/s")
    print(f"{head[0]:>11} {head[1]:>10} {head[2]:>8} {head[3]:>10} {head[4]:>13} {head[5]:>12} {head[6]:>12}")
    for r in rows:
        print(
            f"{r['capacity']:>11,} {r['nbytes_per_id']:>10.1f} {r['rss_per_id']:>8.1f} "
            f"{r['fill_per_s']:>10,.0f} {r['new_single_per_s']:>13,.0f} "
            f"{r['new_batch_per_s']:>12,.0f} {r['dup_batch_per_s']:>12,.0f}"
        )
    print(f"batch size {rows[0]['batch'] if rows else '-'}; python {platform.python_version()} on {platform.machine()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated capacities")
    parser.add_argument("--batch", type=int, default=1000, help="ids per admit_many call")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:
        print(json.dumps(measure(args.child, args.batch, args.seed)))
        return 0
    rows = [run_child(int(s), args.batch, args.seed) for s in args.sizes.split(",")]
    if args.json:
        meta = {"python": platform.python_version(), "machine": platform.machine()}
        print(json.dumps({"meta": meta, "results": rows}, indent=2))
    else:
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
