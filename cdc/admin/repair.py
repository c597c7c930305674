"""``cdc verify --repair``: deliver exactly the rows found missing; with ``--delete-unexpected``, remove the others.

The missing rows are read back from the very snapshot they were found missing
in and go through the pipeline's own path (conversion, dead letters, batches,
the flusher: cdc/admin/backfill.py's ``deliver``, a pipeline made by
``build``), each at its backfill position (cdc/core/positions.py), so the
high-water mark ``cdc run`` resumes from never moves. The merge yields one row per distinct hash, each proven
absent from ClickHouse, so no row already stored is sent again; the dedup
window starts empty (rebuilt from the ledger, it would name the very ids a
TRUNCATE lost). Rows in flight are left to ``cdc run``.

On a sharded outbox each missing row goes to the shard that streams its
unique_id now (the streaming generation's): read back one shard at a time
(its row filter) and delivered under that shard's stream, so each shard's
dedup window learns its own ids, and no row is stored as stream 0's.

Unexpected rows are deleted only when asked: from the events table (the rows
in scope with those unique_ids), from the ledger (their positions, which may
be past everything real) and from the dead-letter table; ClickHouse applies a
DELETE in the background, so this waits until it is done.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict, dataclass
from typing import Any

from ..core.missing import Row
from ..core.reconcile import StoredScope
from ..errors import ReconcileError
from ..pg.connect import connect
from ..pg.reconcile import OutboxSnapshot
from ..pg.shards import read_sharding, streaming_generation
from ..shards.layout import Shard, shard_settings
from ..sink import open_sink
from .backfill import Delivered, deliver
from .verify import Progress, Verification


@dataclass(slots=True)
class Repaired:
    delivered: int = 0
    events_stored: int = 0
    dead_letters_stored: int = 0
    deleted: int = 0
    seconds: float = 0.0
    shards: dict[str, int] | None = None  # sharded: rows delivered per shard slot

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def repair(job: Verification, *, delete_unexpected: bool, log: Any, progress: Progress) -> Repaired:
    """Deliver ``job``'s missing rows (found with ``keep_missing``); delete its unexpected ones if asked."""
    started = time.monotonic()
    done = Repaired()
    assert job.sink is not None
    if job.missing.count:
        progress.phase("repair: delivering the missing rows", job.missing.count)
        if job.shards is None:
            _add(done, deliver(job.s, job.sink, job.missing.fetch(job.snapshot), remember_recent_ids=False, log=log,
                               advance=progress.advance))
        else:
            done.shards = {}
            for shard in _streaming(job):
                # The shard's own stream and dedup window; its rows only (each missing row is in exactly one).
                bound = shard_settings(job.s, shard)
                with closing(open_sink(bound.sink_url, bound, log=log)) as sink:
                    delivered = deliver(bound, sink, job.missing.fetch(_ShardRows(job.snapshot, shard)),
                                        remember_recent_ids=False, log=log, advance=progress.advance)
                _add(done, delivered)
                done.shards[shard.slot] = delivered.rows_read
    if delete_unexpected and job.unexpected:
        progress.phase("repair: deleting the unexpected rows", len(job.unexpected))
        ids = sorted({uid for uid, _ in job.stored.unique_ids([h for h, _ in job.unexpected]).values()})
        scope = StoredScope(job.low_id, job.snapshot_lsn, job.since_seconds, job.upper_lsn)
        done.deleted = job.stored.delete(scope, ids)
        log.info("unexpected rows deleted", unique_ids=done.deleted)
    done.seconds = round(time.monotonic() - started, 3)
    return done


def _add(done: Repaired, delivered: Delivered) -> None:
    done.delivered += delivered.rows_read
    done.events_stored += delivered.events_stored
    done.dead_letters_stored += delivered.dead_letters_stored


def _streaming(job: Verification) -> list[Shard]:
    """The shards workers stream now: where a repaired row's unique_id comes again, if it does."""
    with connect(job.s.pg_dsn, application_name="cdc-verify") as conn:
        generation = streaming_generation(read_sharding(conn, job.s.outbox_schema, job.s.slot), False)
    if generation is None:
        raise ReconcileError("no generation of shards is streaming (a reshard is under way): repair after it")
    return generation.shard_list()


@dataclass(frozen=True, slots=True)
class _ShardRows:
    """The snapshot's rows of one shard only."""

    snapshot: OutboxSnapshot
    shard: Shard

    def rows(self, low: int, high: int, ids: list[int]) -> Iterator[Row]:
        return self.snapshot.rows(low, high, ids, self.shard.row_filter)
