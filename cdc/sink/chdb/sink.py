"""The chDB sink: the ClickHouse sink's tables, DDL, queries and guarantees, on ClickHouse inside this process.

``chdb:///path/to/dir`` keeps the tables (current ClickHouse types: DateTime64,
LowCardinality) in that directory. Everything but the connection is the
ClickHouse sink's own code (cdc/sink/clickhouse/sink.py): one INSERT per batch
whose materialized view writes the progress rows after the events, the
high-water mark read from the progress table, hourly partitions pruned the same
way. What differs is where the process boundary is: a crash of ``cdc run`` is a
crash of its ClickHouse too, which the MergeTree parts survive (connection.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import structlog

from ...logs import quiet_logger
from ..clickhouse.admin import ClickHouseAdmin
from ..clickhouse.ddl import SchemaNames
from ..clickhouse.connection import Connection
from ..clickhouse.sink import ClickHouseSink
from ..clickhouse.stored import ClickHouseStoredIds
from .connection import ChdbConnection
from .url import parse_chdb_url


class ChdbSink(ClickHouseSink):
    """Opens (and creates) the directory; raises SinkConfigError, saying what to do, when it cannot."""

    def __init__(
        self, url: str, table: str = "events", *, log: Any = None, stream: int | None = 0,
        siblings: tuple[int, ...] = (),
    ) -> None:
        target = parse_chdb_url(url)
        names = SchemaNames(target.database, table)
        base_log = log if log is not None else structlog.get_logger("cdc.sink.chdb")
        bound_log = base_log.bind(chdb=str(target.path), database=target.database, table=table)
        conn = ChdbConnection(target)
        self.cluster = None  # one process, one copy: nothing to replicate
        try:
            version_text = str(conn.setup_query("SELECT version()")[0][0])
            self._bind(conn, target.url, names, version_text, bound_log, stream=stream, siblings=siblings)
        except BaseException:
            conn.close()
            raise

    def stored_ids(self, relation: str) -> ClickHouseStoredIds:
        # chDB opens a directory once per process: a comparison borrows the sink's own session.
        return ClickHouseStoredIds(_Borrowed(self._conn), self.names, relation)

    def __repr__(self) -> str:
        return f"ChdbSink({self.url!r}, table={self.names.plain.events!r})"


class ChdbAdmin(ClickHouseAdmin):
    """The read-only answers of the DBA commands, from the sink's own directory (so not while ``cdc run`` has it)."""

    def __init__(self, url: str, table: str = "events", *, log: Any = None) -> None:
        self.log = log if log is not None else quiet_logger()
        sink = ChdbSink(url, table, log=self.log, stream=None)  # every stream, as ClickHouseAdmin
        self._bind(sink, sink.connection, sink.names.plain.database)


class _Borrowed:
    """The sink's session lent to ``stored_ids``: results come whole (in-process), and closing it is the sink's job."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def query(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self._conn.query(query, params)

    def stream(self, query: str, params: dict[str, Any] | None = None) -> Iterator[tuple[Any, ...]]:
        yield from self._conn.query(query, params)

    def last_read(self) -> tuple[int, int]:
        return (0, 0)  # chDB reports no progress packets; verify's read figures stay those of PostgreSQL

    def close(self) -> None:
        pass
