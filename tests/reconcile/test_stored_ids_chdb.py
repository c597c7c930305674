"""The ClickHouse half's queries on a current ClickHouse release (chDB, in process), with DateTime64 columns.

The Debian server the integration tests use is 18.16; this proves the same SQL
runs, and counts the same ids, where DateTime64 and LowCardinality are in use.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clickhouse_driver import Client

from cdc.core.reconcile import BUCKETS, StoredScope, bucket_of, id_hash, read_sums
from cdc.sink.clickhouse.ddl import Capabilities, SchemaNames, parse_version, render_schema
from cdc.sink.clickhouse.ledger import check_ledger
from cdc.sink.clickhouse.stored import ClickHouseStoredIds

chdb_session = pytest.importorskip("chdb.session")
DATABASE = "cdc_reconcile"
SNAPSHOT = 1 << 40
NOW = 1_800_000_000


class ChdbConn:
    """Answers ``query`` and ``stream`` like ClickHouseConnection, from chDB."""

    def __init__(self, path: Path) -> None:
        self.session = chdb_session.Session(str(path))
        self._client = Client(host="unused")  # only its parameter substitution

    def query(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        text = self._client.substitute_params(query, params or {}, self._client.connection.context)
        result = self.session.query(text, "JSONCompact")
        raw = result.bytes().decode() if hasattr(result, "bytes") else str(result)
        return [tuple(row) for row in json.loads(raw)["data"]] if raw.strip() else []

    def stream(self, query: str, params: dict[str, Any] | None = None) -> Iterator[tuple[Any, ...]]:
        yield from self.query(query, params)


@pytest.fixture(scope="module")
def ch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbConn]:
    conn = ChdbConn(tmp_path_factory.mktemp("chdb-reconcile"))
    version = parse_version(str(conn.query("SELECT version()")[0][0]))
    for _, statement in render_schema(SchemaNames(DATABASE, "events"), Capabilities(version)):
        conn.session.query(statement)
    yield conn
    conn.session.close()


def _event(uid: str, outbox_id: int, commit_lsn: int, committed_at: int = NOW) -> str:
    return (f"('{uid}', 't', now64(6), 'prod', '{{}}', 1, {outbox_id}, {commit_lsn}, 0, "
            f"toDateTime64({committed_at}, 6, 'UTC'), now())")


def _dead_letter(row: dict[str, Any], relation: str = "public.outbox", *, commit_lsn: int) -> str:
    # Dead letters are keyed by position: each needs its own, or the ReplacingMergeTree keeps one.
    return f"({commit_lsn}, 0, now64(6), '{relation}', 'bad', '{json.dumps(row, separators=(',', ':'))}', now())"


def test_the_clickhouse_side_counts_the_scope_on_a_current_release(ch: ChdbConn) -> None:
    columns = "(unique_id, event_type, occurred_at, environment, payload, metadata_version, outbox_id, commit_lsn, " \
              "commit_seq, committed_at, inserted_at)"
    ch.session.query(f"INSERT INTO {DATABASE}.events {columns} VALUES " + ", ".join([
        _event("in-1", 100, 5000), _event("in-2", 101, 2),          # streamed; backfilled (synthetic position)
        _event("old", 40, 4000),                                     # before the scope: not counted
        _event("later", 102, SNAPSHOT),                              # committed after the snapshot
        _event("stray", 0, 0, committed_at=NOW), _event("ancient-stray", 0, 0, committed_at=1000),
    ]))
    ch.session.query(f"INSERT INTO {DATABASE}.events_dead_letter (commit_lsn, commit_seq, committed_at, relation, "
                     "reason, row_json, inserted_at) VALUES " + ", ".join([
                         _dead_letter({"id": "103", "unique_id": "dead"}, commit_lsn=7),
                         _dead_letter({"id": "104", "unique_id": "other-table"}, "public.orders", commit_lsn=8),
                         _dead_letter({"id": "105", "unique_id": None}, commit_lsn=9),
                     ]))
    side = ClickHouseStoredIds(ch, SchemaNames(DATABASE, "events"), "public.outbox")
    scope = StoredScope(low_id=100, snapshot_lsn=SNAPSHOT, since=NOW - 60)
    in_scope = {"in-1", "in-2", "dead", "stray"}
    expected = {}
    for uid in in_scope:
        expected.setdefault(bucket_of(id_hash(uid)), []).append(id_hash(uid))
    assert side.sums(scope) == read_sums((b, len(hs), sum(hs)) for b, hs in expected.items())
    # Without --since, an event claiming no outbox row counts whenever it was committed.
    assert sum(b.count for b in side.sums(StoredScope(100, SNAPSHOT)).values()) == 5

    streamed = list(side.hashes(scope, list(range(BUCKETS))))
    flags = {h: s for h, s, _ in streamed}
    assert [h for h, _, _ in streamed] == sorted(flags)
    assert {h for h, s in flags.items() if s} == {id_hash(u) for u in in_scope}
    assert {h for h, s in flags.items() if not s} == {id_hash(u) for u in ("old", "later", "ancient-stray")}
    assert side.unique_ids([id_hash("dead"), id_hash("in-1")]) == {id_hash("dead"): ("dead", 103),
                                                                    id_hash("in-1"): ("in-1", 100)}


def test_the_ledger_check_runs_on_a_current_release(ch: ChdbConn) -> None:
    names = SchemaNames(DATABASE, "events")
    before = check_ledger(ch, names)
    assert before.recorded >= 6 and before.absent == 0 and before.warning is None
    ch.session.query(f"TRUNCATE TABLE {DATABASE}.events")
    after = check_ledger(ch, names)
    assert after.absent == after.recorded == before.recorded
    assert after.warning is not None and "cdc verify --repair" in after.warning
