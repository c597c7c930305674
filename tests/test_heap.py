"""tune_for_streaming: fewer collections, and garbage in cycles still collected."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_read_sized_burst_of_allocations_no_longer_triggers_a_collection() -> None:
    out = _run("""
        import gc
        from cdc.heap import tune_for_streaming

        def collections():
            return sum(s["collections"] for s in gc.get_stats())

        def burst():  # a read's rows: ~1,000 tuples alive at once, then freed
            rows = [(str(i), i, b"x") for i in range(1000)]
            return len(rows)

        before = collections(); burst(); default = collections() - before
        tune_for_streaming()
        before = collections()
        for _ in range(5):
            burst()
        print(default, collections() - before, gc.get_freeze_count() > 0)
    """)
    default, tuned, frozen = out.split()
    assert int(default) >= 1  # CPython's threshold of 700: one read, at least one collection
    assert int(tuned) == 0
    assert frozen == "True"


def test_garbage_in_cycles_is_still_collected_within_the_threshold() -> None:
    out = _run("""
        import gc, weakref
        from cdc.heap import GEN0_THRESHOLD, tune_for_streaming

        tune_for_streaming()

        class Node:
            pass

        node = Node(); node.me = node  # a cycle: reference counting alone never frees it
        alive = weakref.ref(node)
        del node
        kept = []
        while alive() is not None and len(kept) < 2 * GEN0_THRESHOLD:
            kept.append([len(kept)])  # objects that stay, as a growing batch's do
        print(alive() is None, len(kept) <= GEN0_THRESHOLD + 100)  # (the class and the node count too)
    """)
    assert out == "True True"
