"""What the sharded end-to-end tests share: who streams what, and whether every slot has caught up."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support import Target, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))
from fault_support import CdcProcess, Writer

# Deduplication off: each shard's own high-water mark alone must prevent duplicates.
RUN = ("run", "--dedup-window", "0", "--flush-interval", "0.2", "--retry-initial", "0.1", "--retry-max", "1",
       "--status-interval", "0.5")


def streamed(t: Target) -> set[str]:
    """The slots a walsender streams now."""
    with t.pg() as conn:
        rows = conn.execute("SELECT slot_name FROM pg_replication_slots WHERE active_pid IS NOT NULL").fetchall()
    return {str(r[0]) for r in rows}


def owned_by(t: Target) -> dict[int, list[int]]:
    """pid of each live worker -> the shard indexes it says it owns."""
    with t.pg() as conn:
        rows = conn.execute(
            "SELECT pid, shards FROM cdc_workers w WHERE EXISTS (SELECT 1 FROM pg_locks l "
            "WHERE l.locktype = 'advisory' AND l.pid = w.backend_pid)").fetchall()
    return {int(pid): sorted(shards) for pid, shards in rows}


def lock_backend(t: Target, pid: int) -> int:
    with t.pg() as conn:
        row = conn.execute("SELECT backend_pid FROM cdc_workers WHERE pid = %s", (pid,)).fetchone()
    assert row is not None, f"no worker row for pid {pid}"
    return int(row[0])


def all_acknowledged(t: Target, lsn: str) -> bool:
    with t.pg() as conn:
        row = conn.execute("SELECT bool_and(confirmed_flush_lsn >= %s::pg_lsn) FROM pg_replication_slots",
                           (lsn,)).fetchone()
    return bool(row and row[0])


def catch_up_all(t: Target, timeout: float = 180) -> None:
    lsn = t.current_lsn()
    wait_until(lambda: all_acknowledged(t, lsn), timeout, f"every slot to acknowledge {lsn}")


def assert_exactly(t: Target, committed: list[str], rolled_back: list[str] = ()) -> int:  # type: ignore[assignment]
    delivered = Counter(t.delivered_ids())
    twice = [uid for uid, n in delivered.items() if n > 1]
    assert not twice, f"{len(twice)} ids delivered twice, e.g. {twice[:5]}"
    missing = set(committed) - set(delivered)
    assert not missing, f"{len(missing)} committed ids missing, e.g. {sorted(missing)[:5]}"
    assert not set(delivered) - set(committed), "ids delivered that were never committed"
    assert not set(rolled_back) & set(delivered)
    return sum(delivered.values())


def stop_all(workers: list[CdcProcess]) -> None:
    """SIGTERM each (once it has joined: before, a signal ends the process like any other): exit 0."""
    for worker in workers:
        if worker.proc.poll() is None:
            worker.wait_for("worker joined", timeout=90)
            code = worker.stop()
            assert code == 0, f"exit {code}: {worker.tail()}"


@contextmanager
def delivered_exactly(t: Target, writer: Writer, workers: list[CdcProcess]) -> Iterator[None]:
    """The body runs while ``writer`` writes (it may add to ``workers``). Then every slot catches up, the
    workers stop with exit 0, and the events table holds each committed id once and no rolled-back one.
    A body that fails stops the writer and fails the test as it stands."""
    writer.start()
    try:
        yield
    finally:
        writer.stop()
    try:
        catch_up_all(t)
    finally:
        stop_all(workers)
    assert_exactly(t, writer.committed, writer.rolled_back)
