"""How the message sequence becomes committed rows: ordinary, streamed, aborted, spilled."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import structlog

from cdc.core.spill import SpillBudget
from cdc.core.transactions import TransactionAssembler, TransactionError, each_transaction
from cdc.pgoutput import messages as m
from cdc.pgoutput.errors import PgOutputError
from cdc.pgoutput.framing import FrameDecoder, Txn
from implementations import IMPLEMENTATIONS, insert_decoding

from pgoutput.encoder import encode

REL = m.Relation(None, 16384, "public", "outbox", ord("d"), (m.Column(1, "id", 20, -1), m.Column(0, "v", 25, -1)))


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[object, ...]] = []
        self.runs: list[tuple[str, int]] = []  # (relation name, rows in the call)
        self.commits: list[int] = []
        self.relations: list[m.Relation] = []
        self.messages: list[tuple[str, bytes]] = []
        self.groups: list[int] = []  # whole transactions handed on in one call, per call

    def relation(self, relation: m.Relation) -> None:
        self.relations.append(relation)

    def rows(
        self, relation: m.Relation, tuples: Sequence[m.TupleData], commit_lsn: int, first_seq: int, commit_time: int
    ) -> None:
        self.runs.append((relation.name, len(tuples)))
        self.got.extend((relation.name, values, commit_lsn, seq) for seq, values in enumerate(tuples, first_seq))

    def commit(self, end_lsn: int) -> None:
        self.commits.append(end_lsn)

    def transactions(self, relation: m.Relation, tuples: Sequence[m.TupleData], txns: Sequence[Txn]) -> None:
        self.groups.append(len(txns))
        each_transaction(self, relation, tuples, txns)

    def message(self, prefix: str, content: bytes) -> None:
        self.messages.append((prefix, content))


def _assembler(budget: int = 10**9) -> tuple[TransactionAssembler, Recorder]:
    recorder = Recorder()
    return TransactionAssembler(recorder, SpillBudget(budget), structlog.get_logger()), recorder


def _insert(value: bytes, xid: int | None = None) -> m.Insert:
    return m.Insert(xid, REL.relation_id, (b"1", value))


def test_ordinary_transaction_rows_carry_the_commit_lsn_from_begin_and_their_position() -> None:
    asm, rec = _assembler()
    for message in (m.Begin(1000, 5, 700), REL, _insert(b"a"), _insert(b"b"), m.Commit(0, 1000, 1040, 5)):
        asm.feed(message)
    assert rec.got == [("outbox", (b"1", b"a"), 1000, 0), ("outbox", (b"1", b"b"), 1000, 1)]
    assert rec.commits == [1040]
    assert not asm.busy


def test_rows_are_passed_on_before_the_commit_arrives() -> None:
    asm, rec = _assembler()
    for message in (m.Begin(1000, 5, 700), REL, _insert(b"a")):
        asm.feed(message)
    assert len(rec.got) == 1 and rec.commits == []
    assert asm.busy


def test_streamed_transaction_is_held_until_stream_commit() -> None:
    asm, rec = _assembler()
    asm.feed(m.StreamStart(900, True))
    assert asm.in_stream
    asm.feed(m.Relation(900, REL.relation_id, "public", "outbox", ord("d"), REL.columns))
    asm.feed(_insert(b"a", xid=900))
    asm.feed(m.StreamStop())
    asm.feed(m.StreamStart(900, False))
    asm.feed(_insert(b"b", xid=900))
    asm.feed(m.StreamStop())
    assert rec.got == [] and asm.busy
    asm.feed(m.StreamCommit(900, 0, 5000, 5050, 9))
    assert [(r[1][1], r[2], r[3]) for r in rec.got] == [(b"a", 5000, 0), (b"b", 5000, 1)]
    assert rec.commits == [5050]
    assert not asm.busy


def test_stream_abort_drops_the_transaction_and_subtransaction_abort_drops_only_its_rows() -> None:
    asm, rec = _assembler()
    asm.feed(REL)
    asm.feed(m.StreamStart(900, True))
    asm.feed(_insert(b"keep", xid=900))
    asm.feed(_insert(b"sub", xid=901))
    asm.feed(m.StreamStop())
    asm.feed(m.StreamAbort(900, 901, None, None))
    asm.feed(m.StreamStart(800, True))
    asm.feed(_insert(b"gone", xid=800))
    asm.feed(m.StreamStop())
    asm.feed(m.StreamAbort(800, 800, None, None))
    asm.feed(m.StreamCommit(900, 0, 6000, 6100, 9))
    assert [(r[1][1], r[3]) for r in rec.got] == [(b"keep", 0)]
    assert rec.commits == [6100]


def test_streamed_rows_past_the_memory_budget_spill_to_a_file_and_come_back_in_order() -> None:
    budget = SpillBudget(2_000)
    rec = Recorder()
    asm = TransactionAssembler(rec, budget, structlog.get_logger())
    asm.feed(REL)
    asm.feed(m.StreamStart(900, True))
    for i in range(5_000):
        asm.feed(_insert(str(i).encode(), xid=900))
    asm.feed(m.StreamStop())
    assert budget.spilled_files == 1
    assert budget.in_memory <= 2_000
    asm.feed(m.StreamCommit(900, 0, 7000, 7100, 9))
    assert [r[1][1] for r in rec.got] == [str(i).encode() for i in range(5_000)]
    assert [r[3] for r in rec.got] == list(range(5_000))
    assert budget.in_memory == 0


def test_rows_held_from_before_an_alter_table_keep_their_old_relation() -> None:
    asm, rec = _assembler()
    asm.feed(REL)
    asm.feed(m.StreamStart(900, True))
    asm.feed(_insert(b"old", xid=900))
    altered = m.Relation(900, REL.relation_id, "public", "outbox", ord("d"), (*REL.columns, m.Column(0, "w", 25, -1)))
    asm.feed(altered)
    asm.feed(m.Insert(900, REL.relation_id, (b"2", b"new", b"w")))
    asm.feed(m.StreamStop())
    asm.feed(m.StreamCommit(900, 0, 7000, 7100, 9))
    assert len(rec.got[0][1]) == 2 and len(rec.got[1][1]) == 3
    assert rec.relations[-1] is altered


def test_a_relation_sent_again_replaces_the_cached_one() -> None:
    asm, _ = _assembler()
    asm.feed(REL)
    newer = m.Relation(None, REL.relation_id, "public", "outbox", ord("d"), REL.columns[:1])
    asm.feed(newer)
    assert asm.relations[REL.relation_id] is newer


@pytest.mark.parametrize(
    "sequence",
    [
        [m.Begin(1, 1, 1), m.Begin(2, 2, 2)],
        [m.Commit(0, 1, 2, 3)],
        [_insert(b"x")],
        [m.Begin(1, 1, 1), _insert(b"x")],  # no Relation first
        [m.BeginPrepare(1, 2, 3, 4, "gid")],
    ],
    ids=["nested-begin", "commit-outside", "insert-outside", "insert-before-relation", "two-phase"],
)
def test_protocol_violations_are_a_defined_error(sequence: list[m.Message]) -> None:
    asm, _ = _assembler()
    with pytest.raises(TransactionError):
        for message in sequence:
            asm.feed(message)


# -- runs of Insert frames: the reader's hot path -------------------------------------------------

HEADER = b"w" + bytes(24)  # the XLogData header the reader leaves in place
OTHER = m.Relation(None, 16385, "public", "other", ord("d"), REL.columns)


def _frame(message: m.Message) -> memoryview:
    return memoryview(HEADER + encode(message))


def _inserts(asm: TransactionAssembler, frames: list[memoryview]) -> None:
    """A read's frames, decoded into ``asm`` the way the stream session does it."""
    FrameDecoder(asm, keepalive=lambda frame: None).decode(frames)


