"""Messages captured from real PostgreSQL 15 and 18 servers decode to what the workload wrote."""

from __future__ import annotations

from datetime import datetime, timezone
from struct import pack

import pytest

from cdc.lsn import parse_lsn
from cdc.pgoutput import (
    UNCHANGED, Begin, BeginPrepare, Commit, CommitPrepared, Delete, Insert, LogicalMessage, Message,
    Origin, Prepare, Relation, RollbackPrepared, StreamAbort, StreamCommit, StreamPrepare, StreamStart,
    StreamStop, Truncate, Type, Update, pg_epoch_micros_to_datetime,
)

from .capture import (
    BIG_BODY, FILLER_ROWS, GIDS, MOOD_ROW, NONTX_MESSAGE, ORIGIN, ORIGIN_LSN, ORIGIN_TIME, OUTBOX_ROWS,
    STREAM_MESSAGE, TRACE_ID, TX_MESSAGE,
)
from .captures import Capture, captures, of_scenario
from .encoder import encode

OUTBOX_COLUMNS = ("id", "unique_id", "event_type", "occurred_at", "environment", "payload", "metadata_version")
OUTBOX_TYPES = (20, 25, 25, 1184, 25, 3802, 23)  # int8, text, text, timestamptz, text, jsonb, int4


def _file(capture: Capture) -> str:
    return capture.file


def row(row_id: int, values: tuple[str | None, ...], *extra: str | None) -> tuple[bytes | None, ...]:
    """An outbox row as the server sends it in text mode."""
    return tuple(None if v is None else v.encode() for v in (str(row_id), *values, *extra))


def key(row_id: int, width: int = 7) -> tuple[bytes | None, ...]:
    """An old-key tuple: the key column set, the others sent as NULL."""
    return (str(row_id).encode(),) + (None,) * (width - 1)


def with_column(values: tuple[str | None, ...], name: str, value: str) -> tuple[str | None, ...]:
    index = OUTBOX_COLUMNS.index(name) - 1  # OUTBOX_ROWS have no id
    return values[:index] + (value,) + values[index + 1 :]


def micros(text: str) -> int:
    moment = datetime.fromisoformat(text + ":00")  # '+00' -> '+00:00'
    return round((moment - datetime(2000, 1, 1, tzinfo=timezone.utc)).total_seconds() * 1_000_000)


def relation_id(messages: list[Message], name: str) -> int:
    return next(m.relation_id for m in messages if isinstance(m, Relation) and m.name == name)


def changes(messages: list[Message]) -> list[Message]:
    return [m for m in messages if isinstance(m, (Insert, Update, Delete, Truncate))]


@pytest.mark.parametrize("capture", captures(), ids=_file)
def test_every_captured_message_decodes_and_encodes_back_to_the_same_bytes(capture: Capture) -> None:
    for raw, message in zip(capture.raw, capture.decoded(), strict=True):
        assert encode(message, binary=capture.binary) == raw


@pytest.mark.parametrize("capture", captures(), ids=_file)
def test_transaction_boundaries_agree_with_each_other(capture: Capture) -> None:
    """Begin/Commit, Begin Prepare/Prepare and Stream Start/Stop pair up, with matching LSNs and xids."""
    opened: Message | None = None
    streamed: set[int] = set()
    prepared: dict[str, Prepare | StreamPrepare] = {}
    for m in capture.decoded():
        if isinstance(m, (Begin, BeginPrepare, StreamStart)):
            assert opened is None
            opened = m
            if isinstance(m, StreamStart):
                assert m.first_segment == (m.xid not in streamed)
                streamed.add(m.xid)
        elif isinstance(m, Commit):
            assert isinstance(opened, Begin) and opened.final_lsn == m.commit_lsn < m.end_lsn
            assert opened.commit_time == m.commit_time and m.flags == 0
            opened = None
        elif isinstance(m, Prepare):
            assert isinstance(opened, BeginPrepare)
            assert (opened.prepare_lsn, opened.end_lsn, opened.xid, opened.gid) == (
                m.prepare_lsn, m.end_lsn, m.xid, m.gid)
            prepared[m.gid], opened = m, None
        elif isinstance(m, StreamStop):
            assert isinstance(opened, StreamStart)
            opened = None
        elif isinstance(m, (StreamCommit, StreamAbort, StreamPrepare)):
            assert opened is None and m.xid in streamed
            if isinstance(m, StreamPrepare):
                prepared[m.gid] = m
        elif isinstance(m, (CommitPrepared, RollbackPrepared)):
            assert prepared[m.gid].xid == m.xid
        for stamp in ("commit_time", "prepare_time", "rollback_time", "abort_time"):
            if getattr(m, stamp, None) is not None:
                assert pg_epoch_micros_to_datetime(getattr(m, stamp)).year >= 2024
    assert opened is None


