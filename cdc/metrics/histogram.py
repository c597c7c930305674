"""A Prometheus histogram that takes a whole batch of observations at once, exactly.

prometheus_client's ``Histogram.observe`` takes one value per call, and has no
weight: observing each row of a 50,000-row batch would cost a Python call per
row. Here a batch's rows are counted into their buckets together, with C-level
work only (a sort of the batch's commit times, one bisection per bucket, a
sum), and every row still lands in its own bucket: the counts are exact.

Filled on one thread (the flusher's), read at scrape time on another (the HTTP
server's): the lock makes a scrape see a batch entirely or not at all.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Sequence
from typing import Final

# Seconds. Sub-second steps where a healthy pipeline lives (the flush interval
# is 1 s by default), then minutes, for a backlog or an outage.
LATENCY_BOUNDS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                         1800.0, 3600.0)
FLUSH_BOUNDS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ROW_BOUNDS: Final = (1.0, 10.0, 100.0, 1000.0, 5000.0, 10000.0, 25000.0, 50000.0, 100000.0, 250000.0)

# A sum of up to this many Unix-epoch microsecond timestamps (< 2^52 until the
# year 2112) stays below 2^63, where sum() keeps to its fast C path.
_SUM_CHUNK: Final = 2048


def exact_sum(values: Sequence[int]) -> int:
    """sum(values), a chunk at a time: a running total past 2^63 makes sum() ~4x slower."""
    if len(values) <= _SUM_CHUNK:
        return sum(values)
    return sum([sum(values[i : i + _SUM_CHUNK]) for i in range(0, len(values), _SUM_CHUNK)])


class Histogram:
    """Cumulative buckets (``le`` bounds, then +Inf), a count and a sum, as Prometheus has them."""

    __slots__ = ("_bounds_us", "_counts", "_lock", "_sum", "bounds")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not all(math.isfinite(b) for b in bounds):
            raise ValueError(f"histogram bounds must be finite and strictly increasing, got {bounds}")
        self.bounds: Final = tuple(float(b) for b in bounds)
        self._bounds_us: Final = tuple(round(b * 1_000_000) for b in self.bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float, weight: int = 1) -> None:
        """``weight`` observations of ``value``."""
        index = bisect_left(self.bounds, value)
        with self._lock:
            self._counts[index] += weight
            self._sum += value * weight

    def observe_ages(self, times_us: Sequence[int], now_us: int) -> None:
        """One observation per element: ``now_us - t`` in seconds, for integer microsecond times ``t``.

        A row of age a is in bucket ``le=b`` exactly when t >= now - b; with the
        times sorted, each bucket's count is one bisection. Commit times come
        in commit order, nearly sorted in long runs, which Python's sort walks
        in linear time.
        """
        n = len(times_us)
        if n == 0:
            return
        ordered = sorted(times_us)
        # cumulative[j]: how many are at most bounds[j] old; then all n.
        cumulative = [n - bisect_left(ordered, now_us - b) for b in self._bounds_us]
        total_us = n * now_us - exact_sum(times_us)
        with self._lock:
            previous = 0
            for j, c in enumerate(cumulative):
                self._counts[j] += c - previous
                previous = c
            self._counts[-1] += n - previous
            self._sum += total_us / 1_000_000

    def snapshot(self) -> tuple[list[int], float]:
        """(cumulative counts, one per bound and a last one for +Inf, which is the count; sum)."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        running = 0
        cumulative = []
        for c in counts:
            running += c
            cumulative.append(running)
        return cumulative, total
