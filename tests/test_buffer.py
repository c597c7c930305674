from __future__ import annotations

from datetime import datetime, timezone

from cdc.buffer import BatchBuilder
from cdc.sink.base import EVENT_COLUMNS, DeadLetter

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _row(uid: str, payload: str = "{}") -> tuple[object, ...]:
    return (uid, "t", WHEN, "prod", payload, 1, 7)


def test_rows_are_laid_out_as_columns_with_their_positions() -> None:
    builder = BatchBuilder(max_rows=10, max_bytes=10**9, max_age=60)
    builder.append(_row("a"), commit_lsn=99, seq=0, commit_time=0)
    builder.append(_row("b"), commit_lsn=99, seq=1, commit_time=0)
    batch = builder.seal()
    assert len(batch.columns) == len(EVENT_COLUMNS)
    columns = dict(zip(EVENT_COLUMNS, batch.columns))
    assert columns["unique_id"] == ["a", "b"]
    assert columns["commit_lsn"] == [99, 99]
    assert columns["commit_seq"] == [0, 1]
    assert columns["committed_at"] == [datetime(2000, 1, 1, tzinfo=timezone.utc)] * 2


def test_full_by_rows_or_bytes() -> None:
    by_rows = BatchBuilder(max_rows=2, max_bytes=10**9, max_age=60)
    by_rows.append(_row("a"), 1, 0, 0)
    assert not by_rows.full()
    by_rows.append(_row("b"), 1, 1, 0)
    assert by_rows.full()
    by_bytes = BatchBuilder(max_rows=1000, max_bytes=1000, max_age=60)
    by_bytes.append(_row("a", "x" * 2000), 1, 0, 0)
    assert by_bytes.full()


def test_due_by_age_of_the_oldest_row_only_when_something_is_held() -> None:
    builder = BatchBuilder(max_rows=1000, max_bytes=10**9, max_age=0.5)
    assert not builder.due(10**9)
    assert builder.seconds_until_due(0) is None
    builder.append(_row("a"), 1, 0, 0)
    assert builder.seconds_until_due(0.0) is not None
    assert builder.due(10**9)


def test_seal_opens_the_next_batch_with_the_next_seq() -> None:
    builder = BatchBuilder(max_rows=10, max_bytes=10**9, max_age=60)
    builder.dead_letter(DeadLetter(1, 0, WHEN, "public.outbox", "unique_id is empty", "{}"))
    first = builder.seal()
    assert (first.seq, len(first), len(first.dead_letters)) == (1, 1, 1)
    assert builder.seq == 2 and len(builder) == 0
