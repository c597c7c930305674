"""``cdc verify --repair``: deliver exactly the rows found missing; with ``--delete-unexpected``, remove the others.

The missing rows are read back from the very snapshot they were found missing
in and go through the pipeline's own path (conversion, dead letters, batches,
the flusher: cdc/admin/backfill.py's ``deliver``), each at its backfill
position (cdc/admin/positions.py), so the high-water mark ``cdc run`` resumes
from never moves. The merge yields one row per distinct hash, each proven
absent from ClickHouse, so no row already stored is sent again; the dedup
window is not consulted (rebuilt from the ledger, it would name the very ids
a TRUNCATE lost). Rows in flight are left to ``cdc run``.

Unexpected rows are deleted only when asked: from the events table (the rows
in scope with those unique_ids), from the ledger (their positions, which may
be past everything real) and from the dead-letter table; ClickHouse applies a
DELETE in the background, so this waits until it is done.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Final

from ..admin.backfill import deliver
from ..dedup import DedupWindow
from .events_side import EventsScope
from .outbox_side import ReconcileError
from .verify import Progress, Verification

# One mutation, written out in full: ClickHouse parses at most 256 KB of query.
MAX_DELETE: Final = 1_000
_MUTATION_TIMEOUT: Final = 600.0


@dataclass(slots=True)
class Repaired:
    delivered: int = 0
    events_stored: int = 0
    dead_letters_stored: int = 0
    deleted: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_deletable(job: Verification) -> None:
    if len(job.unexpected) > MAX_DELETE:
        raise ReconcileError(f"{len(job.unexpected)} unexpected ids are more than --delete-unexpected removes at "
                             f"once ({MAX_DELETE}): look at them first (cdc verify --json --samples N)")


def repair(job: Verification, *, delete_unexpected: bool, batch_rows: int, log: Any, progress: Progress) -> Repaired:
    started = time.monotonic()
    done = Repaired()
    assert job.sink is not None
    if job.missing.count:
        progress.phase("repair: delivering the missing rows", job.missing.count)
        delivered = deliver(job.s, job.sink, job.missing.fetch(job.snapshot), dedup=DedupWindow(capacity=0),
                            batch_rows=batch_rows, log=log, advance=progress.advance)
        done.delivered = delivered.rows_read
        done.events_stored = delivered.events_stored
        done.dead_letters_stored = delivered.dead_letters_stored
    if delete_unexpected and job.unexpected:
        progress.phase("repair: deleting the unexpected rows", len(job.unexpected))
        done.deleted = _delete(job, log)
    done.seconds = round(time.monotonic() - started, 3)
    return done


def _delete(job: Verification, log: Any) -> int:
    check_deletable(job)
    events = job.events
    names = events.names
    ids = sorted({uid for uid, _ in events.unique_ids([h for h, _ in job.unexpected]).values()})
    scope = EventsScope(job.low_id, job.snapshot_lsn, job.since_seconds, job.upper_lsn)
    where, params = events.delete_conditions(scope, ids)
    positions = events.positions(where, params)
    statements = [f"ALTER TABLE {names.events} DELETE WHERE {where['events']}",
                  f"ALTER TABLE {names.dead_letter} DELETE WHERE {where['dead_letter']}"]
    if positions:
        listed = ", ".join(f"({int(lsn)}, {int(seq)})" for lsn, seq in positions)
        statements.append(f"ALTER TABLE {names.progress} DELETE WHERE (commit_lsn, commit_seq) IN ({listed})")
    for statement in statements:
        events.run(statement, params)
    events.wait_for_mutations(_MUTATION_TIMEOUT)
    log.info("unexpected rows deleted", unique_ids=len(ids), ledger_rows=len(positions))
    return len(ids)
