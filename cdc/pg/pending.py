"""What the slot still holds: outbox rows committed after its confirmed position, read without moving it.

A temporary copy of the slot (``pg_copy_logical_replication_slot``, possible
while ``cdc run`` holds the original) is peeked with
``pg_logical_slot_peek_binary_changes`` and the pgoutput messages are decoded
here. The copy starts at the slot's confirmed position and belongs to this
session: closing the connection drops it. Without a free slot for the copy,
an idle slot is peeked directly (a peek never moves it).

Two answers come out of one pass, up to a WAL position:
- ``in_flight``: the hashes of rows after a stored position (the ClickHouse
  high-water mark): delivered by ``cdc run`` when it gets to them;
- ``first_id_from``: the lowest outbox id committed at or after an LSN (for
  ``cdc verify --from-lsn``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Final

import psycopg

from ..core.reconcile import id_hash
from ..lsn import format_lsn
from ..pgoutput import Begin, Insert, Relation, decode
from .connect import Conn, connect, describe

_FETCH: Final = 10_000


@dataclass(slots=True)
class Pending:
    complete: bool = True          # False: the answers cover only part of what the slot holds
    reason: str | None = None      # why not complete
    in_flight: set[int] = field(default_factory=set)
    first_id_from: int | None = None
    rows: int = 0                  # outbox rows read from the slot


def read_pending(
    dsn: str, *, slot: str, publication: str, outbox: tuple[str, str], upto_lsn: int,
    stored: tuple[int, int] | None, from_lsn: int | None = None, timeout: float = 60.0,
    max_changes: int = 2_000_000,
) -> Pending:
    """Read the slot up to ``upto_lsn``; see the module docstring. Never raises for a server refusal."""
    try:
        conn = connect(dsn, timeout=timeout, application_name="cdc-verify-pending")
    except psycopg.Error as exc:
        return Pending(complete=False, reason=f"cannot connect: {describe(exc)}")
    except Exception as exc:  # noqa: BLE001 - a ConnectError: reported, not raised
        return Pending(complete=False, reason=str(exc))
    with conn:
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{int(timeout * 1000)}ms",))
        target, why = _copy(conn, slot)
        if target is None:
            return Pending(complete=False, reason=why)
        try:
            return _peek(conn, target, publication, outbox, upto_lsn, stored, from_lsn, max_changes)
        except psycopg.Error as exc:
            return Pending(complete=False, reason=f"cannot read slot {slot}: {describe(exc)}")


def _copy(conn: Conn, slot: str) -> tuple[str | None, str]:
    name = f"cdc_verify_{secrets.token_hex(6)}"
    try:
        conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s, true)", (slot, name))
        return name, ""
    except psycopg.Error as exc:
        refusal = describe(exc)
    active = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    if active is not None and not active[0]:
        return slot, ""
    return None, f"cannot copy slot {slot} to read what it holds ({refusal})"


def _peek(
    conn: Conn, slot: str, publication: str, outbox: tuple[str, str], upto_lsn: int,
    stored: tuple[int, int] | None, from_lsn: int | None, max_changes: int,
) -> Pending:
    result = Pending()
    columns: dict[int, tuple[int, int] | None] = {}  # relation id -> (id, unique_id) column indexes, or not ours
    commit_lsn, seq, changes = 0, 0, 0
    query = ("SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, %s, "
             "'proto_version', '1', 'publication_names', %s)")
    with conn.transaction(), conn.cursor(name="cdc_verify_peek", binary=True) as cur:
        cur.itersize = _FETCH
        cur.execute(query, (slot, format_lsn(upto_lsn), max_changes, f'"{publication}"'))
        for (data,) in cur:
            changes += 1
            message = decode(memoryview(data), in_stream=False)
            if isinstance(message, Insert):
                where = columns.get(message.relation_id)
                if where is not None:
                    _row(result, message, where, commit_lsn, seq, stored, from_lsn)
                seq += 1
            elif isinstance(message, Begin):
                commit_lsn, seq = message.final_lsn, 0
            elif isinstance(message, Relation):
                columns[message.relation_id] = _outbox_columns(message, outbox)
    if changes >= max_changes:
        result.complete = False
        result.reason = f"slot {slot} holds more than {max_changes} changes before {format_lsn(upto_lsn)}"
    return result


def _outbox_columns(relation: Relation, outbox: tuple[str, str]) -> tuple[int, int] | None:
    if (relation.namespace, relation.name) != outbox:
        return None
    names = [c.name for c in relation.columns]
    if "id" not in names or "unique_id" not in names:
        return None
    return names.index("id"), names.index("unique_id")


def _row(
    result: Pending, message: Insert, where: tuple[int, int], commit_lsn: int, seq: int,
    stored: tuple[int, int] | None, from_lsn: int | None,
) -> None:
    outbox_id, unique_id = (message.new[i] for i in where)
    if not isinstance(unique_id, (bytes, memoryview)) or not isinstance(outbox_id, (bytes, memoryview)):
        return
    result.rows += 1
    if stored is None or (commit_lsn, seq) > stored:
        result.in_flight.add(id_hash(bytes(unique_id)))
    if from_lsn is not None and commit_lsn >= from_lsn:
        value = int(bytes(outbox_id))
        if result.first_id_from is None or value < result.first_id_from:
            result.first_id_from = value