@pytest.mark.parametrize("capture", of_scenario("v1_dml"), ids=_file)
def test_dml_capture_holds_every_change_form_with_its_values(capture: Capture) -> None:
    messages = capture.decoded()
    outbox, moods, docs = (relation_id(messages, name) for name in ("outbox", "moods", "docs"))
    staged = with_column(OUTBOX_ROWS[0], "environment", "staging")
    assert changes(messages) == [
        Insert(None, outbox, row(1, OUTBOX_ROWS[0])),
        Insert(None, outbox, row(2, OUTBOX_ROWS[1])),  # NULL environment, payload, version
        Insert(None, outbox, row(3, OUTBOX_ROWS[2])),  # non-ASCII and escapes in jsonb
        Insert(None, outbox, row(4, OUTBOX_ROWS[3])),
        Update(None, outbox, None, None, row(1, staged)),  # key unchanged: no old tuple
        Update(None, outbox, None, key(2), row(20, OUTBOX_ROWS[1])),  # key changed: 'K'
        Delete(None, outbox, None, key(3)),
        Update(None, outbox, row(1, staged), None, row(1, with_column(staged, "metadata_version", "4"))),  # FULL
        Delete(None, outbox, row(4, OUTBOX_ROWS[3]), None),
        Insert(None, outbox, row(5, OUTBOX_ROWS[4], TRACE_ID)),  # after ADD COLUMN
        Insert(None, moods, tuple(v.encode() for v in MOOD_ROW)),
        Insert(None, docs, (b"1", b"1", BIG_BODY.encode())),
        Update(None, docs, None, None, (b"1", b"2", UNCHANGED)),  # TOASTed body not resent
        Truncate(None, 1 | 2, (moods, docs)),  # CASCADE | RESTART IDENTITY
        Insert(None, outbox, row(6, OUTBOX_ROWS[5], None)),
    ]


@pytest.mark.parametrize("capture", of_scenario("v1_dml"), ids=_file)
def test_dml_capture_describes_relations_and_user_types(capture: Capture) -> None:
    messages = capture.decoded()
    outbox = [m for m in messages if isinstance(m, Relation) and m.name == "outbox"]
    default, full, added = outbox[0], outbox[1], outbox[-1]
    assert (default.namespace, chr(default.replica_identity)) == ("public", "d")
    assert [(c.name, c.type_oid, c.type_modifier, c.flags) for c in default.columns] == [
        (name, oid, -1, 1 if name == "id" else 0) for name, oid in zip(OUTBOX_COLUMNS, OUTBOX_TYPES)]
    assert chr(full.replica_identity) == "f" and all(c.flags == 1 for c in full.columns)
    assert [c.name for c in added.columns] == [*OUTBOX_COLUMNS, "trace_id"]

    moods = next(m for m in messages if isinstance(m, Relation) and m.name == "moods")
    types = {m.name: m for m in messages if isinstance(m, Type)}
    assert moods.namespace == "capture"
    assert (types["mood"].namespace, types["mood"].type_oid) == ("capture", moods.columns[1].type_oid)
    # A domain is announced under its own OID but with its base type's name,
    # and pg_catalog is sent as the empty namespace.
    assert (types["int4"].namespace, types["int4"].type_oid) == ("", moods.columns[2].type_oid)


