"""Timestamps go to ClickHouse as exact integer ticks, within what each column type stores."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from cdc.sink.clickhouse.timestamps import TimestampType

UTC = timezone.utc
OLD = (18, 16, 1)
NEW = (26, 9, 2)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


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


# -- a Batch's int microseconds ----------------------------------------------


def micros(value: datetime) -> int:
    return (value - EPOCH) // MICROSECOND


def test_microsecond_columns_get_the_batch_list_itself_unchanged() -> None:
    column = TimestampType("DateTime64(6, 'UTC')", NEW)
    values = [-500000, 0, 1709208000999999, 10413791999999999]
    assert column.from_micros(values, "occurred_at") is values
    assert values == [-500000, 0, 1709208000999999, 10413791999999999]


@pytest.mark.parametrize(
    ("sql", "server", "values", "ticks"),
    [
        ("DateTime('UTC')", OLD, [0, 999_999, 1_000_000, 1704067200_999999], [0, 0, 1, 1704067200]),
        ("DateTime64(0, 'UTC')", NEW, [-1, -1_000_000, -1_000_001, 999_999], [-1, -1, -2, 0]),
        ("DateTime64(3, 'UTC')", NEW, [-1, -1_000, -1_001, 0, 1_999, 1709208000_999999], [-1, -1, -2, 0, 1, 1709208000_999]),
        ("DateTime64(6, 'UTC')", NEW, [-1, 0, 1, 1709208000_999999], [-1, 0, 1, 1709208000_999999]),
        ("DateTime64(9, 'UTC')", NEW, [-1, 0, 1, 1709208000_999999], [-1_000, 0, 1_000, 1709208000_999999_000]),
    ],
)
def test_microseconds_become_ticks_floored_like_clickhouse_even_before_1970(
    sql: str, server: tuple[int, ...], values: list[int], ticks: list[int]
) -> None:
    column = TimestampType(sql, server)
    sent = list(values)
    assert column.from_micros(sent, "occurred_at") == ticks
    assert sent == values
    # The same ticks as the datetime path gives for the same instants.
    assert column.to_ticks([EPOCH + m * MICROSECOND for m in values], "occurred_at") == ticks


@pytest.mark.parametrize(
    ("sql", "server"),
    [
        ("DateTime('UTC')", OLD),
        ("DateTime64(3, 'UTC')", NEW),
        ("DateTime64(6, 'UTC')", NEW),
        ("DateTime64(6, 'UTC')", (21, 8)),
        ("DateTime64(9, 'UTC')", NEW),
    ],
)
def test_microseconds_are_accepted_exactly_within_the_bounds(sql: str, server: tuple[int, ...]) -> None:
    column = TimestampType(sql, server)
    low, high = column.bounds
    assert column.from_micros([micros(low), micros(high)], "x") == column.to_ticks([low, high], "x")
    with pytest.raises(ValueError, match=f"x {re.escape((low - MICROSECOND).isoformat())} is outside"):
        column.from_micros([micros(low), micros(low) - 1, micros(high)], "x")
    with pytest.raises(ValueError, match=f"x {re.escape((high + MICROSECOND).isoformat())} is outside"):
        column.from_micros([micros(low), micros(high) + 1], "x")


def test_nanosecond_column_takes_microseconds_up_to_where_int64_ends() -> None:
    column = TimestampType("DateTime64(9, 'UTC')", NEW)
    assert column.from_micros([9223372036854775], "x") == [9223372036854775000]
    with pytest.raises(ValueError, match="2262-04-11T23:47:16.854776"):
        column.from_micros([9223372036854776], "x")


def test_microseconds_outside_the_range_name_the_instant_the_type_and_the_range() -> None:
    column = TimestampType("DateTime('UTC')", OLD)
    with pytest.raises(ValueError) as caught:
        column.from_micros([0, micros(datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)), 5], "committed_at")
    assert str(caught.value) == (
        "committed_at 1969-12-31T23:59:59+00:00 is outside what DateTime('UTC') stores "
        "(1970-01-01T00:00:00+00:00 .. 2105-12-31T23:59:59.999999+00:00); "
        "rows outside timestamp_bounds() must be dead-lettered before write"
    )


def test_microseconds_past_what_a_datetime_shows_are_refused_as_a_number() -> None:
    column = TimestampType("DateTime64(6, 'UTC')", NEW)
    with pytest.raises(ValueError, match="occurred_at 10000000000000000000 microseconds since the Unix epoch is outside"):
        column.from_micros([0, 10**19], "occurred_at")


@pytest.mark.parametrize(
    "values",
    [
        [datetime(2024, 1, 1, tzinfo=UTC)],
        [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)],
        [0, datetime(2024, 1, 1, tzinfo=UTC)],
        [1.5],
        [1_000_000, 2.5],
        ["1704067200000000"],
    ],
    ids=["datetime", "datetimes", "mixed", "float", "float-extreme", "str"],
)
def test_timestamps_that_are_not_integer_microseconds_are_a_type_error(values: list[Any]) -> None:
    column = TimestampType("DateTime64(6, 'UTC')", NEW)
    with pytest.raises(TypeError, match="^occurred_at must hold integer microseconds since the Unix epoch$"):
        column.from_micros(values, "occurred_at")


def test_no_microseconds_give_no_ticks() -> None:
    assert TimestampType("DateTime('UTC')", OLD).from_micros([], "x") == []
    assert TimestampType("DateTime64(6, 'UTC')", NEW).from_micros([], "x") == []


@pytest.mark.parametrize("sql", ["String", "Nullable(DateTime)", "Date", "DateTime64"])
def test_other_types_are_not_timestamp_columns(sql: str) -> None:
    with pytest.raises(ValueError):
        TimestampType(sql, NEW)
