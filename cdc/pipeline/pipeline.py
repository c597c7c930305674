"""A run of one slot's pipeline: check the server, learn where the sink stands, copy if the slot is new, stream.

The parts come from ``build`` (cdc/pipeline/build.py); ``Pipeline.run`` is
``cdc run``'s life: preflight, the high-water mark and the dedup window from
the sink, the first copy (cdc/pipeline/snapshot.py), then the stream
(cdc/pipeline/stream.py) until stopped, and a final flush and acknowledgement.
"""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import dataclass
from itertools import chain

from ..core.collector import Counters
from ..core.handoff import nothing
from ..errors import PipelineError
from ..lsn import format_lsn, parse_lsn
from ..pg import preflight
from ..pg.connect import Conn, connect
from ..sink.base import SinkError
from . import snapshot
from .monitor import SlotMonitor
from .parts import Parts
from .stream import Stream

__all__ = ["Pipeline", "PipelineError", "RunSummary"]


@dataclass(frozen=True, slots=True)
class RunSummary:
    acknowledged_lsn: int
    counters: Counters
    rows_stored: int
    dead_letters_stored: int


class Pipeline:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def run(
        self, *, until: str | None = None, create_slot: bool = False, from_lsn: int | None = None,
        floor: tuple[int, int] | None = None, stop_before: int | None = None,
    ) -> RunSummary:
        """Stream until stopped (or ``until``); ``from_lsn`` replays what the slot still holds after it.

        A sharded generation's shards skip up to ``floor`` (what the previous generation delivered); the
        previous generation's drain delivers only what was committed before ``stop_before``, and ends there.
        """
        p = self.parts
        s = p.settings
        try:
            with connect(s.pg_dsn) as conn:
                info = preflight.check_for_run(conn, s, create_slot=create_slot, from_lsn=from_lsn)
                until_lsn = _resolve_until(conn, until) if stop_before is None else stop_before
            hwm = p.sink.high_water_mark()
            if snapshot.interrupted(hwm):
                snapshot.recover_interrupted(p, create_slot=create_slot)
                info = None
            # A replay and a new slot's copy must restore what the sink lost, so their dedup window comes
            # from what it holds, not from the ledger of what it once stored.
            restoring = from_lsn is not None or info is None
            self._check_ledger(restoring=restoring)
            self.remember_recent_ids(held=restoring)
            p.tracker.advance_idle(0 if info is None else info.confirmed_flush_lsn or 0)
            if from_lsn is not None:
                # Deliver again what is already stored: deduplication and the
                # ReplacingMergeTree keep it from counting twice.
                hwm = None
                p.log.info("replaying", from_lsn=format_lsn(from_lsn))
            if floor is not None and (hwm is None or floor > hwm):
                hwm = floor
            p.collector.skip_up_to(hwm)
            p.collector.stop_before = stop_before
            stream = Stream(p, until_lsn=until_lsn, start_lsn="0/0" if from_lsn is None else format_lsn(from_lsn))
            if info is None:
                snapshot.create_slot_and_copy(p)
            monitor = SlotMonitor(
                connect=lambda: connect(s.pg_dsn, application_name="cdc-monitor"), slot=s.slot, metrics=p.metrics,
                log=p.log, status_interval=s.status_interval, heartbeat_interval=s.heartbeat_interval,
            )
            monitor.start()  # the slot exists now
            try:
                stream.run()
                stream.finish()
            finally:
                monitor.close()
        finally:
            p.flusher.close()
        return RunSummary(p.tracker.safe_lsn, p.collector.counters, p.flusher.rows_stored, p.flusher.dead_letters_stored)

    def remember_recent_ids(self, *, held: bool = False) -> None:
        """Rebuild the dedup window from the ids the sink stored last (``held``: that it still holds)."""
        p = self.parts
        s = p.settings
        if s.dedup_window <= 0:
            return
        started, cpu = time.perf_counter(), time.process_time()
        # Streamed: a full window's ids never sit in memory beside the window itself.
        # Every id is stamped with the rebuild's start, which is after the sink
        # stored it (it was read back from the sink): the stamp can only keep an
        # id longer than its true age, never shorter.
        # closing(): the stream holds the sink's connection until it ends; a stop
        # (SIGTERM) in the middle must release it before the sink is closed.
        with closing(p.sink.recent_unique_id_blocks(s.dedup_window, s.dedup_max_age, held=held)) as blocks:
            ids = p.dedup.remember(chain.from_iterable(blocks), time.monotonic())
        p.log.info("dedup window rebuilt", ids=ids, source="events" if held else "ledger",
                   seconds=round(time.perf_counter() - started, 3), cpu_s=round(time.process_time() - cpu, 3))

    def _check_ledger(self, *, restoring: bool) -> None:
        """Say so when the sink's ledger claims recent events it no longer holds (the ledger never outranks the
        data): a normal start skips what the ledger claims, so those events stay lost until repaired."""
        p = self.parts
        try:
            problem = p.sink.ledger_warning()
        except SinkError as exc:
            p.log.warning("could not compare the ledger with the events", error=str(exc))
            return
        if problem is not None:
            what = ("this run restores those the slot or the outbox still holds" if restoring
                    else "cdc run skips them: repair first")
            p.log.warning(f"the ledger claims events the sink no longer holds; {what}", problem=problem)

    def store_all(self) -> None:
        """Hand off what is buffered and wait until it is stored (no replication connection to keep informed)."""
        self.parts.handoff.store_all(while_waiting=nothing)

    def abort(self) -> None:
        """Give up on unstored batches (second signal): the run ends without acknowledging them."""
        self.parts.stop.set()
        self.parts.flusher.abort()

    def close(self) -> None:
        """End the flusher's thread (it waits for nothing more)."""
        self.parts.flusher.close()


def _resolve_until(conn: Conn, until: str | None) -> int | None:
    if until is None:
        return None
    if until == "current":
        return preflight.current_wal_lsn(conn)
    return parse_lsn(until)
