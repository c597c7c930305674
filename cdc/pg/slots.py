"""Logical replication slots: list every one on the server, create, drop and advance ours.

All SQL passes names and LSNs as parameters; nothing a user typed is pasted into it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from ..errors import AdminError, PreflightError
from ..lsn import format_lsn, parse_lsn
from .connect import Conn, describe, refusals, server_version, version_text

FAILOVER_SINCE = 170000


def want_failover(server_version: int, requested: bool | None) -> bool:
    """Failover slots unless told otherwise, where the server has them (17+).

    Asked for explicitly on an older server: refused, since the operator
    expects the slot to survive a promotion and it would not.
    """
    if requested is None:
        return server_version >= FAILOVER_SINCE
    if requested and server_version < FAILOVER_SINCE:
        raise PreflightError(
            f"failover slots need PostgreSQL 17 or newer, this server is {version_text(server_version)}: "
            "drop --failover (and after a promotion follow docs/ha.md: `cdc run --create-slot`, "
            "then `cdc verify --repair`)"
        )
    return requested


# WAL position to measure lag against: a standby (16+ may hold logical slots) has no insert position.
_WAL_NOW = "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END"


@dataclass(frozen=True, slots=True)
class SlotRow:
    """One logical slot as ``pg_replication_slots`` shows it; None where the server is too old to say."""

    name: str
    plugin: str | None
    database: str | None
    temporary: bool
    active: bool
    active_pid: int | None
    restart_lsn: str | None
    confirmed_flush_lsn: str | None
    lag_bytes: int | None          # WAL between the server's position and confirmed_flush_lsn
    wal_status: str | None         # 13+: reserved, extended, unreserved, lost
    safe_wal_size: int | None      # 13+: bytes that may still be written before the slot is lost
    failover: bool | None          # 17+
    inactive_since: datetime | None  # 17+
    invalidation_reason: str | None  # 17+
    reply_time: datetime | None    # 12+, while a walsender holds the slot: its client's last status update
    ack_age_seconds: float | None  # now - reply_time
    flush_lag_seconds: float | None  # the walsender's own measure, NULL when idle

    @property
    def invalidated(self) -> bool:
        return self.wal_status == "lost" or self.invalidation_reason is not None or (
            self.confirmed_flush_lsn is None and self.plugin is not None
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["invalidated"] = self.invalidated
        return data


def _column(present: bool, expression: str, fallback: str) -> sql.Composable:
    return sql.SQL(expression if present else fallback)


def list_slots(conn: Conn, name: str | None = None) -> list[SlotRow]:
    """Every logical slot on the server (all databases), or only ``name``."""
    v = server_version(conn)
    query = sql.SQL(
        "SELECT s.slot_name::text, s.plugin::text, s.database::text, s.temporary, s.active, s.active_pid, "
        "s.restart_lsn::text, s.confirmed_flush_lsn::text, "
        "pg_wal_lsn_diff({now}, s.confirmed_flush_lsn)::bigint, "
        "{wal_status}, {safe_wal_size}, {failover}, {inactive_since}, {reason}, "
        "{reply_time}, extract(epoch FROM clock_timestamp() - {reply_time})::float8, "
        "extract(epoch FROM {flush_lag})::float8 "
        "FROM pg_replication_slots s {join} "
        "WHERE s.slot_type = 'logical' AND (%(name)s::text IS NULL OR s.slot_name = %(name)s::text) "
        "ORDER BY s.slot_name"
    ).format(
        now=sql.SQL(_WAL_NOW),
        wal_status=_column(v >= 130000, "s.wal_status::text", "NULL::text"),
        safe_wal_size=_column(v >= 130000, "s.safe_wal_size", "NULL::bigint"),
        failover=_column(v >= FAILOVER_SINCE, "s.failover", "NULL::boolean"),
        inactive_since=_column(v >= 170000, "s.inactive_since", "NULL::timestamptz"),
        reason=_column(v >= 170000, "s.invalidation_reason::text", "NULL::text"),
        reply_time=_column(v >= 120000, "r.reply_time", "NULL::timestamptz"),
        flush_lag=_column(v >= 100000, "r.flush_lag", "NULL::interval"),
        join=sql.SQL("LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid"),
    )
    rows = conn.execute(query, {"name": name}).fetchall()
    return [SlotRow(*row) for row in rows]


def get_slot(conn: Conn, name: str) -> SlotRow | None:
    found = list_slots(conn, name)
    return found[0] if found else None


def wal_position(conn: Conn) -> int:
    return parse_lsn(str(conn.execute(f"SELECT ({_WAL_NOW})::text").fetchone()[0]))  # type: ignore[index]


@dataclass(frozen=True, slots=True)
class Created:
    name: str
    lsn: str
    temporary: bool
    failover: bool


def check_create(conn: Conn, name: str, *, failover: bool) -> None:
    """AdminError when ``create_slot`` would be refused."""
    v = server_version(conn)
    if failover and v < FAILOVER_SINCE:
        raise AdminError(
            f"failover slots need PostgreSQL 17 or newer, this server is {version_text(v)}: drop --failover"
        )
    existing = get_slot(conn, name)
    if existing is not None:
        raise AdminError(
            f"replication slot {name} already exists (database {existing.database}): "
            "use it, or drop it first with `cdc slot drop`"
        )


def create_slot(conn: Conn, name: str, *, temporary: bool = False, failover: bool = False) -> Created:
    """A pgoutput slot. A temporary one lives only as long as ``conn``."""
    check_create(conn, name, failover=failover)
    args = [sql.Placeholder("name"), sql.Literal("pgoutput"), sql.SQL("temporary => %(temporary)s")]
    if failover:
        args.append(sql.SQL("failover => true"))
    query = sql.SQL("SELECT slot_name::text, lsn::text FROM pg_create_logical_replication_slot({})").format(
        sql.SQL(", ").join(args)
    )
    with refusals(f"create replication slot {name}"):
        row = conn.execute(query, {"name": name, "temporary": temporary}).fetchone()
    assert row is not None
    return Created(str(row[0]), str(row[1]), temporary, failover)


def outbox_has_rows(conn: Conn, schema: str, table: str) -> bool | None:
    """Whether the outbox holds rows (None when it cannot be read)."""
    try:
        row = conn.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {}.{})").format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchone()
    except psycopg.Error:
        return None
    return bool(row and row[0])


def drop_slot(conn: Conn, name: str, *, force: bool = False, timeout: float = 15.0) -> int | None:
    """Drop the slot; an active one only with ``force`` (its walsender is terminated). Returns the pid ended."""
    info = get_slot(conn, name)
    if info is None:
        raise AdminError(f"replication slot {name} does not exist: `cdc slot list` shows the slots there are")
    if info.active and not force:
        raise AdminError(
            f"replication slot {name} is in use by process {info.active_pid} (a running `cdc run`?): "
            "stop that process first, or pass --force to terminate it"
        )
    terminated = info.active_pid if info.active else None
    deadline = time.monotonic() + timeout
    while True:
        current = get_slot(conn, name)
        if current is None:
            return terminated  # someone else dropped it meanwhile: the end wanted
        if current.active_pid is not None:
            if not force:
                raise AdminError(f"replication slot {name} became active (process {current.active_pid}): not dropped")
            with refusals(f"terminate process {current.active_pid} holding slot {name}"):
                conn.execute("SELECT pg_terminate_backend(%s)", (current.active_pid,))
            terminated = current.active_pid
        else:
            try:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                return terminated
            except psycopg.errors.ObjectInUse:
                pass  # a client reconnected between our check and the drop: terminate again
            except psycopg.Error as exc:
                raise AdminError(f"cannot drop replication slot {name}: {describe(exc)}") from None
        if time.monotonic() > deadline:
            raise AdminError(
                f"replication slot {name} is still in use after {timeout:.0f}s: stop the client that "
                "keeps reconnecting to it, then try again"
            )
        time.sleep(0.1)


def drop_inactive_slot(conn: Conn, name: str) -> None:
    """pg_drop_replication_slot, nothing more: the server's own error if the slot is missing or in use."""
    conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))


