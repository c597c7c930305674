"""ClickHouse timestamp columns: what each type can hold and how a Python datetime goes over the wire.

clickhouse-driver turns a datetime into a number through ``datetime.timestamp()``,
a float truncated towards zero: wrong by a second before 1970 and only as exact
as the float allows far from it. It passes plain ints through untouched, so we
send ticks computed with integer arithmetic: exact for every microsecond.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Final

EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND: Final = timedelta(microseconds=1)
_NOTHING: Final = object()
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
        # One timedelta floor division per value gives the ticks directly (floor, as
        # ClickHouse truncates); only precisions finer than microseconds need scaling.
        if self.ticks_per_second <= 1_000_000:
            self._step, self._scale = timedelta(microseconds=1_000_000 // self.ticks_per_second), 1
        else:
            self._step, self._scale = _MICROSECOND, self.ticks_per_second // 1_000_000

    def to_ticks(self, values: Sequence[datetime], column: str, *, repeated: bool = False) -> list[int]:
        """Ticks since the epoch for each tz-aware datetime; raises ValueError/TypeError for bad input.

        ``repeated``: runs of the very same object are common (a transaction's
        commit time), so each run is converted once.
        """
        step = self._step
        try:
            if repeated:
                ticks: list[int] = []
                append = ticks.append
                last: object = _NOTHING
                tick = 0
                for value in values:
                    if value is not last:
                        tick = (value - EPOCH) // step
                        last = value
                    append(tick)
            else:
                ticks = [(value - EPOCH) // step for value in values]
        except TypeError:
            raise TypeError(f"{column} must hold timezone-aware datetimes") from None
        if self._scale != 1:
            ticks = [tick * self._scale for tick in ticks]
        if ticks and (min(ticks) < self._low_ticks or max(ticks) > self._high_ticks):
            bad = next(v for v, t in zip(values, ticks) if not self._low_ticks <= t <= self._high_ticks)
            raise ValueError(
                f"{column} {bad.isoformat()} is outside what {self.sql} stores "
                f"({self.bounds[0].isoformat()} .. {self.bounds[1].isoformat()}); "
                "rows outside timestamp_bounds() must be dead-lettered before write"
            )
        return ticks

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
