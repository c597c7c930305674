"""Leak checks for the compiled code: memory still traced after many calls, reference counts that move.

tracemalloc sees every allocation the extension makes through Python's
allocators (the values' bytes, the tuples, the lists), so memory still traced
after many calls whose results are dropped is a leak; ``sys.getrefcount`` of
shared objects catches a reference taken and never given back, or given back twice.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable


def leaked(call: Callable[[], object], times: int = 20_000) -> int:
    """Bytes still allocated after ``times`` calls whose results are dropped, after a warm-up."""
    for _ in range(200):
        call()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(times):
            call()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def assert_refcounts_kept(calls: Callable[[], None], watched: tuple[object, ...]) -> None:
    """``calls()`` twice: the second leaves every watched object's reference count as it found it."""
    calls()  # warm-up: caches and interned objects settle
    gc.collect()
    before = [sys.getrefcount(o) for o in watched]
    calls()
    gc.collect()
    assert [sys.getrefcount(o) for o in watched] == before