@dataclass(frozen=True, slots=True)
class Advanced:
    name: str
    before: str
    after: str


def check_advance(conn: Conn, name: str, target: int) -> SlotRow:
    """The slot, if moving it to ``target`` is allowed; otherwise AdminError saying why."""
    info = get_slot(conn, name)
    if info is None:
        raise AdminError(f"replication slot {name} does not exist: `cdc slot list` shows the slots there are")
    if info.active:
        raise AdminError(
            f"replication slot {name} is in use by process {info.active_pid}: stop `cdc run` before advancing it"
        )
    if info.invalidated or info.confirmed_flush_lsn is None:
        raise AdminError(f"replication slot {name} is invalidated: it cannot move; drop and recreate it")
    confirmed = parse_lsn(info.confirmed_flush_lsn)
    if target < confirmed:
        raise AdminError(
            f"{format_lsn(target)} is before slot {name}'s confirmed position {info.confirmed_flush_lsn}: "
            "a slot never moves backward (the WAL before it may be gone); pass an LSN at or after it"
        )
    end = wal_position(conn)
    if target > end:
        raise AdminError(
            f"{format_lsn(target)} is past the server's current WAL position {format_lsn(end)}: pass an LSN up to it"
        )
    return info


def advance_slot(conn: Conn, name: str, target: int) -> Advanced:
    """pg_replication_slot_advance: every change committed before ``target`` is skipped for good."""
    info = check_advance(conn, name, target)
    before = str(info.confirmed_flush_lsn)
    if parse_lsn(before) == target:
        return Advanced(name, before, before)
    with refusals(f"advance replication slot {name}"):
        row = conn.execute(
            "SELECT end_lsn::text FROM pg_replication_slot_advance(%s, %s::pg_lsn)", (name, format_lsn(target))
        ).fetchone()
    assert row is not None
    return Advanced(name, before, str(row[0]))