@pytest.fixture(params=IMPLEMENTATIONS)
def insert_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The frames' runs decoded by each implementation (the process uses the one cdc.accel picked)."""
    monkeypatch.setattr("cdc.pgoutput.framing.insert_run_at", insert_decoding(request.param).insert_run_at)


@pytest.mark.usefixtures("insert_path")
def test_a_run_of_insert_frames_gives_the_rows_feeding_each_insert_would_give() -> None:
    inserts = [_insert(str(i).encode()) for i in range(5)]
    fed, fed_rec = _assembler()
    run, run_rec = _assembler()
    for asm in (fed, run):
        asm.feed(m.Begin(1000, 5, 700))
        asm.feed(REL)
    for message in inserts:
        fed.feed(message)
    _inserts(run, [_frame(message) for message in inserts[:2]])
    _inserts(run, [_frame(message) for message in inserts[2:]])
    assert run_rec.got == fed_rec.got
    assert [r[3] for r in run_rec.got] == [0, 1, 2, 3, 4]
    assert run_rec.runs == [("outbox", 2), ("outbox", 3)]


@pytest.mark.usefixtures("insert_path")
def test_a_run_is_split_where_the_relation_changes() -> None:
    asm, rec = _assembler()
    for message in (m.Begin(1000, 5, 700), REL, OTHER):
        asm.feed(message)
    a, b = REL.relation_id, OTHER.relation_id
    frames = [_frame(m.Insert(None, rel, (b"1", b"x"))) for rel in (a, a, b, a)]
    _inserts(asm, frames)
    assert rec.runs == [("outbox", 2), ("other", 1), ("outbox", 1)]
    assert [r[3] for r in rec.got] == [0, 1, 2, 3]


