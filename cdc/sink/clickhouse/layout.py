"""What the sink's tables look like on the server, checked against what the sink needs.

The write path follows the columns as they are, not as this version of cdc
would create them: a table made as ``DateTime`` on ClickHouse 18.16 keeps
whole seconds after the server is upgraded, and must be written as such.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ..base import SinkConfigError
from .ddl import DEAD_LETTER_COLUMNS, EVENTS_COLUMNS, PROGRESS_COLUMNS, Capabilities, SchemaNames
from .streams import has_streams
from .timestamps import TimestampType

Query = Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]

_TABLES_SQL: Final = "SELECT name, engine FROM system.tables WHERE database = %(database)s AND name IN %(names)s"
_COLUMNS_SQL: Final = (
    "SELECT table, name, type FROM system.columns WHERE database = %(database)s AND table IN %(names)s"
)


@dataclass(frozen=True, slots=True)
class Layout:
    """The timestamp columns the sink writes, as the server has them."""

    occurred_at: TimestampType
    committed_at: TimestampType
    dead_letter_committed_at: TimestampType
    streams: bool = True  # every table carries the slot's stream (see cdc/sink/streams.py)

    @property
    def bounds(self) -> tuple[datetime, datetime]:
        """The range every timestamp column can hold: the intersection of theirs."""
        types = (self.occurred_at, self.committed_at, self.dead_letter_committed_at)
        return max(t.bounds[0] for t in types), min(t.bounds[1] for t in types)


class SchemaInspector:
    """Reads the sink's tables from ``system.*`` and says what is wrong with them, in one line."""

    def __init__(self, names: SchemaNames, capabilities: Capabilities, *, replicated: bool = False) -> None:
        self.names = names
        self.capabilities = capabilities
        # --clickhouse-cluster: the tables must be Replicated, or the other replicas never see a row.
        self.replicated = replicated
        plain = names.plain
        self._required: Mapping[str, tuple[str, ...]] = {
            plain.events: EVENTS_COLUMNS,
            plain.dead_letter: DEAD_LETTER_COLUMNS,
            plain.progress: PROGRESS_COLUMNS,
        }
        # Engine name suffixes: Replicated* and Shared* variants are as good.
        self._engines: Mapping[str, str] = {
            plain.events: "ReplacingMergeTree",
            plain.dead_letter: "ReplacingMergeTree",
            plain.progress: "MergeTree",
            plain.progress_mv: "MaterializedView",
        }

    def engines(self, query: Query, tables: tuple[str, ...]) -> dict[str, str]:
        rows = query(_TABLES_SQL, {"database": self.names.plain.database, "names": tables})
        return {str(name): str(engine) for name, engine in rows}

    def columns(self, query: Query, tables: tuple[str, ...]) -> dict[str, dict[str, str]]:
        rows = query(_COLUMNS_SQL, {"database": self.names.plain.database, "names": tables})
        found: dict[str, dict[str, str]] = {table: {} for table in tables}
        for table, name, type_sql in rows:
            found[str(table)][str(name)] = str(type_sql)
        return found

    def verify(self, query: Query, tables: tuple[str, ...]) -> dict[str, dict[str, str]]:
        """Columns of ``tables``; SinkConfigError when one is missing, of another engine or lacks columns."""
        engines = self.engines(query, tables)
        for table in tables:
            where = f"ClickHouse table {self.names.plain.database}.{table}"
            engine = engines.get(table)
            if engine is None:
                raise SinkConfigError(f"{where} does not exist; run `cdc migrate` to create it")
            wanted = self._engines[table]
            if not engine.endswith(wanted):
                raise SinkConfigError(
                    f"{where} has engine {engine} but cdc needs {wanted}: "
                    "drop it so cdc can create it, or point cdc at another table name"
                )
            if self.replicated and wanted != "MaterializedView" and not engine.startswith("Replicated"):
                raise SinkConfigError(
                    f"{where} has engine {engine}, not replicated, but --clickhouse-cluster is set: "
                    "point cdc at another table name (`cdc migrate` makes it Replicated ON CLUSTER), "
                    "or drop --clickhouse-cluster"
                )
        columns = self.columns(query, tables)
        for table in tables:
            missing = [name for name in self._required.get(table, ()) if name not in columns[table]]
            if missing:
                raise SinkConfigError(
                    f"ClickHouse table {self.names.plain.database}.{table} lacks columns "
                    f"{', '.join(missing)}: add them with ALTER TABLE ... ADD COLUMN, "
                    "or point cdc at another table name"
                )
        return columns

    def layout(self, columns: Mapping[str, Mapping[str, str]]) -> Layout:
        plain = self.names.plain
        return Layout(
            occurred_at=self._timestamp(columns, plain.events, "occurred_at"),
            committed_at=self._timestamp(columns, plain.events, "committed_at"),
            dead_letter_committed_at=self._timestamp(columns, plain.dead_letter, "committed_at"),
            streams=has_streams(self.names, columns),
        )

    def default_layout(self) -> Layout:
        """The layout ensure_schema() would create on this server."""
        made = TimestampType(self.capabilities.timestamp_sql, self.capabilities.version)
        return Layout(occurred_at=made, committed_at=made, dead_letter_committed_at=made)

    def _timestamp(self, columns: Mapping[str, Mapping[str, str]], table: str, column: str) -> TimestampType:
        type_sql = columns[table][column]
        try:
            return TimestampType(type_sql, self.capabilities.version)
        except ValueError:
            raise SinkConfigError(
                f"ClickHouse column {self.names.plain.database}.{table}.{column} is {type_sql}, "
                "but cdc needs DateTime or DateTime64: change its type or point cdc at another table name"
            ) from None
