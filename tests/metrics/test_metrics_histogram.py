"""The batch histogram counts every row in its own bucket, as one observe() per row would."""

from __future__ import annotations

from bisect import bisect_left

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.metrics.histogram import LATENCY_BOUNDS, Histogram, exact_sum

NOW_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def one_at_a_time(bounds: tuple[float, ...], ages_s: list[float]) -> list[int]:
    """Cumulative counts as Prometheus defines them: how many observations are <= each bound, then all."""
    counts = [0] * (len(bounds) + 1)
    for age in ages_s:
        counts[bisect_left(bounds, age)] += 1
    cumulative, running = [], 0
    for c in counts:
        running += c
        cumulative.append(running)
    return cumulative


# Commit times in runs (one per transaction), nearly in order, some a little late,
# some exactly on a bucket's bound.
_runs = st.lists(
    st.tuples(
        st.one_of(st.integers(-3_600_000_000, 5_000_000), st.sampled_from([-round(b * 1e6) for b in LATENCY_BOUNDS])),
        st.integers(1, 30),
    ),
    max_size=60,
)


@given(_runs)
def test_a_batch_of_commit_times_lands_exactly_where_one_observation_per_row_would(runs: list[tuple[int, int]]) -> None:
    times = [NOW_US + offset for offset, n in runs for _ in range(n)]
    h = Histogram(LATENCY_BOUNDS)
    h.observe_ages(times, NOW_US)
    cumulative, total = h.snapshot()
    ages_us = [NOW_US - t for t in times]
    assert cumulative == one_at_a_time(h.bounds, [a / 1e6 for a in ages_us])
    assert total == pytest.approx(sum(ages_us) / 1e6, abs=1e-6)


def test_batches_add_up_and_a_scrape_sees_cumulative_counts() -> None:
    h = Histogram((0.1, 1.0))
    h.observe_ages([NOW_US - 50_000] * 3, NOW_US)          # 0.05 s old
    h.observe_ages([NOW_US - 100_000, NOW_US - 2_000_000], NOW_US)  # exactly 0.1 s, and 2 s
    counts, total = h.snapshot()
    assert counts == [4, 4, 5] and total == pytest.approx(0.15 + 0.1 + 2.0)
    h.observe_ages([], NOW_US)
    assert h.snapshot()[0] == [4, 4, 5]


def test_a_weighted_observation_counts_as_that_many() -> None:
    h = Histogram((1.0, 10.0))
    h.observe(5.0, weight=7)
    h.observe(0.5)
    counts, total = h.snapshot()
    assert counts == [1, 8, 8] and total == pytest.approx(35.5)


def test_bounds_must_increase() -> None:
    with pytest.raises(ValueError):
        Histogram((1.0, 1.0))
    with pytest.raises(ValueError):
        Histogram((2.0, 1.0))


@given(st.lists(st.integers(0, 2**52), max_size=9000))
def test_exact_sum_is_sum(values: list[int]) -> None:
    assert exact_sum(values) == sum(values)