@pytest.mark.parametrize("capture", of_scenario("v1_dml"), ids=_file)
def test_dml_capture_carries_logical_messages_and_the_replication_origin(capture: Capture) -> None:
    messages = capture.decoded()
    logical = [m for m in messages if isinstance(m, LogicalMessage)]
    assert [(m.xid, m.flags, m.prefix, m.content) for m in logical] == [
        (None, 1, TX_MESSAGE[0].decode(), TX_MESSAGE[1]),
        (None, 0, NONTX_MESSAGE[0].decode(), NONTX_MESSAGE[1]),
    ]
    assert logical[0].lsn < logical[1].lsn

    at = next(i for i, m in enumerate(messages) if isinstance(m, Origin))
    begin, origin, insert, commit = messages[at - 1 : at + 3]
    assert origin == Origin(parse_lsn(ORIGIN_LSN), ORIGIN)
    assert isinstance(begin, Begin) and isinstance(commit, Commit) and isinstance(insert, Insert)
    # The origin's timestamp replaces the local commit time.
    assert begin.commit_time == commit.commit_time == micros(ORIGIN_TIME)


@pytest.mark.parametrize("capture", of_scenario("v1_binary"), ids=_file)
def test_binary_capture_holds_send_function_output(capture: Capture) -> None:
    messages = capture.decoded()
    first, second = (row(i + 1, OUTBOX_ROWS[i]) for i in range(2))
    assert [m.new for m in changes(messages) if isinstance(m, Insert)] == [
        (pack(">q", 1), first[1], first[2], pack(">q", micros(OUTBOX_ROWS[0][2] or "")),
         first[4], b"\x01" + (first[5] or b""), pack(">i", 3)),  # jsonb: a version byte, then text
        (pack(">q", 2), second[1], second[2], pack(">q", micros(OUTBOX_ROWS[1][2] or "")), None, None, None),
        (pack(">i", 1), b"excited", pack(">i", 7)),  # enum: its label; domain: the base type's int4
    ]


def committed_changes(messages: list[Message]) -> list[Message]:
    """Replay as a subscriber would: a streamed transaction's changes wait for
    Stream Commit, and Stream Abort drops the (sub)transaction it names."""
    committed: list[Message] = []
    pending: dict[int, list[Message]] = {}
    stream_xid: int | None = None
    for m in messages:
        if isinstance(m, StreamStart):
            stream_xid = m.xid
            pending.setdefault(m.xid, [])
        elif isinstance(m, StreamStop):
            stream_xid = None
        elif isinstance(m, StreamAbort):
            kept = [] if m.subxid == m.xid else [c for c in pending[m.xid] if getattr(c, "xid") != m.subxid]
            pending[m.xid] = kept
        elif isinstance(m, StreamCommit):
            committed += pending.pop(m.xid)
        elif isinstance(m, (Insert, Update, Delete, Truncate, LogicalMessage)):
            assert (m.xid is None) == (stream_xid is None)
            if stream_xid is None:
                committed.append(m)
            else:
                pending[stream_xid].append(m)
    return committed


