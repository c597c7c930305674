"""Turns the sequence of pgoutput messages into committed rows, in commit order.

The relation cache belongs here, with the stream: a Relation re-sent after an
ALTER TABLE replaces the old one. Rows of an ordinary transaction are passed on
as they arrive (the server sends a transaction only once it has committed, and
Begin already carries the commit LSN), so a huge transaction never sits whole
in memory. Rows of a streamed transaction are held until Stream Commit and
dropped on Stream Abort.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from structlog.typing import FilteringBoundLogger

from ..pgoutput import messages as m
from ..pgoutput.framing import Txn
from .spill import SpillBudget, Spool

# Rows of a streamed transaction are passed on in runs of at most this many.
_RUN: Final = 4096


class TransactionError(Exception):
    """The message sequence broke the protocol's rules, or asked for a feature we did not enable."""


class RowHandler(Protocol):
    def relation(self, relation: m.Relation) -> None: ...

    def rows(
        self, relation: m.Relation, tuples: Sequence[m.TupleData], commit_lsn: int, first_seq: int, commit_time: int
    ) -> None:
        """Consecutive rows of one relation in one transaction, at positions first_seq, first_seq + 1..."""
        ...

    def commit(self, end_lsn: int) -> None: ...

    def transactions(self, relation: m.Relation, tuples: Sequence[m.TupleData], txns: Sequence[Txn]) -> None:
        """Whole transactions in a row, each its (rows, commit LSN, commit time, end LSN) in ``txns`` and its
        rows, in order, in ``tuples``: the same as ``rows`` then ``commit`` for each, in one call."""
        ...

    def message(self, prefix: str, content: bytes) -> None:
        """A transactional logical decoding message of the transaction being passed on (heartbeats)."""
        ...


def each_transaction(handler: RowHandler, relation: m.Relation, tuples: Sequence[m.TupleData],
                     txns: Sequence[Txn]) -> None:
    """``transactions`` as ``rows`` then ``commit`` for each: the meaning a handler's own must keep."""
    start = 0
    for n, commit_lsn, commit_time, end_lsn in txns:
        if n:
            handler.rows(relation, tuples[start:start + n], commit_lsn, 0, commit_time)
        start += n
        handler.commit(end_lsn)


class _StreamedTransaction:
    def __init__(self, budget: SpillBudget) -> None:
        self.spool = Spool(budget)
        self.aborted_subxids: set[int] = set()
        self.messages: list[tuple[int | None, str, bytes]] = []  # (sub)xid, prefix, content


