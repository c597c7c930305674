"""Timestamps go to ClickHouse as exact integer ticks, within what each column type stores."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cdc.sink.timestamps import TimestampType

UTC = timezone.utc
OLD = (18, 16, 1)
NEW = (26, 9, 2)


def test_datetime64_ticks_are_exact_microseconds_on_both_sides_of_1970() -> None:
    column = TimestampType("DateTime64(6, 'UTC')", NEW)
    values = [
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2024, 2, 29, 12, 0, 0, 999999, tzinfo=UTC),
        datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    assert column.to_ticks(values, "occurred_at") == [-500000, 0, 1709208000999999, 10413791999999999]


def test_datetime_keeps_whole_seconds_and_drops_the_fraction() -> None:
    column = TimestampType("DateTime('UTC')", OLD)
    value = datetime(2024, 1, 1, 0, 0, 0, 999999, tzinfo=UTC)
    assert column.to_ticks([value], "occurred_at") == [1704067200]


def test_offsets_other_than_utc_give_the_same_instant() -> None:
    column = TimestampType("DateTime64(6, 'UTC')", NEW)
    india = timezone(timedelta(hours=5, minutes=30))
    same = [datetime(2024, 1, 1, 5, 30, tzinfo=india), datetime(2024, 1, 1, 0, 0, tzinfo=UTC)]
    ticks = column.to_ticks(same, "occurred_at")
    assert ticks[0] == ticks[1]


def test_naive_datetime_is_refused() -> None:
    column = TimestampType("DateTime('UTC')", OLD)
    with pytest.raises(TypeError, match="occurred_at must hold timezone-aware"):
        column.to_ticks([datetime(2024, 1, 1)], "occurred_at")


def test_value_outside_the_column_range_is_refused_with_the_range() -> None:
    column = TimestampType("DateTime('UTC')", OLD)
    with pytest.raises(ValueError, match=r"committed_at 1969-12-31T23:59:59\+00:00 is outside"):
        column.to_ticks([datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)], "committed_at")


def test_datetime_bounds_stop_where_old_servers_date_functions_do() -> None:
    column = TimestampType("DateTime('UTC')", OLD)
    assert column.bounds == (
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2105, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    )
    assert column.to_ticks(list(column.bounds), "x") == [0, 4291747199]


def test_datetime64_bounds_are_wide_only_on_servers_with_the_extended_range() -> None:
    assert TimestampType("DateTime64(6, 'UTC')", NEW).bounds == (
        datetime(1900, 1, 1, tzinfo=UTC),
        datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    )
    assert TimestampType("DateTime64(6, 'UTC')", (21, 8)).bounds[0] == datetime(1970, 1, 1, tzinfo=UTC)


def test_nanosecond_datetime64_is_limited_by_int64() -> None:
    column = TimestampType("DateTime64(9, 'UTC')", NEW)
    low, high = column.bounds
    assert low == datetime(1900, 1, 1, tzinfo=UTC)
    assert high == datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC)
    assert column.to_ticks([high], "x") == [9223372036854775000]


def test_millisecond_datetime64_truncates_like_clickhouse() -> None:
    column = TimestampType("DateTime64(3)", NEW)
    assert column.to_ticks([datetime(1970, 1, 1, 0, 0, 0, 1999, tzinfo=UTC)], "x") == [1]
    assert column.timezone is None


@pytest.mark.parametrize("sql", ["String", "Nullable(DateTime)", "Date", "DateTime64"])
def test_other_types_are_not_timestamp_columns(sql: str) -> None:
    with pytest.raises(ValueError):
        TimestampType(sql, NEW)
