"""``cdc verify --repair``: deliver exactly the rows found missing; with ``--delete-unexpected``, remove the others.

The missing rows are read back from the very snapshot they were found missing
in and go through the pipeline's own path (conversion, dead letters, batches,
the flusher: cdc/admin/backfill.py's ``deliver``, a pipeline made by
``build``), each at its backfill position (cdc/core/positions.py), so the
high-water mark ``cdc run`` resumes from never moves. The merge yields one row per distinct hash, each proven
absent from ClickHouse, so no row already stored is sent again; the dedup
window starts empty (rebuilt from the ledger, it would name the very ids a
TRUNCATE lost). Rows in flight are left to ``cdc run``.

Unexpected rows are deleted only when asked: from the events table (the rows
in scope with those unique_ids), from the ledger (their positions, which may
be past everything real) and from the dead-letter table; ClickHouse applies a
DELETE in the background, so this waits until it is done.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from ..core.reconcile import StoredScope
from .backfill import deliver
from .verify import Progress, Verification


@dataclass(slots=True)
class Repaired:
    delivered: int = 0
    events_stored: int = 0
    dead_letters_stored: int = 0
    deleted: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def repair(job: Verification, *, delete_unexpected: bool, log: Any, progress: Progress) -> Repaired:
    """Deliver ``job``'s missing rows (found with ``keep_missing``); delete its unexpected ones if asked."""
    started = time.monotonic()
    done = Repaired()
    assert job.sink is not None
    if job.missing.count:
        progress.phase("repair: delivering the missing rows", job.missing.count)
        delivered = deliver(job.s, job.sink, job.missing.fetch(job.snapshot), remember_recent_ids=False, log=log,
                            advance=progress.advance)
        done.delivered = delivered.rows_read
        done.events_stored = delivered.events_stored
        done.dead_letters_stored = delivered.dead_letters_stored
    if delete_unexpected and job.unexpected:
        progress.phase("repair: deleting the unexpected rows", len(job.unexpected))
        ids = sorted({uid for uid, _ in job.stored.unique_ids([h for h, _ in job.unexpected]).values()})
        scope = StoredScope(job.low_id, job.snapshot_lsn, job.since_seconds, job.upper_lsn)
        done.deleted = job.stored.delete(scope, ids)
        log.info("unexpected rows deleted", unique_ids=done.deleted)
    done.seconds = round(time.monotonic() - started, 3)
    return done
