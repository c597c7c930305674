"""The outbox contract: which columns a row must have, and how a pgoutput tuple becomes an event.

A ``RowConverter`` is built once per Relation message (and rebuilt when the
server re-sends the Relation after an ALTER TABLE), so the per-row path is a
handful of index lookups and conversions with no dictionaries.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import orjson

from .. import accel
from ..pgoutput.messages import UNCHANGED, Column, Relation, TupleData, pg_epoch_micros_to_datetime
from .events import DeadLetter

if TYPE_CHECKING:
    from .._accel import Converter

REQUIRED_COLUMNS: Final = (
    "id", "unique_id", "event_type", "occurred_at", "environment", "payload", "metadata_version",
)
# ClickHouse's events.metadata_version is Int32; the outbox column may be widened
# (ALTER ... TYPE bigint), and a value past Int32 would fail every INSERT of its batch.
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_UNIX_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND: Final = timedelta(microseconds=1)

# (unique_id, event_type, occurred_at, environment, payload, metadata_version,
# outbox_id, commit_seq): EVENT_COLUMNS up to outbox_id, then the row's position
# in its transaction. occurred_at is microseconds since the Unix epoch.
EventRow = tuple[Any, ...]
# (commit_seq, the row as sent, why it cannot be an event)
Rejected = tuple[int, TupleData, str]
# What convert_transactions makes of whole transactions: their rows that convert, in order; (how many of
# them, commit LSN, commit time) for each transaction with any; (commit LSN, commit time, its rejected rows)
# for each with any.
Converted = tuple[list[EventRow], list[tuple[int, int, int]], list[tuple[int, int, list[Rejected]]]]
ConvertMany = Callable[[Sequence[TupleData], int], tuple[list[EventRow], list[Rejected]]]


def convert_transactions(convert_many: ConvertMany, tuples: Sequence[TupleData],
                         txns: Sequence[tuple[int, int, int, int]]) -> Converted:
    """``convert_many`` for each transaction's rows in turn, positions from 0 in each: ``tuples`` holds the
    rows of ``txns`` in order, each (rows, commit LSN, commit time, end LSN). The reference of the compiled
    Converter.convert_transactions, which does the same in one call (live traffic's small transactions)."""
    rows: list[EventRow] = []
    commits: list[tuple[int, int, int]] = []
    rejections: list[tuple[int, int, list[Rejected]]] = []
    start = 0
    for n, commit_lsn, commit_time, _ in txns:
        if n:
            converted, rejected = convert_many(tuples[start:start + n], 0)
            start += n
            if rejected:
                rejections.append((commit_lsn, commit_time, rejected))
            if converted:
                rows += converted
                commits.append((len(converted), commit_lsn, commit_time))
    return rows, commits, rejections


class OutboxSchemaError(Exception):
    """The outbox table, as the server describes it, lacks a column we need."""


class RowRejected(Exception):
    """A row the sink cannot take; ``reason`` goes to the dead-letter table."""


def outbox_relation(schema: str, table: str) -> Relation:
    """The outbox as a query reads it (the initial copy, backfill): REQUIRED_COLUMNS, in that order."""
    return Relation(
        xid=None, relation_id=0, namespace=schema, name=table, replica_identity=ord("d"),
        columns=tuple(Column(0, name, 0, -1) for name in REQUIRED_COLUMNS),
    )


def to_micros(value: datetime) -> int:
    """Microseconds since the Unix epoch, exactly (floor), of a tz-aware datetime."""
    return (value - _UNIX_EPOCH) // _MICROSECOND


def parse_timestamptz(text: str) -> datetime:
    # The replication session pins TimeZone=UTC and DateStyle=ISO, so values look
    # like "2026-11-24 21:58:27.123456+00"; infinity, BC dates and years past 9999
    # do not parse and are rejected by the caller.
    return datetime.fromisoformat(text)


class SharedText:
    """Event types and environments repeat: decode each once and share the string, which saves the
    decoding and the memory of a copy per row (both row converters use one)."""

    __slots__ = ("_strings",)

    def __init__(self) -> None:
        self._strings: dict[bytes, str] = {}

    @property
    def strings(self) -> dict[bytes, str]:
        """The table (bytes -> str), which the compiled converter reads and never writes (cdc/_accel_convert.c)."""
        return self._strings

    def text(self, value: bytes) -> str:
        text = self._strings.get(value)
        if text is None:
            if len(self._strings) >= 4096:
                self._strings.clear()
            text = self._strings[value] = value.decode()
        return text


class CheckedRows:
    """The careful path both converters share: every check in order, each failure a RowRejected that names
    the value. A converter supplies how it reads text, integers and occurred_at from its tuples."""

    def __init__(self, relation: Relation, *, bounds: tuple[datetime, datetime], max_payload_bytes: int) -> None:
        names = [column.name for column in relation.columns]
        missing = [column for column in REQUIRED_COLUMNS if column not in names]
        if missing:
            raise OutboxSchemaError(
                f"outbox table {relation.namespace}.{relation.name} lacks column(s) {', '.join(missing)}: "
                "apply the migrations with `cdc migrate` or add them"
            )
        self.relation_name: Final = f"{relation.namespace}.{relation.name}"
        self.names: Final = tuple(names)
        self._index: Final = tuple(names.index(column) for column in REQUIRED_COLUMNS)
        self._bounds_text: Final = (bounds[0].isoformat(), bounds[1].isoformat())
        self._min: Final = to_micros(bounds[0])
        self._max: Final = to_micros(bounds[1])
        self._max_payload: Final = max_payload_bytes
        self._width: Final = len(names)
        # The compiled converter, when a subclass makes one (cdc.accel picked it): it takes the plainly
        # fine rows and hands every other one to _convert_many.
        self._compiled: Converter | None = None

    def convert_many(self, tuples: Sequence[TupleData], first_seq: int) -> tuple[list[EventRow], list[Rejected]]:
        """Event rows for consecutive tuples, the first at position ``first_seq`` of its transaction.

        Returns the rows that convert, in order, and the ones that do not as
        (seq, values, reason) for the dead-letter table. unique_id and payload
        stay the UTF-8 bytes PostgreSQL sent (the preflight insists on a UTF8
        database); event_type and environment are shared strings.
        """
        if self._compiled is not None:
            return self._compiled.convert_many(tuples, first_seq)
        return self._convert_many(tuples, first_seq)

    def convert_transactions(self, tuples: Sequence[TupleData], txns: Sequence[tuple[int, int, int, int]]) -> Converted:
        """See ``convert_transactions``."""
        if self._compiled is not None:
            return self._compiled.convert_transactions(tuples, txns)
        return convert_transactions(self._convert_many, tuples, txns)

    def _convert_many(self, tuples: Sequence[TupleData], first_seq: int) -> tuple[list[EventRow], list[Rejected]]:
        """``convert_many`` in pure Python: the reference the compiled converter must match."""
        raise NotImplementedError

    def _compile(self, strings: dict[bytes, str], *, binary: bool) -> None:
        """Use the compiled converter (cdc/_accel_convert.c) when cdc.accel picked it: read here, not at
        import, since tests switch paths by setting cdc.accel.native. ``strings``: the shared-string table."""
        native = accel.native
        if native is not None:
            self._compiled = native.Converter(
                self._index, self._width, self._min, self._max, min(self._max_payload, sys.maxsize), strings,
                self._convert_many, binary=binary, transactions=partial(convert_transactions, self._convert_many),
            )

    def _text(self, values: TupleData, index: int) -> str:
        raise NotImplementedError

    def _int(self, values: TupleData, index: int) -> int:
        raise NotImplementedError

    def _occurred(self, values: TupleData, index: int) -> int:
        """occurred_at as microseconds since the Unix epoch."""
        raise NotImplementedError

    def _occurred_text(self, values: TupleData, index: int) -> str:
        """occurred_at as an error shows it (only ever asked of a value ``_occurred`` read)."""
        raise NotImplementedError

    def _checked_convert(self, values: TupleData, seq: int) -> EventRow:
        if len(values) != self._width:
            raise RowRejected(f"row has {len(values)} columns, its relation {self._width}")
        i_id, i_uid, i_type, i_at, i_env, i_payload, i_version = self._index
        unique_id = self._text(values, i_uid).encode()
        if not unique_id:
            raise RowRejected("unique_id is empty")
        payload = self._text(values, i_payload).encode()
        if len(payload) > self._max_payload:
            raise RowRejected(f"payload is {len(payload)} bytes, over the limit of {self._max_payload}")
        micros = self._occurred(values, i_at)
        if not self._min <= micros <= self._max:
            low, high = self._bounds_text
            raise RowRejected(f"occurred_at {self._occurred_text(values, i_at)} is outside what ClickHouse can store "
                              f"({low} to {high})")
        version = self._int(values, i_version)
        if not _INT32_MIN <= version <= _INT32_MAX:
            raise RowRejected(f"metadata_version {version} is outside ClickHouse's Int32 range")
        return (unique_id, self._text(values, i_type), micros, self._text(values, i_env), payload, version,
                self._int(values, i_id), seq)


class RowConverter(CheckedRows):
    """Turns Insert tuples of one outbox relation into event rows."""

    def __init__(
        self, relation: Relation, *, bounds: tuple[datetime, datetime], max_payload_bytes: int
    ) -> None:
        super().__init__(relation, bounds=bounds, max_payload_bytes=max_payload_bytes)
        shared = SharedText()
        self._shared: Final = shared.text
        # occurred_at defaults to the transaction's start, so runs of rows share
        # it: the previous row's text and microseconds are usually the answer.
        self._last_at: object = None
        self._last_micros = 0
        self._compile(shared.strings, binary=False)

    def _convert_many(self, tuples: Sequence[TupleData], first_seq: int) -> tuple[list[EventRow], list[Rejected]]:
        """``convert_many`` in pure Python: the reference the compiled converter must match."""
        i_id, i_uid, i_type, i_at, i_env, i_payload, i_version = self._index
        low, high, max_payload, width, shared = self._min, self._max, self._max_payload, self._width, self._shared
        last_at, micros = self._last_at, self._last_micros
        rows: list[EventRow] = []
        rejected: list[Rejected] = []
        for seq, values in enumerate(tuples, first_seq):
            # The common case in one go; anything odd goes the careful way,
            # which finds the exact reason.
            row: EventRow | None
            try:
                at = values[i_at]
                if at != last_at:
                    micros = to_micros(datetime.fromisoformat(at.decode()))  # type: ignore[union-attr]
                    last_at = at
                row = (
                    values[i_uid],
                    shared(values[i_type]),  # type: ignore[arg-type]
                    micros,
                    shared(values[i_env]),  # type: ignore[arg-type]
                    values[i_payload],
                    int(values[i_version]),  # type: ignore[arg-type]
                    int(values[i_id]),  # type: ignore[arg-type]
                    seq,
                )
                if (
                    not row[0] or len(row[4]) > max_payload or not low <= micros <= high  # type: ignore[arg-type]
                    or len(values) != width or not _INT32_MIN <= row[5] <= _INT32_MAX
                ):
                    row = None
            except (AttributeError, TypeError, ValueError, IndexError):
                row = None
            if row is None:
                try:
                    row = self._checked_convert(values, seq)
                except RowRejected as exc:
                    rejected.append((seq, values, str(exc)))
                    continue
            rows.append(row)
        self._last_at, self._last_micros = last_at, micros
        return rows, rejected

    def _occurred(self, values: TupleData, index: int) -> int:
        text = self._text(values, index)
        try:
            occurred_at = parse_timestamptz(text)
        except ValueError:
            raise RowRejected(f"occurred_at {text!r} is not a timestamp ClickHouse can store") from None
        if occurred_at.tzinfo is None:
            raise RowRejected(f"occurred_at {text!r} has no time zone: make the column timestamptz")
        return to_micros(occurred_at)

    def _occurred_text(self, values: TupleData, index: int) -> str:
        return self._text(values, index)

    def _text(self, values: TupleData, index: int) -> str:
        value = values[index]
        if type(value) is bytes:
            try:
                return value.decode()
            except UnicodeDecodeError:
                raise RowRejected(f"{self.names[index]} is not valid UTF-8") from None
        if value is None:
            raise RowRejected(f"{self.names[index]} is NULL")
        raise RowRejected(f"{self.names[index]} was not sent (unchanged TOAST value)")

    def _int(self, values: TupleData, index: int) -> int:
        text = self._text(values, index)
        try:
            return int(text)
        except ValueError:
            raise RowRejected(f"{self.names[index]} {text!r} is not an integer") from None

    def dead_letter(self, values: TupleData, commit_lsn: int, seq: int, commit_time: int, reason: str) -> DeadLetter:
        return dead_letter(self.relation_name, self.names, values, commit_lsn, seq, commit_time, reason)


class UnreadableRows:
    """Rows of an outbox relation that lacks a required column: each one is dead-lettered.

    Rows written while a required column was renamed or dropped can never be
    read as events, not even after the column is back (the WAL describes them
    with the old layout). Stopping would stop at them again on every restart;
    keeping them, with their data and the reason, loses nothing.
    """

    def __init__(self, relation: Relation, reason: str) -> None:
        self.relation_name: Final = f"{relation.namespace}.{relation.name}"
        self.names: Final = tuple(column.name for column in relation.columns)
        self.reason: Final = reason

    def convert_many(self, tuples: Sequence[TupleData], first_seq: int) -> tuple[list[EventRow], list[Rejected]]:
        return [], [(seq, values, self.reason) for seq, values in enumerate(tuples, first_seq)]

    def convert_transactions(self, tuples: Sequence[TupleData], txns: Sequence[tuple[int, int, int, int]]) -> Converted:
        return convert_transactions(self.convert_many, tuples, txns)

    def dead_letter(self, values: TupleData, commit_lsn: int, seq: int, commit_time: int, reason: str) -> DeadLetter:
        return dead_letter(self.relation_name, self.names, values, commit_lsn, seq, commit_time, reason)


def dead_letter(
    relation_name: str, names: tuple[str, ...], values: TupleData, commit_lsn: int, seq: int, commit_time: int,
    reason: str,
) -> DeadLetter:
    row = {
        name: (
            None if value is None
            else "<unchanged>" if value is UNCHANGED
            else bytes(value).decode("utf-8", "backslashreplace")  # type: ignore[arg-type]
        )
        for name, value in zip(names, values)
    }
    return DeadLetter(
        commit_lsn=commit_lsn,
        commit_seq=seq,
        committed_at=pg_epoch_micros_to_datetime(commit_time),
        relation=relation_name,
        reason=reason,
        row_json=orjson.dumps(row).decode(),
    )