@pytest.mark.parametrize("capture", of_scenario("v2_streaming") + of_scenario("v4_parallel"), ids=_file)
def test_streamed_transactions_replay_to_exactly_the_committed_rows(capture: Capture) -> None:
    messages = capture.decoded()
    outbox, moods, docs, filler = (relation_id(messages, n) for n in ("outbox", "moods", "docs", "filler"))
    starts = [m for m in messages if isinstance(m, StreamStart)]
    big, aborted, with_savepoint = list(dict.fromkeys(m.xid for m in starts))  # by first segment
    abort_all, abort_sub = (m for m in messages if isinstance(m, StreamAbort))
    assert (abort_all.xid, abort_all.subxid) == (aborted, aborted)
    assert abort_sub.xid == with_savepoint and abort_sub.subxid != with_savepoint
    for abort in (abort_all, abort_sub):  # the abort LSN and time only with streaming = parallel
        assert (abort.abort_lsn is not None) == (abort.abort_time is not None) == (capture.proto_version == 4)

    replayed = committed_changes(messages)
    after_rollback_to = replayed[-2]
    assert isinstance(after_rollback_to, Insert)
    last_savepoint_xid = after_rollback_to.xid  # ROLLBACK TO starts a new subtransaction
    assert last_savepoint_xid not in (with_savepoint, abort_sub.subxid, None)
    stream_message = next(m for m in replayed if isinstance(m, LogicalMessage))
    assert (stream_message.xid, stream_message.flags, stream_message.content) == (big, 1, STREAM_MESSAGE[1])
    assert [m for m in replayed if not isinstance(m, LogicalMessage)] == [
        Insert(big, outbox, row(1, OUTBOX_ROWS[0])),
        Insert(big, moods, tuple(v.encode() for v in MOOD_ROW)),
        Update(big, outbox, None, None, row(1, with_column(OUTBOX_ROWS[0], "environment", "staging"))),
        Delete(big, outbox, None, key(1)),
        Truncate(big, 0, (docs,)),
        Insert(big, outbox, row(2, OUTBOX_ROWS[1], TRACE_ID)),
        *(Insert(big, filler, (str(i).encode(),)) for i in range(1, FILLER_ROWS + 1)),
        Insert(with_savepoint, outbox, row(3, OUTBOX_ROWS[2], None)),
        Insert(last_savepoint_xid, outbox, row(4, OUTBOX_ROWS[3], None)),
        Insert(None, outbox, row(5, OUTBOX_ROWS[4], None)),  # small: not streamed
    ]
    in_stream_types = [m for m in messages if isinstance(m, (Type, Relation)) and m.xid == big]
    assert {m.name for m in in_stream_types} >= {"mood", "int4", "moods", "outbox", "filler"}


@pytest.mark.parametrize("capture", of_scenario("v3_two_phase"), ids=_file)
def test_two_phase_capture_prepares_commits_and_rolls_back(capture: Capture) -> None:
    messages = capture.decoded()
    outbox, filler = relation_id(messages, "outbox"), relation_id(messages, "filler")
    begins = [m for m in messages if isinstance(m, BeginPrepare)]
    prepares = [m for m in messages if isinstance(m, (Prepare, StreamPrepare))]
    committed = [m for m in messages if isinstance(m, CommitPrepared)]
    rolled_back = [m for m in messages if isinstance(m, RollbackPrepared)]
    assert [m.gid for m in begins] == list(GIDS[:2])
    assert [(type(m), m.gid) for m in prepares] == [(Prepare, GIDS[0]), (Prepare, GIDS[1]), (StreamPrepare, GIDS[2])]
    assert [m.gid for m in committed] == [GIDS[0], GIDS[2]] and [m.gid for m in rolled_back] == [GIDS[1]]

    rollback, prepare = rolled_back[0], prepares[1]
    assert (rollback.prepare_end_lsn, rollback.prepare_time) == (prepare.end_lsn, prepare.prepare_time)
    assert rollback.rollback_end_lsn > rollback.prepare_end_lsn and rollback.rollback_time >= prepare.prepare_time
    assert all(c.commit_lsn >= p.end_lsn for c, p in zip(committed, (prepares[0], prepares[2])))

    streamed = prepares[2].xid
    assert changes(messages) == [
        Insert(None, outbox, row(1, OUTBOX_ROWS[0])),
        Insert(None, outbox, row(2, OUTBOX_ROWS[1])),
        Insert(streamed, outbox, row(3, OUTBOX_ROWS[2])),
        *(Insert(streamed, filler, (str(i).encode(),)) for i in range(1, FILLER_ROWS + 1)),
    ]


def test_captures_cover_every_message_type_on_both_servers() -> None:
    seen: dict[int, set[str]] = {}
    for capture in captures():
        seen.setdefault(capture.server_major, set()).update(chr(raw[0]) for raw in capture.raw)
    assert set(seen) == {15, 18}
    everything = set("BCORYIUDTMSEcAbPKrp")
    assert seen[15] == seen[18] == everything
    abort_forms = {len(raw) for c in captures() for raw in c.raw if raw[:1] == b"A"}
    assert abort_forms == {9, 25}  # with and without the protocol 4 abort LSN and time