class TransactionAssembler:
    def __init__(self, handler: RowHandler, budget: SpillBudget, log: FilteringBoundLogger) -> None:
        self._handler = handler
        self._budget = budget
        self._log = log
        self.relations: dict[int, m.Relation] = {}
        self._in_transaction = False
        self._commit_lsn = 0
        self._commit_time = 0
        self._seq = 0
        self._streams: dict[int, _StreamedTransaction] = {}
        self._stream_xid: int | None = None
        self._handlers: dict[type, Callable[[Any], None]] = {
            m.Begin: self._begin, m.Commit: self._commit, m.Relation: self._relation,
            m.Insert: self._insert, m.StreamStart: self._stream_start, m.StreamStop: self._stream_stop,
            m.StreamCommit: self._stream_commit, m.StreamAbort: self._stream_abort, m.LogicalMessage: self._message,
        }
        self._ignored: set[type] = {m.Origin, m.Type, m.Update, m.Delete, m.Truncate}

    @property
    def in_stream(self) -> bool:
        """True between Stream Start and Stream Stop: change messages then carry an xid."""
        return self._stream_xid is not None

    @property
    def busy(self) -> bool:
        """Inside a transaction, or holding streamed transactions that have not ended."""
        return self._in_transaction or bool(self._streams) or self._stream_xid is not None

    def feed(self, message: m.Message) -> None:
        handler = self._handlers.get(type(message))
        if handler is not None:
            handler(message)
        elif type(message) in self._ignored:
            if isinstance(message, (m.Update, m.Delete, m.Truncate)):
                # The publication publishes inserts only; someone changed it, or replays an old slot.
                self._log.debug("ignored change", kind=type(message).__name__)
        else:
            raise TransactionError(
                f"unexpected {type(message).__name__} message: two-phase decoding is not supported, "
                "create the slot without two_phase"
            )

    def reset(self) -> None:
        """Forget everything tied to one replication session (on reconnect the server starts over)."""
        for stream in self._streams.values():
            stream.spool.close()
        self._streams.clear()
        self._stream_xid = None
        self._in_transaction = False
        self.relations.clear()

    def _begin(self, message: m.Begin) -> None:
        self.begin_at(message.final_lsn, message.commit_time)

    def begin_at(self, final_lsn: int, commit_time: int) -> None:
        """A Begin, as its fields (see cdc.pgoutput.framing.FrameDecoder)."""
        if self._in_transaction:
            raise TransactionError("Begin inside a transaction")
        self._in_transaction = True
        self._commit_lsn = final_lsn
        self._commit_time = commit_time
        self._seq = 0

    def _commit(self, message: m.Commit) -> None:
        self.commit_at(message.end_lsn)

    def commit_at(self, end_lsn: int) -> None:
        """A Commit, as the one field it needs (see cdc.pgoutput.framing.FrameDecoder)."""
        if not self._in_transaction:
            raise TransactionError("Commit outside a transaction")
        self._in_transaction = False
        self._handler.commit(end_lsn)

    def _message(self, message: m.LogicalMessage) -> None:
        if not message.flags & 1:
            # Non-transactional: sent the moment it is decoded, part of no transaction.
            return
        if self._stream_xid is not None:
            self._streams[self._stream_xid].messages.append((message.xid, message.prefix, message.content))
            return
        if not self._in_transaction:
            raise TransactionError("transactional Message outside a transaction")
        self._handler.message(message.prefix, message.content)

    def _relation(self, message: m.Relation) -> None:
        self.relations[message.relation_id] = message
        self._handler.relation(message)

    def _insert(self, message: m.Insert) -> None:
        if self._stream_xid is not None:
            stream = self._streams[self._stream_xid]
            nbytes = sum(len(v) for v in message.new if type(v) is bytes) + 64
            # Keep the Relation itself, not its id: an ALTER TABLE later in the same
            # transaction must not change how earlier rows are read.
            stream.spool.append((message.xid, self._relation_of(message.relation_id), message.new), nbytes)
            return
        if not self._in_transaction:
            raise TransactionError("Insert outside a transaction")
        self._handler.rows(self._relation_of(message.relation_id), (message.new,), self._commit_lsn, self._seq,
                           self._commit_time)
        self._seq += 1

    def insert_run(self, relation_id: int, tuples: list[m.TupleData]) -> None:
        """The new tuples of consecutive Inserts into one relation: ``feed`` for each, in one call to the handler.

        For the commonest run of messages, outside a streamed block (see cdc.pgoutput.framing.FrameDecoder).
        """
        if self._stream_xid is not None:
            raise TransactionError("a run of Inserts without their xid inside a streamed block")
        if not self._in_transaction:
            raise TransactionError("Insert outside a transaction")
        self._handler.rows(self._relation_of(relation_id), tuples, self._commit_lsn, self._seq, self._commit_time)
        self._seq += len(tuples)

    def transactions(self, relation_id: int, tuples: list[m.TupleData], txns: list[Txn]) -> None:
        """Whole transactions of Inserts into one relation, Begin to Commit, outside any other
        (see cdc.pgoutput.framing.FrameDecoder): ``begin_at``, ``insert_run``, ``commit_at`` for each, in one call."""
        if self._stream_xid is not None:
            raise TransactionError("a run of Inserts without their xid inside a streamed block")
        if self._in_transaction:
            raise TransactionError("Begin inside a transaction")
        self._handler.transactions(self._relation_of(relation_id), tuples, txns)

    def _relation_of(self, relation_id: int) -> m.Relation:
        relation = self.relations.get(relation_id)
        if relation is None:
            raise TransactionError(f"Insert for relation {relation_id} before its Relation message")
        return relation

    def _stream_start(self, message: m.StreamStart) -> None:
        if self._stream_xid is not None:
            raise TransactionError("Stream Start inside a streamed block")
        self._stream_xid = message.xid
        if message.xid not in self._streams:
            self._streams[message.xid] = _StreamedTransaction(self._budget)

    def _stream_stop(self, message: m.StreamStop) -> None:
        self._stream_xid = None

    def _stream_commit(self, message: m.StreamCommit) -> None:
        stream = self._streams.pop(message.xid, None)
        if stream is None:  # a streamed transaction with no changes we were sent
            self._handler.commit(message.end_lsn)
            return
        try:
            seq = 0
            aborted = stream.aborted_subxids
            run: list[m.TupleData] = []
            run_relation: m.Relation | None = None
            for xid, relation, values in stream.spool:
                if xid in aborted:
                    continue
                if relation is not run_relation or len(run) >= _RUN:
                    if run_relation is not None:
                        self._handler.rows(run_relation, run, message.commit_lsn, seq, message.commit_time)
                        seq += len(run)
                    run_relation, run = relation, []
                run.append(values)
            if run_relation is not None:
                self._handler.rows(run_relation, run, message.commit_lsn, seq, message.commit_time)
        finally:
            stream.spool.close()
        for xid, prefix, content in stream.messages:
            if xid not in aborted:
                self._handler.message(prefix, content)
        self._handler.commit(message.end_lsn)

    def _stream_abort(self, message: m.StreamAbort) -> None:
        if message.subxid == message.xid:
            stream = self._streams.pop(message.xid, None)
            if stream is not None:
                stream.spool.close()
        elif message.xid in self._streams:
            self._streams[message.xid].aborted_subxids.add(message.subxid)

