"""How runs of committed rows become buffered events: positions, batches, skips, dead letters, duplicates."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import structlog

from cdc.core.buffer import BatchBuilder
from cdc.core.collector import Collector
from cdc.core.dedup import DedupWindow
from cdc.core.events import EVENT_COLUMNS, Batch
from cdc.core.outbox import REQUIRED_COLUMNS, to_micros
from cdc.core.tracker import AckTracker
from cdc.pgoutput.messages import Column, Relation, TupleData
from implementations import implementation  # noqa: F401 - the fixture

# Every test once per implementation of the conversion (pure Python, compiled).
pytestmark = pytest.mark.usefixtures("implementation")

UTC = timezone.utc
OUTBOX = Relation(None, 1, "public", "outbox", ord("d"),
                  tuple(Column(0, name, 25, -1) for name in (*REQUIRED_COLUMNS, "created_at")))
BOUNDS = (datetime(1900, 1, 1, tzinfo=UTC), datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
AT = b"2026-11-24 21:58:27.123456+00"


def row(uid: str, at: bytes = AT, outbox_id: int = 1, **changes: bytes | None) -> TupleData:
    values: dict[str, bytes | None] = {
        "id": str(outbox_id).encode(), "unique_id": uid.encode(), "event_type": b"user.created",
        "occurred_at": at, "environment": b"prod", "payload": b'{"a": 1}', "metadata_version": b"1",
        "created_at": AT,
    }
    values.update(changes)
    return tuple(values[column.name] for column in OUTBOX.columns)


class Harness:
    def __init__(self, *, max_rows: int = 100, high_water_mark: tuple[int, int] | None = None) -> None:
        self.builder = BatchBuilder(max_rows=max_rows, max_bytes=10**9, max_age=60)
        self.sealed: list[Batch] = []
        self.collector = Collector(
            outbox=("public", "outbox"), builder=self.builder, tracker=AckTracker(0), dedup=DedupWindow(1000),
            high_water_mark=high_water_mark, bounds=BOUNDS, max_payload_bytes=100, log=structlog.get_logger(),
            on_full=lambda: self.sealed.append(self.builder.seal()),
        )

    def batches(self) -> list[dict[str, list[object]]]:
        return [dict(zip(EVENT_COLUMNS, batch.columns)) for batch in [*self.sealed, self.builder.seal()]]


def test_a_run_longer_than_a_batch_fills_each_batch_to_exactly_max_rows() -> None:
    h = Harness(max_rows=3)
    h.collector.rows(OUTBOX, [row(f"u{i}", outbox_id=i) for i in range(8)], 500, 0, 0)
    batches = h.batches()
    assert [len(b["unique_id"]) for b in batches] == [3, 3, 2]
    assert [b["commit_seq"] for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert [b["outbox_id"] for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7]]


def test_rows_at_or_below_the_high_water_mark_are_skipped_even_inside_a_run() -> None:
    h = Harness(high_water_mark=(100, 4))
    h.collector.rows(OUTBOX, [row(f"old{i}") for i in range(3)], 99, 0, 0)
    h.collector.rows(OUTBOX, [row(f"a{i}") for i in range(3)], 100, 0, 0)  # seqs 0-2: stored
    h.collector.rows(OUTBOX, [row(f"b{i}") for i in range(4)], 100, 3, 0)  # seqs 3-4 stored, 5-6 not
    h.collector.rows(OUTBOX, [row("c0")], 101, 0, 0)
    (batch,) = h.batches()
    assert batch["unique_id"] == [b"b2", b"b3", b"c0"]
    assert list(zip(batch["commit_lsn"], batch["commit_seq"])) == [(100, 5), (100, 6), (101, 0)]
    assert h.collector.counters.already_stored == 8
    assert h.collector.last_position == (101, 0)


def test_bad_rows_in_a_run_are_dead_lettered_at_their_position_and_the_rest_buffered() -> None:
    h = Harness()
    run = [
        row("ok0"),
        row("", outbox_id=2),
        row("late", at=b"infinity"),
        row("ok1", payload=b"x" * 101),
        row("naive", at=b"2026-11-24 21:58:27"),
        row("ok2", metadata_version=None),
        row("ok3"),
    ]
    h.collector.rows(OUTBOX, run, 700, 10, 0)
    batch = h.builder.seal()
    columns = dict(zip(EVENT_COLUMNS, batch.columns))
    assert columns["unique_id"] == [b"ok0", b"ok3"]
    assert columns["commit_seq"] == [10, 16]
    # Every bad row travels in the batch as a dead letter, at its own position: none is dropped.
    assert [(d.commit_lsn, d.commit_seq) for d in batch.dead_letters] == [(700, seq) for seq in range(11, 16)]
    counters = h.collector.counters
    assert (counters.rows_seen, counters.rows_buffered, counters.dead_letters) == (7, 2, 5)


def test_dead_letters_carry_their_position_and_reason() -> None:
    h = Harness()
    h.collector.rows(OUTBOX, [row("ok"), row("", outbox_id=2), row("late", at=b"infinity")], 700, 10, 0)
    batch = h.builder.seal()
    assert [(d.commit_lsn, d.commit_seq) for d in batch.dead_letters] == [(700, 11), (700, 12)]
    assert "unique_id is empty" in batch.dead_letters[0].reason
    assert "occurred_at 'infinity'" in batch.dead_letters[1].reason


def test_duplicates_inside_a_run_and_across_runs_are_dropped_and_counted() -> None:
    h = Harness()
    h.collector.rows(OUTBOX, [row("a"), row("b"), row("a")], 1, 0, 0)
    h.collector.rows(OUTBOX, [row("b"), row("c")], 2, 0, 0)
    (batch,) = h.batches()
    assert batch["unique_id"] == [b"a", b"b", b"c"]
    assert list(zip(batch["commit_lsn"], batch["commit_seq"])) == [(1, 0), (1, 1), (2, 1)]
    assert h.collector.counters.duplicates == 2


def test_occurred_at_is_exact_microseconds_however_timestamps_repeat_or_change() -> None:
    texts = [AT, AT, b"1969-12-31 23:59:59.999999+00", AT, b"2026-11-25 03:28:27.5+05:30", b"1900-01-01 00:00:00+00"]
    h = Harness()
    h.collector.rows(OUTBOX, [row(f"u{i}", at=text) for i, text in enumerate(texts)], 1, 0, 0)
    (batch,) = h.batches()
    assert batch["occurred_at"] == [to_micros(datetime.fromisoformat(t.decode())) for t in texts]
    assert batch["occurred_at"][2] == -1


def test_rows_of_another_table_are_dead_lettered_not_dropped() -> None:
    h = Harness()
    other = Relation(None, 2, "public", "orders", ord("d"), OUTBOX.columns)
    h.collector.relation(other)
    h.collector.rows(other, [row("x"), row("y")], 5, 0, 0)
    batch = h.builder.seal()
    assert batch.rows == 0 and len(batch.dead_letters) == 2
    assert "not the outbox" in batch.dead_letters[0].reason


def test_a_logical_message_is_reported_with_the_open_batch_and_becomes_no_row() -> None:
    seen: list[tuple[int, str, bytes]] = []
    builder = BatchBuilder(max_rows=100, max_bytes=10**9, max_age=60)
    tracker = AckTracker(0)
    collector = Collector(
        outbox=("public", "outbox"), builder=builder, tracker=tracker, dedup=DedupWindow(1000),
        high_water_mark=None, bounds=BOUNDS, max_payload_bytes=100, log=structlog.get_logger(),
        on_full=lambda: None, on_message=lambda seq, prefix, content: seen.append((seq, prefix, content)),
    )
    collector.relation(OUTBOX)
    collector.rows(OUTBOX, [row("a")], 100, 0, 0)
    collector.commit(140)
    builder.seal()
    collector.message("cdc_heartbeat", b"{}")
    collector.commit(240)
    assert seen == [(2, "cdc_heartbeat", b"{}")]
    assert len(builder) == 0 and collector.counters.rows_seen == 1 and collector.counters.dead_letters == 0
    assert tracker.stored(2) == 240
