from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from cdc.core.buffer import BatchBuilder
from cdc.core.events import EVENT_COLUMNS, DeadLetter
from cdc.core.outbox import to_micros

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _row(uid: str, seq: int = 0, payload: bytes = b"{}") -> tuple[object, ...]:
    return (uid, "t", to_micros(WHEN), "prod", payload, 1, 7, seq)


def test_rows_are_laid_out_as_columns_with_their_transaction_and_positions() -> None:
    builder = BatchBuilder(max_rows=10, max_bytes=10**9, max_age=60)
    builder.extend([_row("a", 0), _row("b", 1)], commit_lsn=99, commit_time=0)
    builder.extend([_row("c", 0)], commit_lsn=120, commit_time=1_000_000)
    batch = builder.seal()
    assert len(batch.columns) == len(EVENT_COLUMNS)
    columns = dict(zip(EVENT_COLUMNS, batch.columns))
    assert columns["unique_id"] == ["a", "b", "c"]
    assert columns["occurred_at"] == [to_micros(WHEN)] * 3
    assert columns["outbox_id"] == [7, 7, 7]
    assert columns["commit_lsn"] == [99, 99, 120]
    assert columns["commit_seq"] == [0, 1, 0]
    # PostgreSQL's commit time counts from 2000-01-01; the batch's from 1970-01-01.
    pg_epoch = to_micros(datetime(2000, 1, 1, tzinfo=timezone.utc))
    assert columns["committed_at"] == [pg_epoch, pg_epoch, pg_epoch + 1_000_000]
    assert all(len(column) == 3 for column in batch.columns)


def test_full_by_rows_or_bytes() -> None:
    by_rows = BatchBuilder(max_rows=2, max_bytes=10**9, max_age=60)
    by_rows.extend([_row("a")], 1, 0)
    assert not by_rows.full()
    by_rows.extend([_row("b", 1)], 1, 0)
    assert by_rows.full()
    by_bytes = BatchBuilder(max_rows=1000, max_bytes=1000, max_age=60)
    by_bytes.extend([_row("a", payload=b"x" * 2000)], 1, 0)
    assert by_bytes.full()


def test_due_by_age_of_the_oldest_row_only_when_something_is_held() -> None:
    builder = BatchBuilder(max_rows=1000, max_bytes=10**9, max_age=0.5)
    assert not builder.due(10**9)
    assert builder.seconds_until_due(0) is None
    builder.extend([_row("a")], 1, 0)
    assert builder.seconds_until_due(0.0) is not None
    assert builder.due(10**9)


def test_a_batch_counts_its_age_from_when_its_first_rows_were_received() -> None:
    builder = BatchBuilder(max_rows=1000, max_bytes=10**9, max_age=0.5)
    builder.received_at = 100.0  # the read that brought the rows had them at 100.0, then settled
    builder.extend([_row("a")], 1, 0)
    builder.received_at = 100.3  # later rows do not make the open batch younger
    builder.extend([_row("b")], 2, 0)
    assert builder.seconds_until_due(100.2) == pytest.approx(0.3)
    assert not builder.due(100.49) and builder.due(100.5)
    builder.seal()
    builder.received_at = None  # a caller that does not know: the batch opens when the rows are added
    before = time.monotonic()
    builder.extend([_row("c")], 3, 0)
    after = time.monotonic()
    remaining = builder.seconds_until_due(after)
    assert remaining is not None and before + 0.5 - after <= remaining <= 0.5


def test_seal_opens_the_next_batch_with_the_next_seq() -> None:
    builder = BatchBuilder(max_rows=10, max_bytes=10**9, max_age=60)
    builder.dead_letter(DeadLetter(1, 0, WHEN, "public.outbox", "unique_id is empty", "{}"))
    first = builder.seal()
    assert (first.seq, len(first), len(first.dead_letters)) == (1, 1, 1)
    assert builder.seq == 2 and len(builder) == 0


def test_many_small_transactions_land_in_the_columns_in_order_across_the_spread_size() -> None:
    builder = BatchBuilder(max_rows=10**6, max_bytes=10**12, max_age=60)
    expected = []
    # 5,000 rows in transactions of 5, more than wait as tuples at once, and one long run among them.
    sizes = [5] * 500 + [1000] + [5] * 500
    for t, size in enumerate(sizes):
        rows = [_row(f"{t}-{s}", s) for s in range(size)]
        builder.extend(rows, commit_lsn=1000 + t, commit_time=t)
        expected += [(f"{t}-{s}", 1000 + t, s) for s in range(size)]
        assert builder.rows == len(builder) == len(expected)
    batch = builder.seal()
    columns = dict(zip(EVENT_COLUMNS, batch.columns))
    assert list(zip(columns["unique_id"], columns["commit_lsn"], columns["commit_seq"])) == expected
    assert all(len(column) == 6000 for column in batch.columns)
    assert batch.rows == 6000 and builder.rows == 0
