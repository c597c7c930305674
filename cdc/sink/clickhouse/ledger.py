"""Does the ledger claim more than the data holds? The progress table against the events table, in one query.

The progress table (the high-water mark and the dedup window's ids) is filled
by a materialized view on the events' INSERT, so a TRUNCATE, a DROP PARTITION,
an ALTER ... DELETE or a restore of the events table leaves it claiming rows
that are gone: ``cdc run`` would skip them when the slot sends them again.

The check: the ledger's newest ids (by position, at most ``RECENT``) must
all be in the events table among the rows inserted since the oldest of them.
A row delivered twice keeps its later copy when the ReplacingMergeTree
collapses it, so a re-delivery never looks like a loss. It reads that many
ledger rows, the events table's ``inserted_at`` column and the recent rows'
``unique_id``: cheap enough for every start-up and ``cdc status``. A loss of
older rows (a DROP PARTITION of last year) is for ``cdc verify`` to find.
"""

from __future__ import annotations

from typing import Any

from ..base import LedgerCheck
from .ddl import SchemaNames


RECENT = 100_000


def check_ledger(conn: Any, names: SchemaNames, recent: int = RECENT) -> LedgerCheck:
    """Run the check with ``conn.query`` (a ClickHouseConnection)."""
    newest = (f"SELECT unique_id, inserted_at FROM {names.progress} WHERE unique_id != '' "
              f"ORDER BY commit_lsn DESC, commit_seq DESC LIMIT {int(recent)}")
    query = (
        f"SELECT uniqExact(unique_id), uniqExactIf(unique_id, unique_id NOT IN ("
        f"SELECT unique_id FROM {names.events} WHERE inserted_at >= (SELECT min(inserted_at) FROM ({newest})))) "
        f"FROM ({newest})"
    )
    (total, absent), = conn.query(query)
    plain = names.plain
    warning = None
    if absent:
        warning = (f"ClickHouse's ledger {plain.database}.{plain.progress} records {absent} of its {total} recent "
                   f"events that {plain.database}.{plain.events} no longer holds (a TRUNCATE, DROP PARTITION, "
                   "ALTER ... DELETE or restore?): run `cdc verify --repair` to deliver them again")
    return LedgerCheck(int(total), int(absent), warning)
