"""The socket reader's buffer: whole messages, in order, however the bytes arrive; every end has its reason.

The bytes are captured pgoutput messages framed as the walsender frames them,
written into one end of a socket pair; the reader reads the other end. The
real walsender's side is in test_connection.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from struct import pack

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pgoutput.captures import all_messages

from cdc.pg import copy_stream
from cdc.pg.copy_stream import CopyEnded, SocketCopy
from cdc.pg.wire import copy_data

PAYLOADS = [b"w" + pack(">QQq", i, i, 0) + raw for i, (raw, _, _) in enumerate(all_messages())]


def framed(kind: bytes, body: bytes) -> bytes:
    return kind + pack(">I", 4 + len(body)) + body


class Pair:
    def __init__(self) -> None:
        self.server, client = socket.socketpair()
        self.reader = SocketCopy(client.fileno())
        client.close()  # the reader holds its own descriptor, as it does libpq's

    def take_all(self, expected: int) -> list[bytes]:
        out: list[bytes] = []
        for _ in range(10_000):
            frames, _ = self.reader.take(7, 1 << 20)
            out += [bytes(frame) for frame in frames]
            if len(out) >= expected:
                break
            if not frames:
                self.reader.fill()
        return out

    def close(self) -> None:
        self.reader.close()
        self.server.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(1, 3000), max_size=40))
def test_messages_come_whole_and_in_order_however_the_bytes_are_cut(cuts: list[int]) -> None:
    p = Pair()
    try:
        stream = b"".join(copy_data(payload) for payload in PAYLOADS)
        pos, out = 0, []
        for cut in [*cuts, len(stream)]:
            p.server.sendall(stream[pos:pos + cut])
            pos += cut
            p.reader.fill()
            out += p.take_all(0)
            if pos >= len(stream):
                break
        out += p.take_all(len(PAYLOADS) - len(out))
        assert out == PAYLOADS
    finally:
        p.close()


def test_a_full_buffer_of_messages_not_yet_taken_is_not_an_end(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    # (A status update that must wait reads meanwhile, with earlier messages still in the buffer.)
    monkeypatch.setattr(copy_stream, "_ROOM", 64)
    payload = bytes(1000)
    writer = threading.Thread(target=pair.server.sendall, args=(copy_data(payload) * 600,))  # > the 256 KB buffer
    writer.start()
    for _ in range(2000):
        pair.reader.fill()
        time.sleep(0.001)
    assert pair.take_all(600) == [payload] * 600
    writer.join()


def test_a_message_larger_than_the_buffer_grows_it_and_the_buffer_shrinks_after(pair: Pair) -> None:
    big = b"w" + bytes(range(256)) * 4000  # ~1 MB
    writer = threading.Thread(target=pair.server.sendall, args=(copy_data(big) + copy_data(b"next"),))
    writer.start()
    assert pair.take_all(2) == [big, b"next"]
    writer.join()
    pair.server.sendall(copy_data(b"later"))
    assert pair.take_all(1) == [b"later"]
    assert len(pair.reader._buf) == copy_stream._BUFFER


def test_notices_and_parameter_statuses_are_passed_over(pair: Pair) -> None:
    pair.server.sendall(copy_data(b"a") + framed(b"N", b"SWARNING\0Mhm\0\0") + framed(b"S", b"x\0y\0")
                        + copy_data(b"b"))
    assert pair.take_all(2) == [b"a", b"b"]


@pytest.mark.parametrize(("sent", "says", "sqlstate", "clean"), [
    (framed(b"E", b"SFATAL\0C57P01\0Mterminating connection due to administrator command\0\0"),
     "the replication stream broke: FATAL: terminating connection due to administrator command", "57P01", False),
    (framed(b"c", b""), "the server ended the replication stream", None, True),
    (framed(b"d", b"") [:1] + pack(">I", 2), "says it is 2 bytes long", None, False),
    (framed(b"Z", b"I"), "a backend message of type 0x5a in the COPY", None, False),
    (b"", "lost the replication connection: the server closed it", None, False),
])
def test_the_stream_ends_with_its_reason_after_the_messages_before_it(
    pair: Pair, sent: bytes, says: str, sqlstate: str | None, clean: bool
) -> None:
    pair.server.sendall(copy_data(b"before") + sent)
    if not sent:
        pair.server.shutdown(socket.SHUT_WR)
    assert pair.take_all(1) == [b"before"]
    with pytest.raises(CopyEnded) as ended:
        pair.take_all(1)
    assert says in str(ended.value)
    assert (ended.value.sqlstate, ended.value.clean) == (sqlstate, clean)


def test_a_status_update_goes_out_as_copy_data(pair: Pair) -> None:
    pair.reader.send(b"r" + bytes(33))
    assert pair.server.recv(100) == copy_data(b"r" + bytes(33))
