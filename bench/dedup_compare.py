"""The dedup window's table, this tree's against another commit's, side by side in one process.

    python -m bench.dedup_compare --ref main [--capacity 1000000] [--batch 1000] [--rounds 9]

Both tables are loaded into this interpreter (the other from ``git show``) and
wrapped in this tree's DedupWindow, then timed in alternating rounds on the
same ids, so that a busy machine slows both alike. Measured, in ns per id:

* ``evict``: admit_many of fresh ids into a full window (each admit evicts the oldest: the steady state);
* ``dup``: admit_many of ids the window holds (all duplicates);
* ``single``: admit of fresh ids one by one into a full window;
* ``expire``: expiry by age of a tenth of the window.

It prints the median of each (CPU time of this process, so that waiting for a busy machine does not count)
and the ratio this/other; the two must also give the same answers.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

from cdc.core import _dedup_table
from cdc.core.dedup import DedupWindow

ROOT = Path(__file__).resolve().parent.parent
_PATHS = ("cdc/core/_dedup_table.py", "cdc/_dedup_table.py")  # after and before cdc/core/


def load_table(ref: str) -> Any:
    """The FingerprintTable class of ``ref``'s _dedup_table.py, loaded as a module of its own."""
    for path in _PATHS:
        shown = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=ROOT, capture_output=True, text=True)
        if shown.returncode == 0:
            module = types.ModuleType(f"_dedup_table_{ref}")
            exec(compile(shown.stdout, f"{ref}:{path}", "exec"), module.__dict__)
            return module.FingerprintTable
    raise SystemExit(f"no _dedup_table.py at {ref}")


def window_class(table: Any) -> Any:
    """This tree's DedupWindow over ``table``."""

    def __init__(self: Any, capacity: int, max_age: float) -> None:
        table.__init__(self, capacity, 0.25, b"k" * 16)
        self._max_age = max_age

    names = ("admit", "admit_many", "expire", "__len__")
    body = {name: vars(DedupWindow)[name] for name in names}
    return type("DedupWindow", (table,), {"__slots__": ("_max_age",), "__init__": __init__, **body})


def ids(rng: random.Random, n: int) -> list[bytes]:
    return [f"{rng.getrandbits(128):032x}".encode() for _ in range(n)]


def admit(window: Any, given: list[bytes], now: float, got: list[bool], *, batch: int) -> float:
    """Seconds to admit ``given`` (one by one when ``batch`` is 0), the answers appended to ``got``."""
    started = time.process_time()
    if not batch:
        got.extend([window.admit(uid, now) for uid in given])
    else:
        for k in range(0, len(given), batch):
            got.extend(window.admit_many(given[k : k + batch], now))
    return time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dedup_compare", description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="main", help="the commit to compare with (default main)")
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000, help="ids per admit_many call")
    parser.add_argument("--sample", type=int, default=100_000, help="ids timed per round and measure")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    rng = random.Random(7)
    kinds = {"this": window_class(_dedup_table.FingerprintTable), args.ref: window_class(load_table(args.ref))}
    windows = {name: cls(args.capacity, 1e9) for name, cls in kinds.items()}
    fill = ids(rng, args.capacity)
    for window in windows.values():
        for k in range(0, len(fill), 10_000):
            window.admit_many(fill[k : k + 10_000], 0.0)
    results: dict[str, dict[str, list[float]]] = {name: {} for name in windows}
    clock = 1.0
    names = list(windows)
    for round_ in range(args.rounds):
        fresh, singles = ids(rng, args.sample), ids(rng, args.sample // 4)
        held = fresh[-min(args.sample, args.capacity):]
        clock += 1.0
        answers: dict[str, list[bool]] = {name: [] for name in names}
        # Each measure on both windows back to back, the order alternating by round.
        order = names if round_ % 2 == 0 else names[::-1]
        for measure in ("evict", "dup", "single"):
            for name in order:
                window, got = windows[name], answers[name]
                given = singles if measure == "single" else held if measure == "dup" else fresh
                seconds = admit(window, given, clock, got, batch=0 if measure == "single" else args.batch)
                results[name].setdefault(measure, []).append(seconds / len(given) * 1e9)
        if answers[names[0]] != answers[names[1]]:
            raise SystemExit("the two tables disagree")
    for name, window in windows.items():
        # Expiry: stamp a tenth of the window later than the rest, then drop everything older.
        window.admit_many(ids(random.Random(3), args.capacity // 10), clock + 100.0)
        n = len(window) - args.capacity // 10
        started = time.process_time()
        window.expire(clock + 100.0 + 1e9 - 50.0)
        results[name]["expire"] = [(time.process_time() - started) / n * 1e9]
    print(f"{'ns per id (median of ' + str(args.rounds) + ' rounds)':<40}{'this':>10}{args.ref:>10}{'this/' + args.ref:>12}")
    for measure in ("evict", "dup", "single", "expire"):
        this = statistics.median(results["this"][measure])
        other = statistics.median(results[args.ref][measure])
        print(f"{measure:<40}{this:>10.1f}{other:>10.1f}{this / other:>12.3f}")
    print(f"capacity {args.capacity:,}, batch {args.batch}, Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
