from __future__ import annotations

import itertools
import random

import pytest

from cdc.backoff import Backoff


def test_delays_double_up_to_the_cap_and_stay_there_with_jitter() -> None:
    delays = list(itertools.islice(Backoff(0.5, 4.0, rng=random.Random(1)).delays(), 12))
    ceilings = [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4]
    for delay, ceiling in zip(delays, ceilings):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays[4:])) > 1  # jittered, so retries of many processes spread out


def test_rejects_a_cap_below_the_first_delay() -> None:
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)
