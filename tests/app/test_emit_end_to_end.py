"""Events written with cdc.emit reach ClickHouse through the real `cdc run`, a retried one once."""

from __future__ import annotations

from collections import Counter

import psycopg
from support import Target, checked

import cdc


def test_a_retried_unique_id_is_one_event_in_clickhouse(pg_dsn: str, sink_url: str) -> None:
    t = Target(pg_dsn, sink_url)
    checked(t.cdc("migrate"))
    committed: list[str] = []
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        for order in range(20):
            with conn.transaction(force_rollback=order % 5 == 4):
                conn.execute("INSERT INTO orders VALUES (%s)", (order,))
                uid = cdc.emit(conn, "order_placed", {"order_id": order}, unique_id=f"order-{order}")
            if order % 5 != 4:
                committed.append(uid)
        # The application did not hear back from its first commit and writes the event again.
        with conn.transaction():
            cdc.emit(conn, "order_placed", {"order_id": 3}, unique_id="order-3")
        outbox = conn.execute("SELECT count(*) FROM outbox WHERE unique_id = 'order-3'").fetchone()
    assert outbox == (2,)

    checked(t.cdc("run", "--until-lsn", "current"))

    stored = Counter(unique_id for (unique_id,) in t.ch().execute("SELECT unique_id FROM events"))
    assert stored == Counter(committed)  # each committed id once; the rolled-back ones never
    assert stored["order-3"] == 1
    assert "order-4" not in stored
