"""The compiled dedup window on a full table, this tree's build against another commit's, alternating.

    python -m bench.dedup_probe --ref c3359c8~1 [--rounds 3] [--batches 5,1000]

``bench.dedup_compare`` compares the pure-Python tables; this one compares the
accelerator (``insert_ids``). Each measurement is a fresh child process that
fills a window of a million uuid ids, then admits 400,000 new ones (each
evicts the oldest, as in a steady state) in batches of the given size, and
writes over 4 MB between every fourth batch, so the table's arrays are as cold
as they are between two reads of live traffic. It prints ns per admitted id
(wall time of the admit calls only), per round, alternating the two builds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from .env import ROOT, snapshot_cdc

WINDOW = 1_000_000
NEW_IDS = 400_000


def _child(batch: int) -> None:
    import cdc.accel
    from cdc.core.dedup import DedupWindow

    if cdc.accel.native is None:
        sys.exit(f"bench.dedup_probe: the accelerator is not in use ({cdc.accel.accelerator_status()})")
    window = DedupWindow(WINDOW, float("inf"))
    ids = [str(uuid.uuid4()).encode() for _ in range(WINDOW + NEW_IDS)]
    for start in range(0, WINDOW, 10_000):
        window.admit_many(ids[start:start + 10_000], 1.0)
    fresh = ids[WINDOW:]
    junk = bytearray(4 << 20)
    spent = 0.0
    for n, start in enumerate(range(0, len(fresh), batch)):
        if n % 4 == 0:
            junk[::64] = bytes(len(junk) // 64)
        began = time.perf_counter()
        admitted = window.admit_many(fresh[start:start + batch], 2.0)
        spent += time.perf_counter() - began
        assert all(admitted)
    print(f"{spent / len(fresh) * 1e9:.1f}")


def _measure(pythonpath: Path, batch: int, cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    env.pop("CDC_NO_ACCEL", None)
    out = subprocess.run([sys.executable, "-m", "bench.dedup_probe", "--child", str(batch)], env=env, cwd=cwd,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", help="the commit to compare with (its accelerator is built in a temporary directory)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", default="5,1000", help="comma-separated batch sizes")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    if not args.ref:
        parser.error("--ref is required")
    with tempfile.TemporaryDirectory(prefix="cdc-bench-dedup-") as tmp:
        sha, site = snapshot_cdc(args.ref, Path(tmp) / "snapshot")
        # The children import cdc from PYTHONPATH: run them where no cdc/ directory shadows it, with
        # bench importable from both sides.
        (site / "bench").symlink_to(ROOT / "bench")
        sides = {"this tree": ROOT, sha[:10]: site}
        for batch in (int(b) for b in args.batches.split(",")):
            for n in range(1, args.rounds + 1):
                line = "  ".join(f"{name} {_measure(path, batch, Path(tmp)):6.1f}" for name, path in sides.items())
                print(f"batch {batch:>5}  round {n}:  {line}  ns/id", flush=True)


if __name__ == "__main__":
    main()