@pytest.mark.usefixtures("insert_path")
def test_a_run_outside_a_transaction_or_of_an_unknown_relation_is_a_protocol_error() -> None:
    asm, _ = _assembler()
    asm.feed(REL)
    with pytest.raises(TransactionError):
        _inserts(asm, [_frame(_insert(b"x"))])
    asm.feed(m.Begin(1000, 5, 700))
    with pytest.raises(TransactionError):
        _inserts(asm, [_frame(m.Insert(None, 999, (b"1", b"x")))])


def test_a_long_streamed_transaction_comes_out_in_bounded_runs_split_by_relation() -> None:
    asm, rec = _assembler()
    asm.feed(REL)
    asm.feed(OTHER)
    asm.feed(m.StreamStart(900, True))
    for i in range(10_000):
        asm.feed(m.Insert(900, REL.relation_id, (b"1", str(i).encode())))
    asm.feed(m.Insert(900, OTHER.relation_id, (b"1", b"last")))
    asm.feed(m.StreamStop())
    asm.feed(m.StreamCommit(900, 0, 7000, 7100, 9))
    assert rec.runs == [("outbox", 4096), ("outbox", 4096), ("outbox", 1808), ("other", 1)]
    assert [r[3] for r in rec.got] == list(range(10_001))


@pytest.mark.usefixtures("insert_path")
def test_small_transactions_as_frames_give_what_feeding_their_messages_gives() -> None:
    # Begin and Commit of the right size are read in place by the frame decoder.
    messages: list[m.Message] = [REL]
    for t in range(3):
        lsn = 1000 + 100 * t
        messages += [m.Begin(lsn, 5 + t, 700 + t), _insert(f"{t}a".encode()), _insert(f"{t}b".encode()),
                     m.Commit(0, lsn, lsn + 40, 5 + t)]
    fed, fed_rec = _assembler()
    framed, framed_rec = _assembler()
    for message in messages:
        fed.feed(message)
    _inserts(framed, [_frame(message) for message in messages])
    assert framed_rec.got == fed_rec.got
    assert framed_rec.commits == fed_rec.commits == [1040, 1140, 1240]
    assert framed_rec.groups == [3]
    assert not framed.busy


@pytest.mark.parametrize("sequence", [[m.Begin(1, 2, 3), m.Begin(4, 5, 6)], [m.Commit(0, 1, 2, 3)]])
def test_begin_and_commit_frames_out_of_place_are_a_protocol_error(sequence: list[m.Message]) -> None:
    asm, _ = _assembler()
    with pytest.raises(TransactionError):
        _inserts(asm, [_frame(message) for message in sequence])


def test_a_begin_frame_of_the_wrong_size_is_a_decoding_error_not_a_transaction() -> None:
    asm, _ = _assembler()
    with pytest.raises(PgOutputError):
        _inserts(asm, [memoryview(HEADER + encode(m.Begin(1, 2, 3)) + b"\0")])
    assert not asm.busy


# -- logical decoding messages (heartbeats) ------------------------------------------------------

TRANSACTIONAL = 1


def test_a_transactional_message_is_passed_on_in_its_transaction_and_the_commit_still_counts() -> None:
    asm, rec = _assembler()
    for message in (m.Begin(2000, 5, 701), m.LogicalMessage(None, TRANSACTIONAL, 1990, "cdc_heartbeat", b"{}"),
                    m.Commit(0, 2000, 2040, 5)):
        asm.feed(message)
    assert rec.messages == [("cdc_heartbeat", b"{}")]
    assert rec.got == [] and rec.commits == [2040]


def test_a_non_transactional_message_is_ignored() -> None:
    asm, rec = _assembler()
    asm.feed(m.LogicalMessage(None, 0, 1990, "cdc_heartbeat", b"{}"))
    assert rec.messages == [] and not asm.busy


def test_a_transactional_message_outside_a_transaction_is_a_protocol_error() -> None:
    asm, _ = _assembler()
    with pytest.raises(TransactionError):
        asm.feed(m.LogicalMessage(None, TRANSACTIONAL, 1990, "cdc_heartbeat", b"{}"))


def test_messages_of_a_streamed_transaction_come_at_its_commit_except_those_of_aborted_subtransactions() -> None:
    asm, rec = _assembler()
    asm.feed(m.StreamStart(900, True))
    asm.feed(m.LogicalMessage(900, TRANSACTIONAL, 10, "kept", b"1"))
    asm.feed(m.LogicalMessage(901, TRANSACTIONAL, 11, "dropped", b"2"))
    asm.feed(m.StreamStop())
    asm.feed(m.StreamAbort(900, 901, None, None))
    assert rec.messages == []
    asm.feed(m.StreamCommit(900, 0, 5000, 5050, 9))
    assert rec.messages == [("kept", b"1")] and rec.commits == [5050]
    asm.feed(m.StreamStart(800, True))
    asm.feed(m.LogicalMessage(800, TRANSACTIONAL, 12, "aborted", b"3"))
    asm.feed(m.StreamStop())
    asm.feed(m.StreamAbort(800, 800, None, None))
    assert rec.messages == [("kept", b"1")]
