"""The first copy: a new slot, and the rows already in the outbox when it was made, delivered first.

CREATE_REPLICATION_SLOT exports a snapshot taken exactly at the slot's
consistent point (cdc.pg.snapshot): rows visible in it are read from the table
and go through the collector like streamed ones, at positions below every
streamed one (cdc.core.positions); every later commit comes from the slot. No
gap, no overlap. Only the rows the sink lacks are copied (cdc/pipeline/gap.py:
after a lost slot, the gap rather than the whole outbox), or every row when it
holds none. A copy cut short is recognised by its position being the newest
stored, and is redone from a new slot (it then copies what the first missed).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Final

from ..core.handoff import nothing
from ..core.outbox import outbox_relation
from ..core.positions import SNAPSHOT_LSN
from ..errors import PipelineError
from ..lsn import format_lsn
from ..pg import snapshot
from ..pg.connect import Conn, connect
from ..pg.reconcile import OutboxSnapshot
from ..pg.replication import ReplicationConnection
from ..pg.slots import drop_inactive_slot
from ..pgoutput.messages import pg_now_micros
from ..sink.base import StoredIds
from .gap import Gap, describe
from .parts import Parts

_COPY_RUN: Final = 4096


def interrupted(high_water_mark: tuple[int, int] | None) -> bool:
    """Snapshot rows are the newest stored, and no completion mark follows them."""
    return high_water_mark is not None and high_water_mark[0] == SNAPSHOT_LSN


def recover_interrupted(p: Parts, *, create_slot: bool) -> None:
    """Drop the slot of an interrupted copy, so that it is made again and the copy redone (with --create-slot)."""
    s = p.settings
    if not create_slot:
        raise PipelineError(
            "the first copy of the outbox into ClickHouse was interrupted: run `cdc run --create-slot` "
            "to copy it again from a new slot (rows already copied are deduplicated)"
        )
    p.log.warning("the first copy was interrupted: recreating the slot and copying again", slot=s.slot)
    with connect(s.pg_dsn) as conn:
        drop_inactive_slot(conn, s.slot)


def create_slot_and_copy(p: Parts) -> None:
    """Create the slot, deliver the outbox's rows from its snapshot, mark the copy done."""
    s = p.settings
    repl = ReplicationConnection.connect(s.pg_dsn, application_name="cdc-create-slot")
    try:
        new = snapshot.create_slot(repl, s.slot, export_snapshot=True)
        p.log.info("slot created", slot=s.slot, consistent_point=format_lsn(new.consistent_point))
        p.tracker.advance_idle(new.consistent_point)
        copied = 0
        if new.snapshot_name is not None:
            copied = _copy(p, new.snapshot_name, new.consistent_point)
        if copied:
            # Without this mark a copy cut short would look finished; see ``interrupted``.
            p.sink.mark_position(new.consistent_point - 1, 0)
        p.collector.skip_up_to(p.sink.high_water_mark())
        p.log.info("snapshot delivered", rows=copied)
    finally:
        repl.close()


def _copy(p: Parts, snapshot_name: str, consistent_point: int) -> int:
    s = p.settings
    relation = outbox_relation(s.outbox_schema, s.outbox_table)
    commit_time = pg_now_micros()
    copied = 0
    # Rows already in the sink (an older slot's, an interrupted copy's) are
    # recognised by unique_id, not by position: positions of this copy are new.
    p.collector.skip_up_to(None)
    with connect(s.pg_dsn) as conn, p.sink.stored_ids(f"{s.outbox_schema}.{s.outbox_table}") as stored:
        rows = _rows_to_copy(p, conn, stored, snapshot_name, consistent_point)
        while run := list(islice(rows, _COPY_RUN)):
            p.collector.rows(relation, run, SNAPSHOT_LSN, copied, commit_time)
            copied += len(run)
    p.handoff.store_all(while_waiting=nothing)
    return copied


def _rows_to_copy(
    p: Parts, conn: Conn, stored: StoredIds, snapshot_name: str, consistent_point: int,
) -> Iterator[tuple[bytes | None, ...]]:
    """The snapshot's rows the sink lacks, or all of them when it holds none of the outbox."""
    s = p.settings
    outbox = OutboxSnapshot(conn, s.outbox_schema, s.outbox_table, snapshot_name=snapshot_name)
    outbox.open()
    try:
        gap = Gap(outbox, stored, consistent_point)
        p.log.info("first copy: what the sink holds of the outbox", **describe(gap.plan))
        if not gap.plan.whole:
            for values, _, _ in gap.rows():
                yield values
            return
    finally:
        outbox.close()
    yield from snapshot.outbox_rows(conn, snapshot_name, s.outbox_schema, s.outbox_table)
