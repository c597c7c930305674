"""``cdc run`` on the pure-Python path (CDC_NO_ACCEL=1) delivers what the compiled path delivers.

The rest of the pipeline tests run whichever path cdc.accel picks (the compiled
one where it is built, as in CI); the unit tests cover both paths part by part.
This drives the pure-Python path end to end once, against real servers.
"""

from __future__ import annotations

import psycopg
from support import Target, checked, insert_events


def _delivered(t: Target) -> list[tuple[object, ...]]:
    return sorted(t.ch().execute(
        "SELECT unique_id, event_type, environment, payload, metadata_version, outbox_id, toUnixTimestamp(occurred_at) "
        "FROM events"
    ))


def _written(t: Target) -> list[tuple[object, ...]]:
    with t.pg() as conn:
        rows = conn.execute(
            "SELECT unique_id, event_type, environment, payload::text, metadata_version, id, "
            "extract(epoch FROM date_trunc('second', occurred_at))::bigint FROM outbox"
        ).fetchall()
    return sorted(rows)


def test_a_drain_on_the_pure_python_path_delivers_every_row_with_its_values(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    with psycopg.connect(t.pg_dsn, autocommit=True) as conn:
        insert_events(conn, [f"pure-{i}" for i in range(50)], event_type="pure.test")
        conn.execute(
            "INSERT INTO outbox (unique_id, event_type, environment, payload, metadata_version, occurred_at) "
            "SELECT 'bulk-' || g, 'bulk.é', 'prod', jsonb_build_object('g', g, 'note', 'ünïcødé ✓'), g % 3, "
            "'2024-05-01 12:00:00+00'::timestamptz + g * interval '1.5 second' FROM generate_series(1, 3000) g"
        )
        insert_events(conn, ["pure-7"], event_type="retry")  # a duplicate: dropped
    checked(t.cdc("run", "--until-lsn", "current", CDC_NO_ACCEL="1"))
    written = [row for row in _written(t) if not (row[0] == "pure-7" and row[1] == "retry")]
    assert len(written) == 3050
    assert _delivered(t) == written
