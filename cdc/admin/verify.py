"""``cdc verify``: prove that ClickHouse holds what the outbox holds, by buckets of checksums computed on each server.

1. Snapshot the outbox (REPEATABLE READ) and read the WAL position W in it:
   every row the snapshot sees was committed before W.
2. Per bucket (cdc/core/reconcile.py), the count and checksum of the
   distinct unique_ids in scope, computed by PostgreSQL (cdc/pg/reconcile.py).
3. Delivery: ``cdc run`` has handled every transaction committed before the
   slot's confirmed position, and before ClickHouse's high-water mark (it
   stores in commit order). When neither has reached W and the slot is in use,
   wait (up to ``--wait``) for them to.
4. The same per-bucket figures, computed by ClickHouse (cdc/sink/clickhouse/stored.py).
5. For the buckets that differ only, both servers stream their sorted hashes
   (8 bytes an id), merged here: an id the outbox has and ClickHouse lacks is
   missing; one ClickHouse has in scope and the outbox lacks is unexpected.
6. A missing id is in flight, not missing, when delivery has not reached W
   and the slot still holds its row after the high-water mark (read from a
   temporary copy of the slot, cdc/pg/pending.py). When that cannot be
   read, it is undetermined. A slot that is gone or invalidated holds nothing:
   then every absent id is missing.
7. Unexpected ids whose outbox row exists now (committed after the snapshot)
   are dropped; the first few of each class are named.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from ..core.missing import MissingRows
from ..core.positions import is_synthetic
from ..core.reconcile import BUCKETS, Missing, StoredScope, Unexpected, chunks, differing, id_hash, merge
from ..errors import ReconcileError
from ..lsn import format_lsn, parse_lsn
from ..pg.connect import Conn, connect
from ..pg.outbox_range import timestamp
from ..pg.pending import Pending, read_pending
from ..pg.reconcile import OutboxSnapshot, OutboxSums, current_unique_ids
from ..pg.slots import SlotRow, get_slot
from ..settings import Settings
from ..sink import open_sink
from ..sink.base import Sink, StoredIds
from .verify_report import Report

_RECHECK_LIMIT: Final = 100_000
_POLL: Final = 0.2


class Progress(Protocol):
    def phase(self, name: str, total: int | None = None) -> None: ...
    def advance(self, n: int) -> None: ...


class _Silent:
    def phase(self, name: str, total: int | None = None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    since: str | None = None
    from_lsn: int | None = None
    wait: float = 30.0            # seconds to wait for delivery to pass the snapshot, and to read the slot
    samples: int = 10             # ids named per class
    chunk_rows: int = 4_000_000   # ids per drill-down pass on each server (bounds their memory; each pass scans)
    keep_missing: bool = False    # remember every missing row (for --repair)


@dataclass(frozen=True, slots=True)
class Delivery:
    """How far ``cdc run`` has handled the stream: the slot's confirmed position and ClickHouse's high-water mark."""

    slot_name: str
    slot: SlotRow | None
    high_water: tuple[int, int] | None
    wal_now: int  # the server's WAL position, read after the high-water mark

    @property
    def slot_holds_rows(self) -> bool:
        return self.slot is not None and not self.slot.invalidated

    @property
    def impossible(self) -> bool:
        """A high-water mark past the server's WAL position: set by a row no transaction wrote."""
        return self.high_water is not None and self.high_water[0] > self.wal_now

    @property
    def streamed(self) -> tuple[int, int] | None:
        hwm = self.high_water
        return None if hwm is None or is_synthetic(hwm[0]) or self.impossible else hwm

    def reached(self, lsn: int) -> bool:
        confirmed = self.slot.confirmed_flush_lsn if self.slot is not None else None
        if confirmed is not None and parse_lsn(confirmed) >= lsn:
            return True
        return self.streamed is not None and self.streamed[0] >= lsn

    def describe(self, lsn: int) -> str:
        if self.slot is None:
            where = f"slot {self.slot_name} does not exist: rows not in ClickHouse will not arrive by themselves"
        elif self.slot.invalidated:
            where = f"slot {self.slot_name} is invalidated: rows not in ClickHouse will not arrive by themselves"
        else:
            state = "in use" if self.slot.active else "idle"
            where = f"slot {self.slot_name} ({state}) confirmed {self.slot.confirmed_flush_lsn}"
        if self.streamed is not None:
            where += f"; ClickHouse's newest streamed event {format_lsn(self.streamed[0])} #{self.streamed[1]}"
        if self.impossible and self.high_water is not None:
            where += (f"; ClickHouse's high-water mark {format_lsn(self.high_water[0])} is past the server's WAL "
                      "position, so `cdc run` skips every row: an unexpected row set it")
        reached = "has passed" if self.reached(lsn) else "has not reached"
        return f"{where}; delivery {reached} the snapshot"


