"""The end of ``cdc demo``: an analytics query over what ClickHouse holds, and the exactly-once check.

The check compares three accounts of the same events: the unique_ids the load
committed (it knows which transactions rolled back), the distinct unique_ids in
PostgreSQL's outbox (which holds committed rows only, retries included), and the
events in ClickHouse read with FINAL (a re-delivered row counts once there).
Exactly once means all three are the same set.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from ..settings import Settings
from ..sink import open_sink
from ..sink.clickhouse.sink import ClickHouseSink

PER_MINUTE_SQL = (
    "SELECT toStartOfMinute(occurred_at) AS minute, event_type, count() AS events "
    "FROM {events} FINAL GROUP BY minute, event_type ORDER BY minute, event_type"
)


@dataclass(frozen=True)
class Outcome:
    per_minute: list[tuple[datetime, str, int]]
    committed_ids: int  # distinct unique_ids the load committed
    outbox_ids: int  # distinct unique_ids in the outbox
    outbox_rows: int  # rows in the outbox: retries of one event included
    stored_events: int  # rows in ClickHouse's events table, FINAL
    stored_ids: int  # distinct unique_ids among them
    missing: list[str]  # committed but not in ClickHouse (a sample)
    unexpected: list[str]  # in ClickHouse but never committed (a sample)

    @property
    def exactly_once(self) -> bool:
        return (not self.missing and not self.unexpected
                and self.committed_ids == self.outbox_ids == self.stored_events == self.stored_ids)

    def as_dict(self) -> dict[str, Any]:
        return {
            "exactly_once": self.exactly_once, "committed_unique_ids": self.committed_ids,
            "outbox_unique_ids": self.outbox_ids, "outbox_rows": self.outbox_rows,
            "clickhouse_events": self.stored_events, "clickhouse_unique_ids": self.stored_ids,
            "missing": self.missing, "unexpected": self.unexpected,
            "events_per_type_per_minute": [
                {"minute": minute.isoformat(), "event_type": kind, "events": count}
                for minute, kind, count in self.per_minute
            ],
        }


def examine(settings: Settings, committed: frozenset[str], *, log: Any) -> Outcome:
    """Read ClickHouse and PostgreSQL once the run has stopped (a chDB directory is then free to open)."""
    sink = open_sink(settings.sink_url, settings, log=log)
    try:
        if not isinstance(sink, ClickHouseSink):  # chDB's is one too
            raise TypeError(f"the demo reads ClickHouse, not {sink!r}")
        query = sink.connection.query
        events = sink.names.events
        per_minute = [(row[0], str(row[1]), int(row[2])) for row in query(PER_MINUTE_SQL.format(events=events))]
        stored = [str(uid) for (uid,) in query(f"SELECT unique_id FROM {events} FINAL")]
    finally:
        sink.close()
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        table = sql.Identifier(settings.outbox_schema, settings.outbox_table)
        outbox = {str(uid) for (uid,) in conn.execute(sql.SQL("SELECT DISTINCT unique_id FROM {}").format(table))}
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    stored_set = set(stored)
    return Outcome(
        per_minute=per_minute, committed_ids=len(committed), outbox_ids=len(outbox),
        outbox_rows=int(rows[0]) if rows else 0, stored_events=len(stored), stored_ids=len(stored_set),
        missing=sorted((committed | outbox) - stored_set)[:5], unexpected=sorted(stored_set - committed)[:5],
    )


def per_minute_table(outcome: Outcome) -> list[str]:
    """The analytics answer as text: one line per minute, a column per event type."""
    kinds = sorted({kind for _, kind, _ in outcome.per_minute})
    by_minute: dict[datetime, dict[str, int]] = {}
    for minute, kind, count in outcome.per_minute:
        by_minute.setdefault(minute, {})[kind] = count
    width = max([len(kind) for kind in kinds] + [8])
    lines = ["minute (UTC)      " + "".join(f"{kind:>{width + 2}}" for kind in kinds)]
    for minute in sorted(by_minute):
        counts = by_minute[minute]
        lines.append(f"{minute:%Y-%m-%d %H:%M}  " + "".join(f"{counts.get(kind, 0):>{width + 2},}" for kind in kinds))
    return lines
