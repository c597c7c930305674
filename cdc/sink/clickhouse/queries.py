"""The sink's statements for one set of table names, written once when the sink binds to them."""

from __future__ import annotations

from dataclasses import dataclass

from .ddl import DEAD_LETTER_COLUMNS, EVENTS_COLUMNS, PROGRESS_COLUMNS, SchemaNames
from .streams import STREAM

_NEWEST = "ORDER BY commit_lsn DESC, commit_seq DESC LIMIT 1"
_RECENT = ("SELECT unique_id FROM {} WHERE inserted_at >= toDateTime(%(since)s) AND unique_id != '' "
           "ORDER BY commit_lsn DESC, commit_seq DESC LIMIT %(limit)s")


@dataclass(frozen=True, slots=True)
class SinkQueries:
    insert_events: str
    insert_progress: str
    insert_dead_letters: str
    high_water: str
    latest: str
    newest_hour: str
    recent: str
    # The same from the events themselves: what a lost row's ledger entry cannot vouch for.
    held: str
    partitions: str

    @classmethod
    def for_names(cls, names: SchemaNames, *, stream_column: bool = False) -> SinkQueries:
        """``stream_column``: the INSERTs name the stream column (cdc/sink/clickhouse/streams.py); stream 0
        leaves it to its default, so its INSERTs are the same as on tables made before it existed."""
        extra = (STREAM,) if stream_column else ()
        return cls(
            insert_events=f"INSERT INTO {names.events} ({', '.join((*EVENTS_COLUMNS, *extra))}) VALUES",
            insert_progress=f"INSERT INTO {names.progress} ({', '.join((*PROGRESS_COLUMNS, *extra))}) VALUES",
            insert_dead_letters=f"INSERT INTO {names.dead_letter} ({', '.join((*DEAD_LETTER_COLUMNS, *extra))}) VALUES",
            high_water=f"SELECT commit_lsn, commit_seq FROM {names.progress} {_NEWEST}",
            latest=f"SELECT commit_lsn, committed_at FROM {names.progress} {_NEWEST}",
            newest_hour=f"SELECT toUInt32(toStartOfHour(inserted_at)) FROM {names.progress} {_NEWEST}",
            recent=_RECENT.format(names.progress),
            held=_RECENT.format(names.events),
            partitions="SELECT DISTINCT partition_id FROM system.parts "
                       "WHERE database = %(database)s AND table = %(table)s AND active",
        )
