"""Rows reach ClickHouse in commit order, each transaction's rows in the order they were written.

PostgreSQL's own test_decoding plugin, on a second slot, is the referee: it
prints every committed transaction in commit order, nothing of cdc involved.
"""

from __future__ import annotations

import random
import re
import threading
import time

import pytest
import psycopg
from support import Target, checked, stop, wait_until

WRITERS = 4
TRANSACTIONS_PER_WRITER = 25
ORACLE_SLOT = "commit_order_referee"
_UNIQUE_ID = re.compile(r"unique_id\[text\]:'([^']*)'")


def _write(t: Target, writer: int, start: threading.Barrier, committed: list[str]) -> None:
    rng = random.Random(writer)
    with psycopg.connect(t.pg_dsn, autocommit=True) as conn:
        start.wait()
        for n in range(TRANSACTIONS_PER_WRITER):
            ids = [f"w{writer}-t{n}-r{r}" for r in range(rng.randint(1, 8))]
            rollback = n % 6 == 5
            with conn.transaction(force_rollback=rollback):
                for uid in ids:
                    # Row by row, with pauses: transactions of the other writers
                    # begin, write and commit in between, so commit order is not
                    # the order in which transactions began.
                    conn.execute(
                        "INSERT INTO outbox (unique_id, event_type, payload) VALUES (%s, 'ordered', '{}')", (uid,)
                    )
                    time.sleep(rng.uniform(0, 0.03))
            if not rollback:
                committed.extend(ids)


def _referee_order(t: Target) -> list[str]:
    with t.pg() as conn:
        lines = [str(r[0]) for r in conn.execute(
            "SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL)", (ORACLE_SLOT,)
        ).fetchall()]
    return [m.group(1) for line in lines if ": INSERT:" in line and (m := _UNIQUE_ID.search(line))]


def _stored_in_commit_order(t: Target) -> list[tuple[str, int, int]]:
    rows = t.ch().execute(
        "SELECT unique_id, commit_lsn, commit_seq FROM events_cdc_progress WHERE unique_id != '' "
        "ORDER BY commit_lsn, commit_seq"
    )
    return [(str(uid), int(lsn), int(seq)) for uid, lsn, seq in rows]


@pytest.mark.single_slot("one global commit order; each shard keeps its own (tests/workers/test_sharded_exactness.py)")
def test_concurrent_writers_rows_are_inserted_in_commit_order(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    with t.pg() as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (ORACLE_SLOT,))
    # Small batches, flushed often: many INSERTs, each of which must follow the last.
    proc = t.start("run", "--batch-rows", "20", "--flush-interval", "0.05", "--dedup-window", "0")
    stored_so_far: list[set[str]] = []
    try:
        wait_until(t.slot_active, 60, "cdc to start streaming")
        committed: list[list[str]] = [[] for _ in range(WRITERS)]
        start = threading.Barrier(WRITERS)
        writers = [threading.Thread(target=_write, args=(t, w, start, committed[w])) for w in range(WRITERS)]
        for w in writers:
            w.start()
        while any(w.is_alive() for w in writers):
            # What ClickHouse holds at any moment must be a prefix of the commit order.
            stored_so_far.append({uid for uid, _, _ in _stored_in_commit_order(t)})
            time.sleep(0.05)
        for w in writers:
            w.join()
        lsn = t.current_lsn()
        wait_until(lambda: t.slot_reached(lsn), 120, "the slot to acknowledge everything")
        referee = _referee_order(t)
    finally:
        code, err = stop(proc)
        with t.pg() as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (ORACLE_SLOT,),
            )
    assert code == 0, err[-3000:]

    assert sorted(referee) == sorted(uid for ids in committed for uid in ids), "the referee saw other commits"
    stored = _stored_in_commit_order(t)
    assert [uid for uid, _, _ in stored] == referee
    # Positions inside a transaction count 0, 1, 2... in the order the rows were written.
    by_commit: dict[int, list[int]] = {}
    for _, commit_lsn, seq in stored:
        by_commit.setdefault(commit_lsn, []).append(seq)
    assert all(seqs == list(range(len(seqs))) for seqs in by_commit.values())
    assert len(by_commit) > WRITERS * 10, "too few transactions to say anything about their order"
    for held in stored_so_far:
        assert set(referee[: len(held)]) == held, "ClickHouse held a later commit before an earlier one"
    assert len({len(held) for held in stored_so_far}) > 3, "never caught ClickHouse between two inserts"
