"""The whole pipeline, as a user runs it, against real PostgreSQL and each sink (ClickHouse server, chDB)."""

from __future__ import annotations

import threading
from datetime import timezone

import psycopg
from support import Target, checked, insert_events, stop, wait_until

BIG_TRANSACTION_ROWS = 200_000


def _outbox_rows(t: Target) -> dict[str, tuple[object, ...]]:
    with t.pg() as conn:
        rows = conn.execute(
            "SELECT unique_id, event_type, environment, payload::text, metadata_version, id, occurred_at "
            "FROM outbox ORDER BY id"
        ).fetchall()
    first: dict[str, tuple[object, ...]] = {}
    for row in rows:
        first.setdefault(str(row[0]), row)  # a retried unique_id: the first row is the event
    return first


def _delivered_rows(t: Target) -> dict[str, tuple[object, ...]]:
    rows = t.ch().execute(
        "SELECT unique_id, event_type, environment, payload, metadata_version, outbox_id, occurred_at FROM events"
    )
    delivered: dict[str, tuple[object, ...]] = {}
    for row in rows:
        assert row[0] not in delivered, f"{row[0]} delivered twice"
        delivered[row[0]] = row
    return delivered


def _worker(t: Target, worker: int, transactions: int, committed: list[str], barrier: threading.Barrier) -> None:
    with psycopg.connect(t.pg_dsn, autocommit=True) as conn:
        barrier.wait()
        for n in range(transactions):
            ids = [f"w{worker}-t{n}-r{r}" for r in range(1 + n % 17)]
            rollback = n % 7 == 3
            insert_events(conn, ids, event_type=f"type_{n % 5}", rollback=rollback)
            if not rollback:
                committed.extend(ids)
            if n % 10 == 9:  # the application retries an event it already wrote
                insert_events(conn, [committed[-1]], event_type="retry")


def test_concurrent_transactions_arrive_exactly_once_with_their_values(pg_dsn: str, sink_url: str) -> None:
    t = Target(pg_dsn, sink_url)
    checked(t.cdc("migrate"))
    start_lsn = t.confirmed_lsn()
    proc = t.start("run", "--batch-rows", "20000", "--flush-interval", "0.3")
    try:
        committed: list[list[str]] = [[] for _ in range(4)]
        barrier = threading.Barrier(5)
        workers = [threading.Thread(target=_worker, args=(t, w, 60, committed[w], barrier)) for w in range(4)]
        for w in workers:
            w.start()
        barrier.wait()
        with t.pg() as conn:
            conn.execute(
                "INSERT INTO outbox (unique_id, event_type, environment, payload) "
                "SELECT 'big-' || g, 'bulk', 'test', jsonb_build_object('g', g, 'pad', repeat('x', 150)) "
                "FROM generate_series(1, %s) g",
                (BIG_TRANSACTION_ROWS,),
            )
            conn.execute("ALTER TABLE outbox ADD COLUMN note text")
            conn.execute(
                "INSERT INTO outbox (unique_id, event_type, payload, note) "
                "VALUES ('after-alter-1', 'altered', '{\"ü\": \"ñ\"}', 'n1'), ('after-alter-2', 'altered', '{}', NULL)"
            )
        for w in workers:
            w.join()
        lsn = t.current_lsn()
        wait_until(lambda: t.slot_reached(lsn), 240, f"the slot to acknowledge {lsn}")
    finally:
        code, err = stop(proc)
    assert code == 0, err[-3000:]

    expected = _outbox_rows(t)
    delivered = _delivered_rows(t)
    modern = sink_url.startswith("chdb:")
    assert delivered.keys() == expected.keys()
    assert len(delivered) == BIG_TRANSACTION_ROWS + 2 + sum(len(c) for c in committed)
    for uid, row in expected.items():
        got = delivered[uid]
        assert got[:6] == row[:6], uid
        occurred = row[6].astimezone(timezone.utc)  # type: ignore[union-attr]
        if modern:
            assert got[6] == occurred, uid  # DateTime64(6): to the microsecond
        else:
            assert abs((got[6] - occurred).total_seconds()) < 1, uid  # 18.16 stores whole seconds
    assert t.confirmed_lsn() != start_lsn
