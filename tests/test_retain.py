from __future__ import annotations

import pytest

from cdc.pipeline.retain import RetainError, Retention


def test_sizes_and_durations_parse() -> None:
    assert Retention.parse("512MB").nbytes == 512 * 1024**2
    assert Retention.parse("2GB").nbytes == 2 * 1024**3
    assert Retention.parse("6h").seconds == 6 * 3600
    assert Retention.parse("30min").seconds == 1800
    assert not Retention.parse(None).active and not Retention.parse("0").active


@pytest.mark.parametrize("bad", ["lots", "5 parsecs", "-1h", "1e3"])
def test_nonsense_is_refused_with_an_example(bad: str) -> None:
    with pytest.raises(RetainError, match="512MB"):
        Retention.parse(bad)


def test_byte_window_holds_the_acknowledgement_that_far_behind() -> None:
    retention = Retention(nbytes=1000)
    assert retention.held(5000, now=0) == 4000
    assert retention.held(500, now=0) == 0


def test_time_window_acknowledges_what_was_stored_that_long_ago() -> None:
    retention = Retention(seconds=60)
    assert retention.held(100, now=0) == 100  # nothing older known: where we started
    assert retention.held(200, now=30) == 100
    assert retention.held(300, now=61) == 100
    assert retention.held(300, now=91) == 200
    assert retention.held(400, now=200) == 300


def test_without_a_window_the_safe_position_is_acknowledged() -> None:
    assert Retention().held(12345, now=0) == 12345
