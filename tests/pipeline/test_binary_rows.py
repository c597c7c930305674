"""pgoutput's binary format (``--binary``, on by default where allowed): the same events, dead letters and
positions as text; a column type only text can read makes ``auto`` stream text and ``on`` refuse."""

from __future__ import annotations

import orjson
import pytest
from support import Target, checked, insert_events

ROWS = "SELECT unique_id, event_type, occurred_at, environment, payload, metadata_version, outbox_id, commit_lsn, " \
       "commit_seq FROM events ORDER BY unique_id"
LETTERS = "SELECT commit_lsn, commit_seq, reason, row_json FROM events_dead_letter ORDER BY commit_lsn, commit_seq"


def streaming_binary(result_stderr: str) -> bool:
    events = [orjson.loads(line) for line in result_stderr.splitlines() if line.startswith("{")]
    (streaming,) = [e for e in events if e["event"] == "streaming"]
    return bool(streaming["binary"])


@pytest.fixture
def two_sinks(pg_dsn: str, clickhouse_server: object, clickhouse_url: str) -> tuple[Target, Target]:
    """One outbox read through two slots, into two ClickHouse databases."""
    text = Target(pg_dsn, clickhouse_url)
    binary = Target(pg_dsn, clickhouse_url + "_b")
    text.ch().execute(f"CREATE DATABASE {clickhouse_url.rsplit('/', 1)[1]}_b")
    checked(text.cdc("migrate"))
    checked(binary.cdc("migrate", "--slot", "binary_slot"))
    return text, binary


@pytest.mark.single_slot("reads the one pipeline's streaming line")
def test_binary_rows_arrive_exactly_as_text_rows_do(two_sinks: tuple[Target, Target]) -> None:
    text, binary = two_sinks
    with text.pg() as conn:
        insert_events(conn, [f"ok-{i}" for i in range(50)])
        conn.execute("INSERT INTO outbox (unique_id, event_type, occurred_at, payload, metadata_version) VALUES "
                     "('frac', 't', '2024-02-29 23:59:59.5+00', '{\"x\": [1, 2.5, null]}', -7), "
                     "('', 'empty', now(), '{}', 1), "
                     "('old', 't', '1960-01-01 00:00:00+00', '{}', 1), "
                     "('inf', 't', 'infinity', '{}', 1)")
    as_text = checked(text.cdc("run", "--until-lsn", "current", "--binary", "off"))
    as_binary = checked(binary.cdc("run", "--until-lsn", "current", "--binary", "on", "--slot", "binary_slot"))
    assert not streaming_binary(as_text.stderr) and streaming_binary(as_binary.stderr)
    text_rows, binary_rows = text.ch().execute(ROWS), binary.ch().execute(ROWS)
    assert len(text_rows) == 51 and binary_rows == text_rows
    text_letters, binary_letters = text.ch().execute(LETTERS), binary.ch().execute(LETTERS)
    assert len(text_letters) == 3 and binary_letters == text_letters


@pytest.mark.single_slot("reads the one pipeline's streaming line")
def test_a_column_only_text_can_read_makes_auto_stream_text_and_on_refuse(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate"))
    with t.pg() as conn:
        conn.execute("ALTER TABLE outbox ALTER COLUMN metadata_version TYPE numeric")
        insert_events(conn, ["n-1", "n-2"])
    refused = t.cdc("run", "--until-lsn", "current", "--binary", "on")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "cdc: error: column metadata_version has type oid 1700, which cdc reads only as text: "
        "run with --binary auto or off")
    auto = checked(t.cdc("run", "--until-lsn", "current"))
    assert not streaming_binary(auto.stderr)
    assert sorted(t.delivered_ids()) == ["n-1", "n-2"]


# Every type the binary converter accepts (cdc/core/outbox_binary.py READABLE) in at least one outbox,
# every required column in several, with values each of those types can hold. The last outbox's rows
# are all dead-lettered (a timestamp without time zone): their row_json compares the other columns.
TYPE_VARIANTS = {
    "int4-uuid-varchar-bpchar-json-int2": (
        "id TYPE int4", "unique_id TYPE uuid USING unique_id::uuid", "event_type TYPE varchar(40)",
        "environment TYPE char(8)", "payload TYPE json USING payload::json", "metadata_version TYPE int2"),
    "int2-name-name-varchar-text-int8": (
        "id TYPE int2", "unique_id TYPE name", "event_type TYPE name", "environment TYPE varchar",
        "payload TYPE text", "metadata_version TYPE int8"),
    "varchar-json-json-varchar-timestamp": (
        "unique_id TYPE varchar(60)", "event_type TYPE json USING event_type::json", "environment DROP DEFAULT",
        "environment TYPE json USING environment::json", "payload TYPE varchar", "occurred_at TYPE timestamp"),
}
VARIANT_ROWS = "INSERT INTO outbox (unique_id, event_type, occurred_at, environment, payload, metadata_version) " \
               "VALUES (%s, '\"user.created\"', %s, '\"prod\"', %s, %s)"


@pytest.mark.single_slot("alters the type of unique_id, from which shard_hash is computed")
@pytest.mark.parametrize("variant", list(TYPE_VARIANTS))
def test_every_column_type_binary_reads_delivers_what_text_does(two_sinks: tuple[Target, Target],
                                                                variant: str) -> None:
    text, binary = two_sinks
    with text.pg() as conn:
        conn.execute("ALTER TABLE outbox " + ", ".join(f"ALTER COLUMN {a}" for a in TYPE_VARIANTS[variant]))
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(VARIANT_ROWS, [
                (f"00000000-0000-4000-8000-{i:012d}", f"2024-02-29 23:59:{i % 60:02d}.{i:06d}+00",
                 f'{{"i": {i}, "s": "é\\n"}}', i - 3) for i in range(1, 41)])
    as_text = checked(text.cdc("run", "--until-lsn", "current", "--binary", "off"))
    as_binary = checked(binary.cdc("run", "--until-lsn", "current", "--binary", "on", "--slot", "binary_slot"))
    assert not streaming_binary(as_text.stderr) and streaming_binary(as_binary.stderr)
    text_rows, binary_rows = text.ch().execute(ROWS), binary.ch().execute(ROWS)
    text_letters, binary_letters = text.ch().execute(LETTERS), binary.ch().execute(LETTERS)
    # A timestamp without time zone is dead-lettered (both ways); every other outbox delivers all 40.
    assert len(text_rows) + len(text_letters) == 40 and len(text_rows) in (0, 40)
    assert binary_rows == text_rows and binary_letters == text_letters
