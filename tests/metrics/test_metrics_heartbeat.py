"""Heartbeats are timed from emission to the moment the batch holding their point is stored."""

from __future__ import annotations

import pytest

from cdc.metrics import heartbeat
from cdc.metrics.heartbeat import HeartbeatLatency


def test_the_payload_names_the_slot_and_the_emit_time() -> None:
    content = heartbeat.payload("cdc_outbox", 1_700_000_000.25).encode()
    assert heartbeat.emitted_at(content, "cdc_outbox") == 1_700_000_000.25
    assert heartbeat.emitted_at(content, "another_slot") is None
    for foreign in (b"not json", b"[]", b'{"slot": "cdc_outbox"}', b'{"slot": "cdc_outbox", "emitted_at_us": "1"}'):
        assert heartbeat.emitted_at(foreign, "cdc_outbox") is None


def test_latency_is_observed_when_the_batch_holding_the_heartbeat_is_stored() -> None:
    h = HeartbeatLatency("s")
    h.enable(10.0, now=100.0)
    assert h.last_stored == 100.0  # before the first heartbeat: when they started
    h.seen(3, heartbeat.payload("s", 101.0).encode())
    h.seen(4, heartbeat.payload("s", 102.0).encode())
    h.stored(2, now=103.0)
    assert h.histogram.snapshot()[0][-1] == 0
    h.stored(3, now=103.5)
    counts, total = h.histogram.snapshot()
    assert counts[-1] == 1 and total == pytest.approx(2.5) and h.last_stored == 101.0
    h.stored(9, now=104.0)
    assert h.histogram.snapshot()[0][-1] == 2 and h.histogram.snapshot()[1] == pytest.approx(4.5)
    assert h.last_stored == 102.0


def test_a_heartbeat_sent_again_after_a_reconnect_is_not_timed_twice() -> None:
    h = HeartbeatLatency("s")
    content = heartbeat.payload("s", 50.0).encode()
    h.seen(1, content)
    h.stored(1, now=51.0)
    h.seen(7, content)  # the server re-sends what was not acknowledged
    h.stored(7, now=80.0)
    assert h.histogram.snapshot()[0][-1] == 1


def test_heartbeats_of_other_slots_are_ignored() -> None:
    h = HeartbeatLatency("mine")
    h.seen(1, heartbeat.payload("theirs", 10.0).encode())
    h.stored(1, now=11.0)
    assert h.histogram.snapshot()[0][-1] == 0 and h.last_stored is None


def test_off_means_interval_zero() -> None:
    h = HeartbeatLatency("s")
    assert h.interval == 0.0
    h.enable(5.0, now=1.0)
    h.disable()
    assert h.interval == 0.0 and h.last_stored == 1.0
