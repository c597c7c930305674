"""ClickHouse timestamp columns: what each type can hold and how a timestamp goes over the wire.

clickhouse-driver turns a datetime into a number through ``datetime.timestamp()``,
a float truncated towards zero: wrong by a second before 1970 and only as exact
as the float allows far from it. It passes plain ints through untouched, so we
send ticks computed with integer arithmetic: exact for every microsecond.

A Batch carries its timestamps as int microseconds since the epoch, which
``from_micros`` turns into ticks (for ``DateTime64(6)``: the very same list);
``to_ticks`` does the same for the few datetimes left (dead letters, marks).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Final, NoReturn

EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND: Final = timedelta(microseconds=1)
_INT64_MAX: Final = 2**63 - 1

_TYPE_RE: Final = re.compile(
    r"^DateTime(?:64\(\s*(?P<precision>\d)\s*(?:,\s*'(?P<tz64>[^']*)'\s*)?\)|\(\s*'(?P<tz>[^']*)'\s*\))?$"
)

# DateTime is a UInt32 of seconds, but 18.16's date functions (toYYYYMM, used by
# the partition key) go wrong after 2106-02-06; stop at the last full year.
_DATETIME_RANGE: Final = (
    datetime(1970, 1, 1, tzinfo=timezone.utc),
    datetime(2105, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
)
# DateTime64's documented range since 22.8; earlier servers used the DateTime one
# for dates and mishandled years before 1970, so they get the narrow range.
_DATETIME64_RANGE: Final = (
    datetime(1900, 1, 1, tzinfo=timezone.utc),
    datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
)
EXTENDED_RANGE_SINCE: Final = (22, 8)


class TimestampType:
    """One timestamp column type (``DateTime('UTC')``, ``DateTime64(6, 'UTC')``...) on one server."""

    def __init__(self, sql: str, server_version: tuple[int, ...]) -> None:
        match = _TYPE_RE.match(sql.strip())
        if match is None:
            raise ValueError(f"{sql!r} is not a DateTime or DateTime64 type")
        self.sql = sql
        self.timezone = match.group("tz64") or match.group("tz")
        precision = match.group("precision")
        # None means DateTime: whole seconds, anything finer is dropped.
        self.precision: int | None = None if precision is None else int(precision)
        digits = 0 if self.precision is None else self.precision
        self.ticks_per_second: int = 10**digits
        low, high = (
            _DATETIME64_RANGE
            if self.precision is not None and server_version >= EXTENDED_RANGE_SINCE
            else _DATETIME_RANGE
        )
        self._low_ticks = max(self._micros_to_ticks(_micros(low)), -_INT64_MAX)
        self._high_ticks = min(self._micros_to_ticks(_micros(high)), _INT64_MAX)
        self.bounds = (self._first_instant(self._low_ticks), self._last_instant(self._high_ticks))
        # The same range in microseconds: exactly the values whose ticks are in range.
        self._low_micros = _micros(self.bounds[0])
        self._high_micros = _micros(self.bounds[1])
        # Ticks are micros // divisor (floor, as ClickHouse truncates) or micros * scale:
        # one of the two is 1, and both are for DateTime64(6).
        if self.ticks_per_second <= 1_000_000:
            self._divisor, self._scale = 1_000_000 // self.ticks_per_second, 1
        else:
            self._divisor, self._scale = 1, self.ticks_per_second // 1_000_000
        # One timedelta floor division per datetime gives its ticks directly.
        self._step = timedelta(microseconds=self._divisor)

    def from_micros(self, values: list[int], column: str) -> list[int]:
        """Ticks for int microseconds since the epoch (UTC); raises ValueError/TypeError for bad input.

        Integer arithmetic only, flooring like ClickHouse. For microsecond columns
        the ticks are the values: ``values`` itself comes back, never changed.
        Otherwise a new list; ``values`` is never modified either way.

        Only the extremes are type-checked (min and max are all the check costs):
        a float between two ints gets through here, and clickhouse-driver refuses it.
        """
        if values:
            try:
                low, high = min(values), max(values)
                whole = type(low) is int and type(high) is int
            except TypeError:  # values that do not compare: a datetime among ints...
                whole = False
            if not whole:
                raise TypeError(f"{column} must hold integer microseconds since the Unix epoch")
            if low < self._low_micros or high > self._high_micros:
                self._refuse(column, _micros_text(low if low < self._low_micros else high))
        if self._scale != 1:
            scale = self._scale
            return [micros * scale for micros in values]
        if self._divisor != 1:
            divisor = self._divisor
            return [micros // divisor for micros in values]
        return values

    def to_ticks(self, values: Sequence[datetime], column: str) -> list[int]:
        """Ticks since the epoch for each tz-aware datetime; raises ValueError/TypeError for bad input."""
        step = self._step
        try:
            ticks = [(value - EPOCH) // step for value in values]
        except TypeError:
            raise TypeError(f"{column} must hold timezone-aware datetimes") from None
        if self._scale != 1:
            ticks = [tick * self._scale for tick in ticks]
        if ticks and (min(ticks) < self._low_ticks or max(ticks) > self._high_ticks):
            bad = next(v for v, t in zip(values, ticks) if not self._low_ticks <= t <= self._high_ticks)
            self._refuse(column, bad.isoformat())
        return ticks

    def _refuse(self, column: str, value: str) -> NoReturn:
        raise ValueError(
            f"{column} {value} is outside what {self.sql} stores "
            f"({self.bounds[0].isoformat()} .. {self.bounds[1].isoformat()}); "
            "rows outside timestamp_bounds() must be dead-lettered before write"
        )

    def _micros_to_ticks(self, micros: int) -> int:
        if self.ticks_per_second >= 1_000_000:
            return micros * (self.ticks_per_second // 1_000_000)
        # Floor, as ClickHouse truncates: 12:00:00.9 is stored as 12:00:00.
        return micros // (1_000_000 // self.ticks_per_second)

    def _first_instant(self, ticks: int) -> datetime:
        # Ceiling: the first microsecond whose ticks are not below the limit.
        return EPOCH + timedelta(microseconds=-(-ticks * 1_000_000 // self.ticks_per_second))

    def _last_instant(self, ticks: int) -> datetime:
        # Every microsecond that truncates to at most the last tick is storable.
        micros = (ticks + 1) * 1_000_000 // self.ticks_per_second
        if (ticks + 1) * 1_000_000 % self.ticks_per_second == 0:
            micros -= 1
        return EPOCH + timedelta(microseconds=micros)

    def __repr__(self) -> str:
        return f"TimestampType({self.sql!r})"


def _micros(value: datetime) -> int:
    return (value - EPOCH) // _MICROSECOND


def _micros_text(micros: int) -> str:
    """The instant as an ISO datetime, or as a number past what datetime can show."""
    try:
        return (EPOCH + timedelta(microseconds=micros)).isoformat()
    except OverflowError:
        return f"{micros} microseconds since the Unix epoch"
