"""The hash and bucket of a unique_id are the same in PostgreSQL (each kind), ClickHouse 18.16, a current ClickHouse
(chDB) and Python: the whole comparison rests on it."""

from __future__ import annotations

import json
import tempfile
from typing import Any

import psycopg
import pytest
from clickhouse_driver import Client

from cdc.core.reconcile import bucket_of, id_hash
from cdc.pg.reconcile import pg_bucket, pg_hash
from cdc.sink.clickhouse.stored import ch_bucket, ch_hash

IDS = [
    "", "a", "order-42", "0b8f5a52-6f2e-4f83-9a4c-3f0c1f0f7c11", "é-ü-ß", "日本語の識別子", "emoji \U0001f600",
    "quote ' and \" and \\ backslash", "x" * 1000, " leading and trailing ", "tab\tnew\nline",
]


def _expected() -> list[tuple[int, int]]:
    return [(id_hash(u), bucket_of(id_hash(u))) for u in IDS]


def test_postgres_and_python_agree(pg_dsn: str) -> None:
    query = f"SELECT {pg_hash('u')}, {pg_bucket(pg_hash('u'))} FROM unnest(%s::text[]) WITH ORDINALITY AS t(u, n) ORDER BY n"
    with psycopg.connect(pg_dsn) as conn:
        assert [tuple(r) for r in conn.execute(query, (IDS,)).fetchall()] == _expected()


def test_clickhouse_18_and_python_agree(clickhouse_url: str) -> None:
    h = ch_hash("u")
    rows = Client.from_url(clickhouse_url).execute(
        f"SELECT {h}, {ch_bucket(h)} FROM (SELECT arrayJoin(%(ids)s) AS u)", {"ids": IDS}
    )
    assert [tuple(r) for r in rows] == _expected()


def test_a_current_clickhouse_and_python_agree() -> None:
    session_module: Any = pytest.importorskip("chdb.session")
    session = session_module.Session(tempfile.mkdtemp(prefix="chdb-hash-"))
    try:
        literal = "[" + ", ".join("'" + u.replace("\\", "\\\\").replace("'", "\\'") + "'" for u in IDS) + "]"
        h = ch_hash("u")
        text = session.query(f"SELECT {h}, {ch_bucket(h)} FROM (SELECT arrayJoin({literal}) AS u)", "JSONCompact")
        rows = json.loads(text.bytes().decode() if hasattr(text, "bytes") else str(text))["data"]
    finally:
        session.close()
    assert [tuple(r) for r in rows] == _expected()
