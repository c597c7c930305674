"""Does the ledger claim more than the data holds? The progress table against the events table, in one query.

The progress table (the high-water mark and the dedup window's ids) is filled
by a materialized view on the events' INSERT, so a TRUNCATE, a DROP PARTITION,
an ALTER ... DELETE or a restore of the events table leaves it claiming rows
that are gone: ``cdc run`` would skip them when the slot sends them again.

The check: every unique_id the ledger still records (its last hours) must be
in the events table among the rows inserted since the ledger's oldest entry.
A row delivered twice keeps its later copy when the ReplacingMergeTree
collapses it, so a re-delivery never looks like a loss. It reads the events
table's ``inserted_at`` column and the recent rows' ``unique_id``; losses
older than the ledger's hours are for ``cdc verify`` to find.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..sink.ddl import SchemaNames


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    table: str          # database.events
    progress: str       # database.events_cdc_progress
    recorded: int       # distinct unique_ids the ledger records
    absent: int         # ... that the events table does not hold

    @property
    def warning(self) -> str | None:
        if not self.absent:
            return None
        return (f"ClickHouse's ledger {self.progress} records {self.absent} of its {self.recorded} recent events "
                f"that {self.table} no longer holds (a TRUNCATE, DROP PARTITION, ALTER ... DELETE or restore?): "
                "run `cdc verify --repair` to deliver them again")

    def as_dict(self) -> dict[str, Any]:
        return {"recorded": self.recorded, "absent": self.absent, "warning": self.warning}


def check_ledger(conn: Any, names: SchemaNames) -> LedgerCheck:
    """Run the check with ``conn.query`` (a ClickHouseConnection)."""
    recorded = f"SELECT DISTINCT unique_id FROM {names.progress} WHERE unique_id != ''"
    oldest = f"SELECT min(inserted_at) FROM {names.progress} WHERE unique_id != ''"
    query = (
        f"SELECT count(), countIf(unique_id NOT IN (SELECT unique_id FROM {names.events} "
        f"WHERE inserted_at >= ({oldest}))) FROM ({recorded})"
    )
    (total, absent), = conn.query(query)
    plain = names.plain
    return LedgerCheck(f"{plain.database}.{plain.events}", f"{plain.database}.{plain.progress}", int(total), int(absent))
