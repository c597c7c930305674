"""Batches into chDB as Arrow (typed exactly: int ticks stay ints), and query answers back as Python rows.

ClickHouse reads an integer into a DateTime64 column as seconds, whatever the
precision; an Arrow timestamp carries its unit, so the sink's ticks (whole
seconds for DateTime, 10**-p seconds for DateTime64(p)) arrive as they were
meant. Answers come back as JSONCompact with each column's type, which gives
the same Python values clickhouse-driver would: ints, strs, tz-aware datetimes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

_UNITS: Final = {0: "s", 3: "ms", 6: "us", 9: "ns"}
_INT_RE: Final = re.compile(r"^(U?)Int(8|16|32|64)$")
_DATETIME_RE: Final = re.compile(r"^DateTime(?:64\(\s*(?P<precision>\d+)\s*(?:,\s*'(?P<tz64>[^']*)'\s*)?\)"
                                 r"|\(\s*'(?P<tz>[^']*)'\s*\))?$")
_WRAPPER_RE: Final = re.compile(r"^(?:LowCardinality|Nullable)\((?P<inner>.*)\)$")


def _plain(type_sql: str) -> str:
    type_sql = type_sql.strip()
    while (match := _WRAPPER_RE.match(type_sql)) is not None:
        type_sql = match["inner"].strip()
    return type_sql


def arrow_type(type_sql: str) -> Any:
    """The Arrow type a column of this ClickHouse type is sent as; ValueError for one the sink never writes."""
    import pyarrow as pa

    plain = _plain(type_sql)
    if plain == "String":
        return pa.string()
    if (number := _INT_RE.match(plain)) is not None:
        return getattr(pa, f"{'uint' if number[1] else 'int'}{number[2]}")()
    if (moment := _DATETIME_RE.match(plain)) is not None:
        precision = 0 if moment["precision"] is None else int(moment["precision"])
        if precision not in _UNITS:
            raise ValueError(f"DateTime64({precision}) is not a precision the chDB sink writes (0, 3, 6 or 9)")
        return pa.timestamp(_UNITS[precision], tz="UTC")
    raise ValueError(f"column type {type_sql} is not one the sink writes")


class ArrowEncoder:
    """Columns (lists of Python values, in ``names`` order) into one Arrow IPC stream of one record batch."""

    def __init__(self, names: Sequence[str], types_sql: Sequence[str]) -> None:
        import pyarrow as pa

        self._pa = pa
        self._names = list(names)
        self._types = [arrow_type(type_sql) for type_sql in types_sql]
        self._schema = pa.schema(list(zip(self._names, self._types)))

    def encode(self, columns: Sequence[list[Any]]) -> bytes:
        """The stream's bytes; OverflowError, ValueError or TypeError for a value its column cannot hold."""
        if len(columns) != len(self._names):
            raise ValueError(f"{len(columns)} columns for {len(self._names)} names")
        pa = self._pa
        arrays = [pa.array(values, type=kind) for values, kind in zip(columns, self._types)]
        batch = pa.record_batch(arrays, schema=self._schema)
        out = io.BytesIO()
        with pa.ipc.new_stream(out, self._schema) as writer:
            writer.write_batch(batch)
        return out.getvalue()


def decode_rows(data: bytes) -> list[tuple[Any, ...]]:
    """Rows of a JSONCompact answer (nothing for a statement without one), as clickhouse-driver gives them."""
    if not data.strip():
        return []
    answer = orjson.loads(data)
    converters = [_converter(str(column["type"])) for column in answer.get("meta", [])]
    return [tuple(convert(value) for convert, value in zip(converters, row)) for row in answer.get("data", [])]


def _converter(type_sql: str) -> Callable[[Any], Any]:
    plain = _plain(type_sql)
    if _INT_RE.match(plain):
        return _maybe(int)  # 64-bit ones come quoted
    if plain.startswith("Float"):
        return _maybe(float)
    if (moment := _DATETIME_RE.match(plain)) is not None:
        name = moment["tz64"] or moment["tz"] or "UTC"
        zone = timezone.utc if name == "UTC" else ZoneInfo(name)
        return _maybe(lambda text: datetime.fromisoformat(str(text)).replace(tzinfo=zone))
    return lambda value: value


def _maybe(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)
