"""The cyclic garbage collector, tuned once for streaming.

A drain allocates container objects per row (the converter's tuples, the
transposition's iterators, the batch's lists) and frees nearly all of them a
moment later: reference counting reclaims them, and the cyclic collector
finds nothing. With CPython's default gen-0 threshold of 700 net allocations,
though, every read of ~1,000 rows passes it, and each collection walks the
young objects and the large lists that happen to be young with them: in a 1M
drain, 3,400 collections and about a quarter of cdc's CPU (bench/RESULTS.md,
issue 15). A threshold of 10,000 lets a read come and go between collections,
which then run a few times a drain; garbage in cycles (rare here: exceptions,
a few library objects) still goes within 10,000 allocations.

Start-up's objects (modules, classes, functions, settings, connections) will
not become garbage while the pipeline streams, so they are frozen out of the
collector's walks as well.
"""

from __future__ import annotations

import gc
from typing import Final

GEN0_THRESHOLD: Final = 10_000


def tune_for_streaming() -> None:
    """Once per process, when start-up is done and streaming begins (`cdc run`, before the first pipeline)."""
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(GEN0_THRESHOLD, gen0), gen1, gen2)
