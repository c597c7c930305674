"""Whole small transactions handed on in one call give what handing them on one message at a time gives.

Live traffic is many small transactions: cdc.pgoutput.framing hands the collector a read's
worth of them at once (Begin, Inserts into one relation, Commit, again and again, keepalives
between). The reference is the careful path: every frame decoded into its message and fed
to the assembler alone. Both paths must buffer the same rows in the same batches, dead-letter
the same rows, count the same, see keepalives that mean the same, and never let the acknowledgement
pass a transaction with a row that is not stored.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from itertools import pairwise

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc.core.buffer import BatchBuilder
from cdc.core.collector import Collector
from cdc.core.dedup import DedupWindow
from cdc.core.events import EVENT_COLUMNS, Batch
from cdc.core.spill import SpillBudget
from cdc.core.tracker import AckTracker
from cdc.core.transactions import TransactionAssembler
from cdc.pgoutput import decode
from cdc.pgoutput import messages as m
from cdc.pgoutput.framing import FrameDecoder, Keepalive, Txn, parse_copy_data
from implementations import IMPLEMENTATIONS, implementation, insert_decoding  # noqa: F401 - the fixture
from test_collector import BOUNDS, OUTBOX, row

from pgoutput.encoder import encode

pytestmark = pytest.mark.usefixtures("implementation")

OTHER = m.Relation(None, 2, "public", "other", ord("d"), OUTBOX.columns)
HEADER = b"w" + bytes(24)
Tx = list[tuple[str, bytes, bool]]  # (relation: "outbox" or "other", unique_id, a bad row)


class Pipeline:
    """The collector's side of a stream, with what it was told."""

    def __init__(self, max_rows: int, high_water_mark: tuple[int, int] | None, stop_before: int | None) -> None:
        self.builder = BatchBuilder(max_rows=max_rows, max_bytes=10**9, max_age=60)
        self.sealed: list[Batch] = []
        self.tracker = AckTracker(0)
        self.collector = Collector(
            outbox=("public", "outbox"), builder=self.builder, tracker=self.tracker, dedup=DedupWindow(1000),
            high_water_mark=high_water_mark, bounds=BOUNDS, max_payload_bytes=100, log=structlog.get_logger(),
            on_full=lambda: self.sealed.append(self.builder.seal()),
        )
        self.collector.stop_before = stop_before
        self.assembler = TransactionAssembler(self.collector, SpillBudget(10**9), structlog.get_logger())
        self.keepalives: list[tuple[int, bool, int]] = []  # position, reply asked, rows seen by then

    def keepalive(self, frame: Keepalive) -> None:
        self.keepalives.append((frame.wal_end, frame.reply_requested, self.collector.counters.rows_seen))

    def batches(self) -> list[Batch]:
        return [*self.sealed, self.builder.seal()]


def frames_of(txns: list[Tx], keepalive_after: list[bool]) -> tuple[list[bytes], dict[int, int]]:
    """The stream's frames, and each transaction's end LSN by its commit LSN."""
    frames = [HEADER + encode(OUTBOX), HEADER + encode(OTHER)]
    ends: dict[int, int] = {}
    outbox_id = 0
    for k, tx in enumerate(txns):
        lsn = 1000 * (k + 1)
        ends[lsn] = lsn + 64
        frames.append(HEADER + encode(m.Begin(lsn, 5_000_000 + k, 700 + k)))
        for relation, uid, bad in tx:
            outbox_id += 1
            values = row(uid.decode(), outbox_id=outbox_id, **({"occurred_at": b"infinity"} if bad else {}))
            frames.append(HEADER + encode(m.Insert(None, 1 if relation == "outbox" else 2, values)))
        frames.append(HEADER + encode(m.Commit(0, lsn, lsn + 64, 5_000_000 + k)))
        if keepalive_after[k]:
            frames.append(b"k" + struct.pack("!Qq?", lsn + 64, 0, k % 2 == 0))
    return frames, ends


def one_message_at_a_time(p: Pipeline, frames: list[bytes]) -> None:
    for frame in frames:
        if frame[:1] == b"w":
            p.assembler.feed(decode(memoryview(frame)[len(HEADER):]))
        else:
            p.keepalive(parse_copy_data(memoryview(frame)))  # type: ignore[arg-type]


def as_reads(decoder: Callable[[list[memoryview]], None], frames: list[bytes], cuts: list[int]) -> None:
    views = [memoryview(frame) for frame in frames]
    edges = sorted({0, len(views), *(c % (len(views) + 1) for c in cuts)})
    for a, b in pairwise(edges):
        decoder(views[a:b])


