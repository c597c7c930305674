"""What the admin commands read from ClickHouse (the ``SinkAdmin`` protocol): the sink's own answers, plus a
few read-only lookups.

Opening a ``ClickHouseAdmin`` connects like ``cdc run`` does (same URL,
password handling and errors) but creates nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ...logs import quiet_logger
from ..base import LatestCommit, LedgerCheck
from .connection import ClickHouseConnection
from .ddl import DEAD_LETTER_COLUMNS, EVENTS_COLUMNS, PROGRESS_COLUMNS
from .ledger import check_ledger
from .connection import Connection
from .sink import ClickHouseSink
from .streams import STREAM, StreamQueries, StreamSummary
from .url import parse_clickhouse_url
from .replicas import ReplicaHealth, replica_health


class ClickHouseAdmin:
    """The sink's ClickHouse, for reading. Raises SinkConfigError when unreachable (never the password)."""

    def __init__(
        self, url: str, table: str = "events", *, password: str | None = None, timeout: float | None = None,
        log: Any = None,
    ) -> None:
        self.log = log if log is not None else quiet_logger()
        sink = ClickHouseSink(
            url, table, password=password, log=self.log, connect_timeout=timeout, send_receive_timeout=timeout,
            stream=None,  # every stream: the DBA commands look at the whole table
        )
        target = parse_clickhouse_url(url, password=password)
        conn = ClickHouseConnection(target, log=self.log, connect_timeout=timeout, send_receive_timeout=timeout)
        self._bind(sink, conn, target.database)

    def _bind(self, sink: ClickHouseSink, conn: Connection, database: str) -> None:
        """Shared with sinks that reach ClickHouse another way (cdc/sink/chdb)."""
        self.sink = sink
        self.names = sink.names
        self.url = sink.url
        self.version = ".".join(map(str, sink.server_version))
        self._conn = conn
        self.database = database

    # -- the sink's own answers ------------------------------------------------------------

    def high_water_mark(self) -> tuple[int, int] | None:
        return self.sink.high_water_mark()

    def latest(self) -> LatestCommit | None:
        return self.sink.latest()

    def version_warning(self) -> tuple[str, str] | None:
        if self.sink.capabilities.modern:
            return None
        return (f"{self.version}: timestamps keep whole seconds only",
                "upgrade ClickHouse to 20.1+ for microsecond timestamps (DateTime64)")

    def counts(self) -> tuple[int, int]:
        """(events, dead letters) as stored: a row delivered twice counts twice until merged."""
        return self.sink.count_events(), self.sink.count_dead_letters()

    # -- lookups ---------------------------------------------------------------------------

    def stream_summaries(self, window_seconds: int = 60) -> dict[int, StreamSummary]:
        """Per stream (slot): its high-water mark, newest commit and insert times, events in the last window.

        Empty for tables made before sharding (every row there is stream 0's: see high_water_mark()).
        """
        columns = self._conn.query(
            "SELECT count() FROM system.columns WHERE database = %(db)s AND table = %(table)s AND name = %(name)s",
            {"db": self.database, "table": self.names.plain.progress, "name": STREAM},
        )
        if not columns or not columns[0][0]:
            return {}
        query = StreamQueries(self.names, 0, filtered=True).summary
        rows = self._conn.query(query, {"window": int(window_seconds)})
        return {
            int(stream): StreamSummary(int(stream), (int(hwm[0]), int(hwm[1])), committed, inserted, int(recent))
            for stream, hwm, committed, inserted, recent in rows
        }

    def last_inserted_at(self) -> datetime | None:
        """When the sink last stored an event (the progress table's newest inserted_at), by its clock."""
        rows = self._conn.query(f"SELECT count(), max(inserted_at) FROM {self.names.progress}")
        return rows[0][1] if rows and rows[0][0] else None

    def schema_problems(self) -> list[str]:
        """What is missing from the sink's tables: [] when everything ``cdc run`` needs is there."""
        plain = self.names.plain
        wanted = {
            plain.events: EVENTS_COLUMNS, plain.dead_letter: DEAD_LETTER_COLUMNS, plain.progress: PROGRESS_COLUMNS,
        }
        rows = self._conn.query(
            "SELECT table, name FROM system.columns WHERE database = %(db)s AND table IN %(tables)s",
            {"db": self.database, "tables": tuple(wanted)},
        )
        present: dict[str, set[str]] = {}
        for table, column in rows:
            present.setdefault(str(table), set()).add(str(column))
        problems = []
        for table, columns in wanted.items():
            if table not in present:
                problems.append(f"table {self.database}.{table} is missing")
                continue
            missing = [c for c in columns if c not in present[table]]
            if missing:
                problems.append(f"{self.database}.{table} lacks column(s) {', '.join(missing)}")
        views = self._conn.query(
            "SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(name)s",
            {"db": self.database, "name": plain.progress_mv},
        )
        if not views or not views[0][0]:
            problems.append(f"materialized view {self.database}.{plain.progress_mv} is missing")
        return problems

    def replicas(self) -> list[ReplicaHealth]:
        """Replica health of the sink's tables; [] when they are not replicated."""
        plain = self.names.plain
        return replica_health(self._conn.query, self.database, (plain.events, plain.dead_letter, plain.progress))

    def has_event(self, unique_id: str, event_type: str | None = None, occurred_at: datetime | None = None) -> bool:
        """Whether ClickHouse holds an event with this unique_id (first through the sort key, then by a scan)."""
        if event_type is not None and occurred_at is not None:
            rows = self._conn.query(
                f"SELECT count() FROM {self.names.events} WHERE event_type = %(type)s "
                "AND occurred_at >= toDateTime(%(lo)s) AND occurred_at <= toDateTime(%(hi)s) AND unique_id = %(uid)s",
                {"type": event_type, "uid": unique_id,
                 "lo": int((occurred_at - timedelta(days=1)).timestamp()),
                 "hi": int((occurred_at + timedelta(days=1)).timestamp())},
            )
            if rows and rows[0][0]:
                return True
        rows = self._conn.query(
            f"SELECT count() FROM {self.names.events} WHERE unique_id = %(uid)s", {"uid": unique_id}
        )
        return bool(rows and rows[0][0])

    def has_dead_letter(self, relation: str, outbox_id: int) -> bool:
        """Whether the dead-letter table holds the outbox row with this id (its row_json carries "id":"<id>")."""
        rows = self._conn.query(
            f"SELECT count() FROM {self.names.dead_letter} WHERE relation = %(rel)s AND position(row_json, %(needle)s) > 0",
            {"rel": relation, "needle": f'"id":"{int(outbox_id)}"'},
        )
        return bool(rows and rows[0][0])

    def ledger_check(self) -> LedgerCheck:
        """Whether the progress ledger claims recent events the events table no longer holds."""
        return check_ledger(self._conn, self.names)

    def close(self) -> None:
        self._conn.close()
        self.sink.close()

    def __enter__(self) -> ClickHouseAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
