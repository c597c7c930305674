"""The demo's application-like load: what it reports as committed is exactly what the outbox and ClickHouse hold."""

from __future__ import annotations

import threading
from collections import Counter

import psycopg
import pytest
from support import Target, checked

from cdc.demo.load import LoadSettings, Pacer, run_load

FAST = {"rate": None, "rollback_ratio": 0.2, "retry_ratio": 0.2, "seed": 7}


def _outbox(dsn: str) -> Counter[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return Counter(uid for (uid,) in conn.execute("SELECT unique_id FROM outbox"))


def test_the_load_commits_exactly_the_events_asked_for_with_rollbacks_and_retries(pg_dsn: str) -> None:
    checked(Target(pg_dsn, "").cdc("migrate"))
    report = run_load(pg_dsn, LoadSettings(events=300, **FAST))  # type: ignore[arg-type]

    rows = _outbox(pg_dsn)
    assert len(report.committed_ids) == 300
    assert set(rows) == report.committed_ids  # nothing rolled back is in the outbox; everything committed is
    assert sum(rows.values()) == report.outbox_rows > 300  # retried ids are there twice
    assert report.transactions_rolled_back > 0 and report.events_rolled_back > 0
    assert report.retries_of_committed > 0 and report.retries_of_rolled_back > 0
    assert sum(report.events_by_type.values()) == 300
    assert {"order_placed", "item_added", "payment_captured"} <= set(report.events_by_type)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        orders = conn.execute("SELECT count(*) FROM demo_orders").fetchone()
        placed = conn.execute("SELECT count(DISTINCT unique_id) FROM outbox WHERE event_type = 'order_placed'").fetchone()
    assert orders == placed  # each committed order has its event, and no rolled-back order survived


def test_small_totals_are_met_exactly(pg_dsn: str) -> None:
    checked(Target(pg_dsn, "").cdc("migrate"))
    for events in (0, 1, 2, 3, 7):
        report = run_load(pg_dsn, LoadSettings(events=events, **FAST))  # type: ignore[arg-type]
        assert len(report.committed_ids) == events
    assert len(_outbox(pg_dsn)) == 13


def test_the_same_seed_makes_the_same_load(pg_dsn: str) -> None:
    checked(Target(pg_dsn, "").cdc("migrate"))
    first = run_load(pg_dsn, LoadSettings(events=60, **FAST))  # type: ignore[arg-type]
    second = run_load(pg_dsn, LoadSettings(events=60, **FAST))  # type: ignore[arg-type]
    assert first.events_by_type == second.events_by_type
    assert first.transactions_rolled_back == second.transactions_rolled_back
    assert first.committed_ids.isdisjoint(second.committed_ids)  # fresh uuids each time


def test_a_stop_request_ends_the_load_with_an_accurate_report(pg_dsn: str) -> None:
    checked(Target(pg_dsn, "").cdc("migrate"))
    stop = threading.Event()

    def progress(committed: int) -> None:
        if committed >= 50:
            stop.set()

    report = run_load(pg_dsn, LoadSettings(events=None, **FAST), stop=stop, progress=progress)  # type: ignore[arg-type]
    assert 50 <= len(report.committed_ids) < 60
    assert set(_outbox(pg_dsn)) == report.committed_ids


def test_the_exactly_once_check_holds_through_cdc_run(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    report = run_load(pg_dsn, LoadSettings(events=400, **FAST))  # type: ignore[arg-type]
    checked(t.cdc("run", "--until-lsn", "current"))
    stored = Counter(uid for (uid,) in t.ch().execute("SELECT unique_id FROM events"))
    assert set(stored) == report.committed_ids and max(stored.values()) == 1
    per_type = dict(t.ch().execute("SELECT event_type, count() FROM events GROUP BY event_type"))
    assert per_type == report.events_by_type


@pytest.mark.parametrize(
    ("bad", "message"),
    [({"rate": 0}, "rate"), ({"events": -1}, "events"), ({"rollback_ratio": 1.0}, "rollback_ratio"),
     ({"max_events_per_transaction": 1}, "at least 2")],
)
def test_bad_load_settings_are_refused(bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoadSettings(**bad)  # type: ignore[arg-type]


class _FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_the_pacer_spaces_rows_at_the_rate() -> None:
    clock = _FakeClock()
    pacer = Pacer(10.0, clock, clock.sleep)
    for units in (3, 2, 5):
        pacer.wait(units)
    assert clock.slept == [0.3, 0.2]  # the first batch goes at once; each later one waits for the one before


def test_the_pacer_does_not_burst_to_make_up_a_long_stall() -> None:
    clock = _FakeClock()
    pacer = Pacer(10.0, clock, clock.sleep)
    pacer.wait(1)
    clock.now += 60  # the database stalled for a minute
    for _ in range(15):
        pacer.wait(1)
    # At most a second's worth (10 rows) goes without waiting, then the rate resumes.
    assert clock.slept.count(0.1) >= 4


def test_no_rate_means_no_waiting() -> None:
    clock = _FakeClock()
    pacer = Pacer(None, clock, clock.sleep)
    for _ in range(100):
        pacer.wait(5)
    assert clock.slept == []