@dataclass(slots=True)
class _Drill:
    missing_rows: MissingRows = field(default_factory=MissingRows)  # when asked for (--repair)
    unexpected: list[tuple[int, int]] = field(default_factory=list)
    samples: dict[str, list[int]] = field(default_factory=dict)


class Verification:
    """One comparison. A context manager: entering connects to both servers; the snapshot stays open until exit,
    so ``--repair`` reads the missing rows from the very snapshot they were found missing in."""

    def __init__(self, settings: Settings, options: VerifyOptions, *, log: Any, progress: Progress | None = None) -> None:
        self.s = settings
        self.options = options
        self.log = log
        self.progress: Progress = progress or _Silent()
        self.missing = MissingRows()
        self.snapshot_lsn = 0
        self.low_id: int | None = None
        self.since_seconds: int | None = None
        self.upper_lsn = 0
        self.unexpected: list[tuple[int, int]] = []  # (hash, outbox id claimed) of every unexpected id
        self._pg: Conn | None = None
        self._stored: StoredIds | None = None
        self.sink: Sink | None = None

    def __enter__(self) -> Verification:
        s = self.s
        try:
            self.sink = open_sink(s.sink_url, s, log=self.log)
            self._stored = self.sink.stored_ids(f"{s.outbox_schema}.{s.outbox_table}")
            self._pg = connect(s.pg_dsn, application_name="cdc-verify")
            self.snapshot = OutboxSnapshot(self._pg, s.outbox_schema, s.outbox_table)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for closing in (self._pg, self._stored, self.sink):
            if closing is not None:
                closing.close()
        self._pg = self._stored = self.sink = None

    @property
    def pg(self) -> Conn:
        assert self._pg is not None
        return self._pg

    @property
    def stored(self) -> StoredIds:
        assert self._stored is not None
        return self._stored

    # -- the comparison ---------------------------------------------------------------------------------------------

    def run(self) -> Report:
        started = time.monotonic()
        o = self.options
        absent = self.stored.missing_tables()
        if absent:
            which = f"table {absent[0]} does" if len(absent) == 1 else f"tables {' and '.join(absent)} do"
            raise ReconcileError(f"ClickHouse {which} not exist: check --clickhouse-url and --clickhouse-table, "
                                 "or run `cdc migrate`")
        report = Report(outbox=self.snapshot.relation, clickhouse=self.stored.where, since=o.since,
                        from_lsn=o.from_lsn, buckets=BUCKETS)
        w = self.snapshot_lsn = report.snapshot_lsn = self.snapshot.open()
        since = timestamp(self.pg, "--since", o.since) if o.since is not None else None
        delivery = self._delivery()
        pending: Pending | None = None
        if o.from_lsn is not None:
            pending = self._from_lsn(delivery, w)
            low = pending.first_id_from
        else:
            low = self.snapshot.low_id(since)
        self.low_id = report.low_id = low
        self.progress.phase("postgres: buckets")
        pg = self.snapshot.sums(low) if low is not None else OutboxSums({}, 0)
        report.outbox_rows, report.outbox_ids = pg.rows, sum(b.count for b in pg.buckets.values())
        delivery = self._wait(delivery, w)
        report.delivered = delivery.describe(w)
        self.since_seconds = None if since is None else int(since.timestamp())
        # A row stored in ClickHouse was committed before it was stored: one claiming a position past the
        # server's, read now, was written by no transaction, and is in scope. (A row committed after this
        # read and stored before ClickHouse answers looks the same; the recheck below clears it.)
        self.upper_lsn = self._wal_now()
        scope = StoredScope(low, w, self.since_seconds, self.upper_lsn)
        self.progress.phase("clickhouse: buckets")
        ch = self.stored.sums(scope)
        read = self._ch_read()
        report.clickhouse_ids = sum(b.count for b in ch.values())
        diff = differing(pg.buckets, ch)
        report.differing_buckets = len(diff)
        if diff and pending is None and delivery.slot_holds_rows and not delivery.reached(w):
            self.progress.phase("slot: what it still holds")
            pending = self._pending(delivery, w, None)
        drill = self._drill(diff, pg, ch, scope, delivery, pending, report, read)
        self.missing = drill.missing_rows
        self._recheck(drill, report)
        self._name(drill, report)
        # Each drill-down pass scans the scope again on both servers (the buckets are computed, not indexed).
        passes = 0 if low is None else 1 + read["pg_passes"]
        heap = 0 if low is None else self.snapshot.scanned_bytes(since)
        report.read = {"postgres": {"passes": passes, "rows": report.outbox_rows * passes, "bytes": heap * passes,
                                    "hashes_sent": read["pg_drill_rows"]},
                       "clickhouse": {"rows": read["rows"], "bytes": read["bytes"], "hashes_sent": read["ch_hashes"]}}
        report.seconds = round(time.monotonic() - started, 3)
        return report

    def _delivery(self) -> Delivery:
        assert self.sink is not None
        hwm = self.sink.high_water_mark()
        with connect(self.s.pg_dsn, application_name="cdc-verify") as conn:
            slot = get_slot(conn, self.s.slot)
            database = conn.info.dbname
            wal_now = _wal_insert_lsn(conn)
        if slot is not None and slot.database is not None and slot.database != database:
            raise ReconcileError(f"replication slot {self.s.slot} belongs to database {slot.database}, not "
                                 f"{database}: give the slot of this outbox with --slot")
        return Delivery(self.s.slot, slot, hwm, wal_now)

    def _wal_now(self) -> int:
        with connect(self.s.pg_dsn, application_name="cdc-verify") as conn:
            return _wal_insert_lsn(conn)

    def _wait(self, delivery: Delivery, w: int) -> Delivery:
        deadline = time.monotonic() + self.options.wait
        if not delivery.reached(w) and delivery.slot is not None and delivery.slot.active:
            self.progress.phase("waiting for delivery to pass the snapshot")
        while (not delivery.reached(w) and delivery.slot is not None and delivery.slot.active
               and not delivery.slot.invalidated and time.monotonic() < deadline):
            time.sleep(_POLL)
            delivery = self._delivery()
        return delivery

    def _from_lsn(self, delivery: Delivery, w: int) -> Pending:
        lsn = self.options.from_lsn
        assert lsn is not None
        slot = delivery.slot
        name = self.s.slot
        if slot is None or slot.invalidated or slot.confirmed_flush_lsn is None:
            why = "does not exist" if slot is None else "is invalidated"
            raise ReconcileError(f"--from-lsn {format_lsn(lsn)}: slot {name} {why}, so nothing says what was "
                                 "committed after that LSN; use --since instead")
        oldest = parse_lsn(slot.confirmed_flush_lsn)
        if lsn < oldest:
            raise ReconcileError(f"--from-lsn {format_lsn(lsn)}: slot {name} no longer holds it (it can give "
                                 f"nothing older than {format_lsn(oldest)}); verify from there, or use --since")
        if lsn > w:
            raise ReconcileError(f"--from-lsn {format_lsn(lsn)} is past the server's current position {format_lsn(w)}")
        self.progress.phase("slot: rows committed after --from-lsn")
        pending = self._pending(delivery, w, lsn)
        if not pending.complete:
            raise ReconcileError(f"--from-lsn {format_lsn(lsn)}: cannot tell which rows were committed after it "
                                 f"({pending.reason}); use --since instead")
        return pending

    def _pending(self, delivery: Delivery, w: int, from_lsn: int | None) -> Pending:
        s = self.s
        return read_pending(s.pg_dsn, slot=s.slot, publication=s.publication, outbox=(s.outbox_schema, s.outbox_table),
                            upto_lsn=w, stored=delivery.high_water, from_lsn=from_lsn,
                            timeout=max(self.options.wait, 10.0))

    def _drill(
        self, diff: list[int], pg: OutboxSums, ch: dict[int, Any], scope: StoredScope, delivery: Delivery,
        pending: Pending | None, report: Report, read: dict[str, int],
    ) -> _Drill:
        drill = _Drill(samples={"missing": [], "in_flight": [], "undetermined": []})
        if not diff:
            return drill
        low = scope.low_id
        classify = self._classifier(delivery, pending, scope.snapshot_lsn, report)

        def weight(b: int) -> int:  # each server holds only its own side of a pass: the larger bounds both
            return max(pg.buckets[b].count if b in pg.buckets else 0, ch[b].count if b in ch else 0)

        self.progress.phase("drill-down: differing buckets", sum(pg.buckets[b].count for b in diff if b in pg.buckets))
        tallies = {"missing": report.missing, "in_flight": report.in_flight, "undetermined": report.undetermined}
        for run in chunks(diff, weight, self.options.chunk_rows):
            outbox_rows = self.snapshot.hashes(low, run) if low is not None else iter(())
            counted, stored = _Counted(outbox_rows, self.progress), _Counted(self.stored.hashes(scope, run), _Silent())
            for found in merge(counted, stored):
                if isinstance(found, Unexpected):
                    drill.unexpected.append((found.h, found.outbox_id))
                    continue
                kind = classify(found)
                tallies[kind].count += 1
                if len(drill.samples[kind]) < self.options.samples:
                    drill.samples[kind].append(found.outbox_id)
                if kind == "missing" and self.options.keep_missing:
                    drill.missing_rows.add(found)
            read["pg_drill_rows"] += counted.rows
            read["pg_passes"] += low is not None
            read["ch_hashes"] += stored.rows
            self._ch_read(read)
        return drill

    def _classifier(
        self, delivery: Delivery, pending: Pending | None, w: int, report: Report,
    ) -> Callable[[Missing], str]:
        if not delivery.slot_holds_rows or delivery.reached(w):
            return lambda found: "missing"
        if pending is not None and pending.complete:
            in_flight = pending.in_flight
            return lambda found: "in_flight" if found.h in in_flight else "missing"
        report.undetermined_reason = (
            "not in ClickHouse while delivery has not reached the snapshot, and the slot could not be read"
            + (f" ({pending.reason})" if pending is not None and pending.reason else "")
            + ": run verify again once `cdc run` has caught up, or with a longer --wait"
        )
        in_flight = pending.in_flight if pending is not None else set()
        return lambda found: "in_flight" if found.h in in_flight else "undetermined"

    def _recheck(self, drill: _Drill, report: Report) -> None:
        """Drop unexpected ids whose outbox row exists now: committed after the snapshot (or just as it was taken)."""
        candidates = drill.unexpected
        explained: set[int] = set()
        by_id = {oid: h for h, oid in candidates[:_RECHECK_LIMIT] if oid > 0}
        if by_id:
            with connect(self.s.pg_dsn, application_name="cdc-verify") as conn:
                now = current_unique_ids(conn, self.s.outbox_schema, self.s.outbox_table, list(by_id))
            explained = {by_id[i] for i, u in now.items() if id_hash(u) == by_id[i]}
        drill.unexpected = [(h, oid) for h, oid in candidates if h not in explained]
        report.unexpected.count = len(drill.unexpected)

    def _name(self, drill: _Drill, report: Report) -> None:
        n = self.options.samples
        wanted = [i for ids in drill.samples.values() for i in ids]
        names = self.snapshot.unique_ids(wanted)
        for kind, tally in (("missing", report.missing), ("in_flight", report.in_flight),
                            ("undetermined", report.undetermined)):
            tally.first = [{"unique_id": names.get(i, "?"), "outbox_id": i} for i in drill.samples[kind]]
        first = drill.unexpected[:n]
        stored = self.stored.unique_ids([h for h, _ in first])
        report.unexpected.first = [{"unique_id": stored[h][0] if h in stored else "?", "outbox_id": oid}
                                   for h, oid in first]
        self.unexpected = drill.unexpected

    def _ch_read(self, read: dict[str, int] | None = None) -> dict[str, int]:
        read = read if read is not None else {"rows": 0, "bytes": 0, "pg_drill_rows": 0, "pg_passes": 0, "ch_hashes": 0}
        rows, nbytes = self.stored.last_read()
        read["rows"] += rows
        read["bytes"] += nbytes
        return read


def _wal_insert_lsn(conn: Conn) -> int:
    return int(conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()[0])  # type: ignore[index]


class _Counted:
    """Passes rows through, counting them for the progress line."""

    def __init__(self, rows: Any, progress: Progress) -> None:
        self._rows = rows
        self._progress = progress
        self.rows = 0

    def __iter__(self) -> Any:
        pending = 0
        for row in self._rows:
            self.rows += 1
            pending += 1
            if pending == 10_000:
                self._progress.advance(pending)
                pending = 0
            yield row
        self._progress.advance(pending)