def snapshot(p: Pipeline, batches: list[Batch]) -> dict[str, object]:
    c = p.collector.counters
    return {
        "batches": [dict(zip(EVENT_COLUMNS, b.columns)) for b in batches],
        "dead_letters": [[(d.commit_lsn, d.commit_seq, d.reason, d.row_json) for d in b.dead_letters] for b in batches],
        "counters": (c.rows_seen, c.rows_buffered, c.duplicates, c.dead_letters, c.already_stored,
                     c.left_to_next_generation),
        "last_position": p.collector.last_position,
    }


def keepalives_alike(grouped: Pipeline, reference: Pipeline) -> None:
    """The keepalives of a group of transactions may come as one: the last one's position, and a reply asked
    if any asked. What must hold is what the session does with them: the same last position, none invented,
    a reply at or after every position that asked for one, and none before the rows that came before it."""
    got, expected = grouped.keepalives, reference.keepalives
    assert [k[0] for k in got[-1:]] == [k[0] for k in expected[-1:]]
    rows_before = {position: rows for position, _, rows in expected}
    for position, _, rows in got:
        assert position in rows_before and rows >= rows_before[position], (position, rows, expected)
    for position, asked, _ in expected:
        if asked:
            assert any(p >= position and replied for p, replied, _ in got), (position, got)


def never_past_an_unstored_row(p: Pipeline, batches: list[Batch], ends: dict[int, int]) -> int:
    """Store the batches one by one: each time, the safe LSN must be below the end of every transaction with
    a row still unstored. Returns the safe LSN once all are stored."""
    for k in range(len(batches) + 1):
        safe = p.tracker.stored(batches[k - 1].seq) if k else p.tracker.safe_lsn
        later = [lsn for b in batches[k:] for lsn in b.columns[EVENT_COLUMNS.index("commit_lsn")]]
        later += [d.commit_lsn for b in batches[k:] for d in b.dead_letters]
        assert all(safe < ends[lsn] for lsn in later), (safe, later)
    return p.tracker.safe_lsn


transactions = st.lists(
    st.lists(st.tuples(st.sampled_from(["outbox"] * 6 + ["other"]), st.sampled_from([b"a", b"b", b"c", b"d", b"e",
             b"f", b"g", b"h"]).flatmap(lambda p: st.integers(0, 30).map(lambda i: p + str(i).encode())),
             st.sampled_from([False] * 9 + [True])),
             max_size=6),
    min_size=1, max_size=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(txns=transactions, keepalive_after=st.lists(st.booleans(), min_size=25, max_size=25),
       cuts=st.lists(st.integers(0, 400), max_size=6), max_rows=st.integers(1, 40),
       mark=st.none() | st.tuples(st.integers(0, 26), st.integers(0, 6)),
       stop=st.none() | st.integers(1, 26), compiled_runs=st.sampled_from(IMPLEMENTATIONS))
def test_whole_small_transactions_in_one_call_give_what_one_message_at_a_time_gives(
    txns: list[Tx], keepalive_after: list[bool], cuts: list[int], max_rows: int, mark: tuple[int, int] | None,
    stop: int | None, compiled_runs: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoding = insert_decoding(compiled_runs)
    monkeypatch.setattr("cdc.pgoutput.framing.insert_run_at", decoding.insert_run_at)
    monkeypatch.setattr("cdc.pgoutput.framing.transactions_at", decoding.transactions_at)
    frames, ends = frames_of(txns, keepalive_after)
    hwm = None if mark is None else (1000 * mark[0], mark[1])
    stop_before = None if stop is None else 1000 * stop
    reference, grouped = Pipeline(max_rows, hwm, stop_before), Pipeline(max_rows, hwm, stop_before)
    one_message_at_a_time(reference, frames)
    as_reads(FrameDecoder(grouped.assembler, grouped.keepalive).decode, frames, cuts)
    got, expected = grouped.batches(), reference.batches()
    assert snapshot(grouped, got) == snapshot(reference, expected)
    keepalives_alike(grouped, reference)
    assert (never_past_an_unstored_row(grouped, got, ends)
            == never_past_an_unstored_row(reference, expected, ends))


def test_a_read_of_small_transactions_reaches_the_collector_in_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    txns: list[Tx] = [[("outbox", f"u{k}-{i}".encode(), False) for i in range(5)] for k in range(8)]
    frames, _ = frames_of(txns, [k % 3 == 0 for k in range(8)])
    p = Pipeline(1000, None, None)
    calls: list[int] = []
    original = p.collector.transactions

    def counted(relation: m.Relation, tuples: list[m.TupleData], txns: list[Txn]) -> None:
        calls.append(len(txns))
        original(relation, tuples, txns)

    monkeypatch.setattr(p.collector, "transactions", counted)
    FrameDecoder(p.assembler, p.keepalive).decode([memoryview(f) for f in frames])
    assert calls == [8]
    assert p.collector.counters.rows_buffered == 40 and p.tracker.last_commit_lsn == 8000 + 64
    # The three keepalives between them come as one, after the rows: the last position, and the replies asked.
    assert p.keepalives == [(7064, True, 40)]
