"""A real walsender: reads return many messages per wake-up, bounded by count and by size.

Each test runs with both readers: the socket read by cdc (where the
accelerator is built and the connection is not encrypted) and libpq.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from servers.postgres import PostgresServer
from support import drop_slot_once_released, wait_until

import cdc.accel
from cdc.pg.replication import ReplicationConnection, ReplicationError, StreamEnded

ROWS = 100
PAYLOAD = 1000
OPTIONS = {"proto_version": "1", "publication_names": '"p"'}


def started(
    dsn: str, slot: str, reader: str, *, name: str = "test-read", expect: str | None = None
) -> ReplicationConnection:
    """A connection streaming ``slot`` with ``reader``, which is checked to be the one in use (or ``expect``)."""
    repl = ReplicationConnection.connect(dsn, application_name=name)
    try:
        repl.start_replication(slot, "0/0", OPTIONS, reader=reader)
    except BaseException:
        repl.close()
        raise
    # Where the accelerator is built, "auto" must not quietly fall back to libpq.
    assert repl.reader == (expect or ("socket" if reader == "auto" and cdc.accel.native is not None else "libpq"))
    return repl


@pytest.fixture(params=["auto", "libpq"])
def reader(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def streaming(pg_dsn: str, reader: str) -> Iterator[ReplicationConnection]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("CREATE PUBLICATION p FOR TABLE t")
        conn.execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
        conn.execute("INSERT INTO t SELECT g, repeat('x', %s) FROM generate_series(1, %s) g", (PAYLOAD, ROWS))
        end = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        repl = started(pg_dsn, "s", reader)
        # Let the walsender send what it can before the first read, so reads find a backlog.
        wait_until(lambda: conn.execute(
            "SELECT coalesce(bool_or(sent_lsn >= %s), false) FROM pg_stat_replication WHERE application_name = 'test-read'",
            end,
        ).fetchone() == (True,), timeout=10, what="the walsender to send the backlog", interval=0.05)
    try:
        yield repl
    finally:
        repl.close()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            drop_slot_once_released(conn, "s")


def test_closing_returns_once_the_server_has_let_go_of_the_slot(pg_dsn: str, reader: str) -> None:
    # A script that drops the slot right after `cdc run --until-lsn` exits must not find it active.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("CREATE TABLE unpublished (id int)")
        conn.execute("CREATE PUBLICATION p FOR TABLE t")
        conn.execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
        repl = started(pg_dsn, "s", reader)
        # The walsender decodes this transaction whole, sending nothing, before it reads our Terminate:
        # for that long after the close it still holds the slot.
        conn.execute("INSERT INTO unpublished SELECT generate_series(1, 1000000)")
        time.sleep(0.2)  # the walsender is decoding it by now
        repl.close(release_wait=60)
        assert conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = 's'").fetchone() == (False,)
        conn.execute("SELECT pg_drop_replication_slot('s')")


def _inserts(frames: Sequence[bytes | memoryview]) -> int:
    return sum(1 for frame in frames if frame[0] == ord("w") and frame[25] == ord("I"))


def test_a_read_stops_at_its_size_bound_just_past_it(streaming: ReplicationConnection) -> None:
    bound = 10 * PAYLOAD
    seen = reads_at_bound = 0
    while seen < ROWS:
        frames = streaming.read(4096, 5.0, max_bytes=bound)
        sizes = [len(frame) for frame in frames]
        assert sum(sizes[:-1]) < bound  # the message that crossed the bound is the last one
        reads_at_bound += sum(sizes) >= bound
        seen += _inserts(frames)
    assert reads_at_bound >= 2  # 100 KB were waiting: most reads stopped at the bound


def test_a_read_stops_at_its_message_count_and_the_next_read_goes_on(streaming: ReplicationConnection) -> None:
    seen = 0
    while seen < ROWS:
        frames = streaming.read(7, 5.0)
        assert len(frames) <= 7
        seen += _inserts(frames)
    assert seen == ROWS


def _caught_up_then_one_more_row(streaming: ReplicationConnection, pg_dsn: str) -> threading.Thread:
    """Reads the stream to its end, then starts a thread that inserts one row 0.2 s later."""
    seen = 0
    while seen < ROWS:
        seen += _inserts(streaming.read(4096, 5.0))
    while streaming.read(4096, 0.2):  # caught up: nothing left but keepalives
        pass

    def write_later() -> None:
        time.sleep(0.2)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO t VALUES (%s, 'late')", (ROWS + 1,))

    writer = threading.Thread(target=write_later)
    writer.start()
    return writer


def test_data_arriving_near_the_timeout_is_read_by_the_timeout_whatever_the_settle(
    streaming: ReplicationConnection, pg_dsn: str,
) -> None:
    writer = _caught_up_then_one_more_row(streaming, pg_dsn)
    started = time.monotonic()
    frames: Sequence[bytes | memoryview] = []
    while not _inserts(frames) and time.monotonic() - started < 20:
        # The settle would hold the read for a minute; the batch due at the timeout cannot wait for it.
        frames = streaming.read(4096, 1.0, settle=60.0)
    writer.join()
    assert _inserts(frames) == 1
    assert time.monotonic() - started < 20


def test_a_read_that_settles_says_when_its_data_arrived_before_the_settle(
    streaming: ReplicationConnection, pg_dsn: str,
) -> None:
    writer = _caught_up_then_one_more_row(streaming, pg_dsn)
    started = returned = time.monotonic()
    frames: Sequence[bytes | memoryview] = []
    while not _inserts(frames) and returned - started < 20:
        frames = streaming.read(4096, 5.0, settle=0.5)
        returned = time.monotonic()
    writer.join()
    assert _inserts(frames) == 1
    # The batch these rows open counts its age from arrived_at, so the settle delays no flush.
    assert started < streaming.arrived_at <= returned - 0.5


def _drain(repl: ReplicationConnection, rows: int) -> list[bytes]:
    """The XLogData messages up to the ``rows``-th Insert, without their send time (the only part that varies)."""
    out: list[bytes] = []
    seen = 0
    while seen < rows:
        frames = repl.read(4096, 5.0)
        seen += _inserts(frames)
        out += [bytes(f[:17]) + bytes(f[25:]) for f in frames if f[0] == ord("w")]
    return out


def test_both_readers_hand_on_the_same_messages(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("CREATE PUBLICATION p FOR TABLE t")
        conn.execute("SELECT pg_create_logical_replication_slot('a', 'pgoutput')")
        conn.execute("SELECT pg_create_logical_replication_slot('b', 'pgoutput')")
        for first in range(0, 3000, 300):  # several transactions, rows of many sizes
            conn.execute("INSERT INTO t SELECT g, repeat(md5(g::text), g %% 97) FROM generate_series(%s::int, %s::int) g",
                         (first + 1, first + 300))
    ours, libpqs = started(pg_dsn, "a", "auto", name="a"), started(pg_dsn, "b", "libpq", name="b")
    try:
        assert _drain(ours, 3000) == _drain(libpqs, 3000)
    finally:
        ours.close()
        libpqs.close()


def test_a_message_larger_than_the_read_buffer_arrives_whole(streaming: ReplicationConnection, pg_dsn: str) -> None:
    _drain(streaming, ROWS)
    big = "".join(f"{i:08x}" for i in range(200_000))  # 1.6 MB: several times the socket reader's buffer
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO t VALUES (0, %s)", (big,))
    frames: list[bytes] = []
    while not any(big.encode() in f for f in frames):
        frames = _drain(streaming, 1)
    # and the stream goes on after it
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO t VALUES (-1, 'after')")
    assert any(b"after" in f for f in _drain(streaming, 1))


def test_a_terminated_walsender_ends_the_stream_with_the_servers_reason(
    streaming: ReplicationConnection, pg_dsn: str
) -> None:
    _drain(streaming, ROWS)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'test-read'")
    with pytest.raises(StreamEnded) as ended:
        for _ in range(100):
            streaming.read(4096, 0.2)
    assert "terminating connection due to administrator command" in str(ended.value)
    assert ended.value.sqlstate == "57P01"


def test_the_messages_before_an_end_are_handed_on_then_the_end_with_its_reason(
    streaming: ReplicationConnection, pg_dsn: str
) -> None:
    # The backlog is sent and waits in the socket; the walsender's last word comes after it.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'test-read'")
        wait_until(lambda: conn.execute("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'test-read'")
                   .fetchone() == (0,), timeout=10, what="the walsender to exit", interval=0.05)
    seen = 0
    with pytest.raises(StreamEnded) as ended:
        for _ in range(100):
            seen += _inserts(streaming.read(4096, 0.2))
    assert seen == ROWS
    assert "terminating connection due to administrator command" in str(ended.value)
    assert ended.value.sqlstate == "57P01"


def test_a_slot_in_use_is_refused_with_its_sqlstate(streaming: ReplicationConnection, pg_dsn: str, reader: str) -> None:
    with pytest.raises(ReplicationError) as refused:
        started(pg_dsn, "s", reader, name="second")
    assert refused.value.sqlstate == "55006"
    assert "is active for PID" in str(refused.value)


def test_a_status_update_moves_the_slot(streaming: ReplicationConnection, pg_dsn: str) -> None:
    end = max(int.from_bytes(f[9:17], "big") for f in _drain(streaming, ROWS))
    streaming.send_status(end)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        wait_until(lambda: conn.execute(
            "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = 's'",
            (f"{end >> 32:X}/{end & 0xFFFFFFFF:X}",)).fetchone() == (True,),
            timeout=10, what="the slot to confirm the status update", interval=0.05)


@pytest.fixture
def tls(pg_server: object) -> Iterator[None]:
    """TLS turned on in the test's server (a self-signed certificate), and off again after."""
    if not isinstance(pg_server, PostgresServer):
        pytest.skip("needs a server the tests start: it turns TLS on and off")
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        if not conn.execute("SHOW ssl_library").fetchone()[0]:  # type: ignore[index]
            pytest.skip(f"this PostgreSQL build ({pg_server.kind}) has no TLS: add it to conftest's KINDS_WITHOUT_TLS")
    data = pg_server.data_dir
    key, cert = data / "cdc-test.key", data / "cdc-test.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    owner = data.stat()
    for path in (key, cert):
        os.chown(path, owner.st_uid, owner.st_gid)
    key.chmod(0o600)
    pg_server.set_config(ssl=True, ssl_cert_file=str(cert), ssl_key_file=str(key))
    try:
        yield
    finally:
        pg_server.set_config(ssl=None, ssl_cert_file=None, ssl_key_file=None)


@pytest.mark.tls
def test_an_encrypted_connection_is_read_through_libpq(pg_dsn: str, tls: None) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("CREATE PUBLICATION p FOR TABLE t")
        conn.execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
        conn.execute("INSERT INTO t SELECT g, repeat('x', %s) FROM generate_series(1, %s) g", (PAYLOAD, ROWS))
    # The socket carries TLS records: only libpq can read them, so "auto" must choose it.
    repl = started(make_conninfo(pg_dsn, sslmode="require"), "s", "auto", expect="libpq")
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            assert conn.execute("SELECT ssl FROM pg_stat_ssl JOIN pg_stat_replication USING (pid) "
                                "WHERE application_name = 'test-read'").fetchone() == (True,)
        assert len([f for f in _drain(repl, ROWS) if f[17] == ord("I")]) == ROWS
    finally:
        repl.close()
