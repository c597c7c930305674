"""The polling relay of the original design, as the baseline the pipeline must beat.

A tight loop over its own copy of the outbox (``outbox_relay``: the same rows,
plus ``processed_at`` and a partial index on the unprocessed ones):

    SELECT ... WHERE processed_at IS NULL ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED
    INSERT INTO ClickHouse (clickhouse-driver, one columnar INSERT)
    UPDATE ... SET processed_at = now() WHERE id = ANY(...)
    COMMIT

It is written to be a fair opponent, not a straw man: timestamps come back as
epoch seconds (no datetime objects), the insert is columnar with type checks
off, and it writes into the same ClickHouse table layout as the pipeline
(``ClickHouseSink.ensure_schema``, progress view included), so ClickHouse does
the same work for both. It runs as its own process: ``python -m bench.relay``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import psycopg

# As cdc does (cdc/sink/clickhouse/connection.py): no eager Date lookup table, same start-up.
os.environ.setdefault("CLICKHOUSE_DRIVER_LASY_DATE_LUT", "1")

from clickhouse_driver import Client

SELECT = (
    "SELECT id, unique_id, event_type, extract(epoch FROM occurred_at)::bigint, environment, payload::text, "
    "metadata_version FROM {table} WHERE processed_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
)
UPDATE = "UPDATE {table} SET processed_at = now() WHERE id = ANY(%s)"
INSERT = (
    "INSERT INTO events (unique_id, event_type, occurred_at, environment, payload, metadata_version, outbox_id, "
    "commit_lsn, commit_seq, committed_at, inserted_at) VALUES"
)


def prepare(conn: psycopg.Connection[Any], *, source: str = "outbox", table: str = "outbox_relay") -> None:
    """Give the relay its own copy of the outbox's rows, with the column and index the design needs."""
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} (LIKE {source} INCLUDING DEFAULTS)")
    conn.execute(f"ALTER TABLE {table} ADD COLUMN processed_at timestamptz, ADD PRIMARY KEY (id)")
    conn.execute(f"CREATE INDEX {table}_unprocessed ON {table} (id) WHERE processed_at IS NULL")
    columns = "id, unique_id, event_type, occurred_at, environment, payload, metadata_version, created_at"
    conn.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {source} ORDER BY id")


def drain(dsn: str, clickhouse_url: str, *, table: str, batch: int) -> dict[str, Any]:
    ch = Client.from_url(clickhouse_url)
    select, update = SELECT.format(table=table), UPDATE.format(table=table)
    rows_done = iterations = 0
    started = time.monotonic()
    with psycopg.connect(dsn) as conn:
        while True:
            with conn.cursor() as cur:
                cur.execute(select, (batch,))
                rows = cur.fetchall()
                if not rows:
                    conn.commit()
                    break
                ids, uids, types, occurred, envs, payloads, versions = (list(c) for c in zip(*rows))
                n = len(rows)
                now = int(time.time())
                ch.execute(
                    INSERT, [uids, types, occurred, envs, payloads, versions, ids, [0] * n, [0] * n, occurred, [now] * n],
                    columnar=True, types_check=False,
                )
                cur.execute(update, (ids,))
            conn.commit()
            rows_done += n
            iterations += 1
    ch.disconnect()
    return {"rows": rows_done, "iterations": iterations, "seconds": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--clickhouse-url", required=True)
    parser.add_argument("--table", default="outbox_relay")
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args(argv)
    print(json.dumps(drain(args.dsn, args.clickhouse_url, table=args.table, batch=args.batch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
