"""The high-availability chain of a PostgreSQL primary with physical standbys (17+ failover slots).

Our slot survives a promotion only if every link holds: the slot is a
failover slot; the primary's ``synchronized_standby_slots`` names the
standbys (so cdc never gets a change a standby lacks); each standby runs
with ``sync_replication_slots``, ``hot_standby_feedback``, a
``primary_slot_name`` and a dbname in ``primary_conninfo``; and the copy of
our slot there is ``synced`` and not ``temporary`` (a temporary one is
dropped at promotion). Read-only: nothing here changes a server.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from ..errors import ConnectError
from .connect import Conn, connect, setting
from .slots import FAILOVER_SINCE

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
_RELOAD = "SELECT pg_reload_conf();"


@dataclass(frozen=True, slots=True)
class Finding:
    status: str
    check: str
    detail: str
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class PhysicalSlot:
    name: str
    active: bool


def physical_slots(conn: Conn) -> list[PhysicalSlot]:
    rows = conn.execute(
        "SELECT slot_name::text, active FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY 1"
    ).fetchall()
    return [PhysicalSlot(str(name), bool(active)) for name, active in rows]


def streaming_standbys(conn: Conn) -> int:
    """Physical walsenders: standbys streaming from here, with or without a slot."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_replication r "
        "WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots s WHERE s.active_pid = r.pid AND s.slot_type = 'logical')"
    ).fetchone()
    return int(row[0]) if row else 0


def synchronized_standby_slots(conn: Conn) -> list[str]:
    value = setting(conn, "synchronized_standby_slots") or ""
    return [name.strip().strip('"') for name in value.split(",") if name.strip()]


def has_standbys(conn: Conn) -> bool:
    """Whether the HA chain applies: a 17+ primary with physical standbys (or slots kept for them)."""
    if conn.info.server_version < FAILOVER_SINCE:
        return False
    in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    if in_recovery and in_recovery[0]:
        return False
    return bool(physical_slots(conn)) or streaming_standbys(conn) > 0


def primary_findings(conn: Conn, ours: Sequence[tuple[str, bool | None]]) -> list[Finding]:
    """What the primary's side of the chain says of our slots, ``ours`` (name, failover; None: no such slot),
    one, or a sharded outbox's; call only when has_standbys()."""
    found: list[Finding] = []
    for slot, slot_failover in ours:
        if slot_failover is False:
            found.append(Finding(
                WARN, "failover slot",
                f"replication slot {slot} is not a failover slot: a promoted standby will not have it",
                f"stop `cdc run`, then psql \"<dsn> replication=database\" -c 'ALTER_REPLICATION_SLOT {slot} "
                "(FAILOVER true)'  (or create it with `cdc slot create`, failover by default on 17+)"))
        elif slot_failover:
            found.append(Finding(PASS, "failover slot", f"replication slot {slot} is a failover slot"))
    slots = {s.name: s for s in physical_slots(conn)}
    named = synchronized_standby_slots(conn)
    if not named:
        names = ", ".join(slots) or "<the standby's physical slot>"
        found.append(Finding(
            WARN, "synchronized_standby_slots",
            "empty: cdc may receive (and store) changes a standby has not, which a promotion would then lose",
            f"ALTER SYSTEM SET synchronized_standby_slots = '{names}'; {_RELOAD}"))
    else:
        found.append(Finding(PASS, "synchronized_standby_slots", ", ".join(named)))
    for name in named:
        if name not in slots:
            found.append(Finding(
                FAIL, "synchronized standby", f"synchronized_standby_slots names {name}, which is no physical slot here: "
                "logical decoding waits for it forever",
                f"create it for the standby, or remove it: ALTER SYSTEM SET synchronized_standby_slots = ...; {_RELOAD}"))
        elif not slots[name].active:
            found.append(Finding(
                WARN, "synchronized standby", f"the standby on slot {name} is down: logical decoding (cdc) stalls "
                "until it is back",
                f"bring the standby back, or drop it from synchronized_standby_slots; {_RELOAD}"))
        else:
            found.append(Finding(PASS, "synchronized standby", f"the standby on slot {name} is streaming"))
    for name, info in slots.items():
        if name not in named and info.active:
            found.append(Finding(
                WARN, "synchronized standby", f"standby on slot {name} streams but is not in synchronized_standby_slots",
                f"ALTER SYSTEM SET synchronized_standby_slots = '{', '.join([*named, name])}'; {_RELOAD}"))
    return found


def chain_findings(
    conn: Conn, ours: Sequence[tuple[str, bool | None]], standby_dsns: Sequence[str], *, timeout: float = 10.0
) -> tuple[list[Finding], list[Finding]]:
    """The chain of our slots, ``ours`` (name, failover; None: no such slot): what the primary says where the
    chain applies, and what each standby in ``standby_dsns`` says. Apart, since status and doctor weigh a
    standby's failure differently."""
    primary = primary_findings(conn, ours) if has_standbys(conn) else []
    named = synchronized_standby_slots(conn) if conn.info.server_version >= FAILOVER_SINCE else []
    names = [name for name, _ in ours]
    return primary, [f for dsn in standby_dsns for f in standby_findings(dsn, names, named, timeout=timeout)]


def standby_findings(dsn: str, slots: Sequence[str], named: list[str], *, timeout: float = 10.0) -> list[Finding]:
    """One standby's side of the chain, reached through ``dsn`` (a standby DSN given to doctor)."""
    try:
        conn = connect(dsn, timeout=timeout, application_name="cdc-doctor")
    except ConnectError as exc:
        return [Finding(WARN, "standby", str(exc).replace("; check CDC_PG_DSN", ""),
                        "start the standby, or check --standby-dsn")]
    with conn:
        return _standby(conn, slots, named)


def _standby(conn: Conn, slots: Sequence[str], named: list[str]) -> list[Finding]:
    where = f"standby {conn.info.host}:{conn.info.port}"
    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    if not row or not row[0]:
        return [Finding(WARN, "standby", f"{where} is not in recovery (a primary, promoted?): nothing to check there")]
    if conn.info.server_version < FAILOVER_SINCE:
        return [Finding(FAIL, "standby", f"{where} runs PostgreSQL < 17: it cannot keep failover slots",
                        "upgrade it, or follow docs/ha.md for PostgreSQL 16 and older")]
    found = [Finding(PASS, "standby", f"connected to {where}")]
    for name in ("sync_replication_slots", "hot_standby_feedback"):
        value = setting(conn, name)
        found.append(Finding(PASS if value == "on" else FAIL, name, f"{where}: {value}",
                             f"on the standby: ALTER SYSTEM SET {name} = on; {_RELOAD}"))
    conninfo = setting(conn, "primary_conninfo")
    if conninfo is None or conninfo == "********":
        found.append(Finding(WARN, "primary_conninfo", f"{where}: not readable by this role",
                             "connect with a role in pg_read_all_settings to check it"))
    else:
        # Never print it: it may hold the replication password.
        has_db = re.search(r"(^|\s)dbname\s*=", conninfo) is not None
        found.append(Finding(PASS if has_db else FAIL, "primary_conninfo",
                             f"{where}: {'has' if has_db else 'has no'} dbname (slot sync connects to a database)",
                             f"on the standby: append ' dbname=<database>' to primary_conninfo; {_RELOAD}"))
    physical = setting(conn, "primary_slot_name") or ""
    if not physical:
        found.append(Finding(FAIL, "primary_slot_name", f"{where}: empty; slot sync needs the standby on a physical slot",
                             f"on the standby: ALTER SYSTEM SET primary_slot_name = '<slot>'; {_RELOAD}"))
    elif named and physical not in named:
        found.append(Finding(WARN, "primary_slot_name", f"{where} streams on slot {physical}, "
                             "not named in the primary's synchronized_standby_slots",
                             f"on the primary: add {physical} to synchronized_standby_slots; {_RELOAD}"))
    found.extend(_synced_slot(conn, where, slot) for slot in slots)
    return found


def _synced_slot(conn: Conn, where: str, slot: str) -> Finding:
    try:
        row = conn.execute(
            "SELECT synced, temporary FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    except psycopg.Error as exc:
        return Finding(WARN, "synced slot", f"{where}: cannot read pg_replication_slots: {exc}")
    if row is None:
        return Finding(FAIL, "synced slot", f"replication slot {slot} is not on {where}: a promotion loses it",
                       "make it a failover slot and fix the standby settings above; then wait for the next sync")
    synced, temporary = bool(row[0]), bool(row[1])
    if not synced:
        return Finding(FAIL, "synced slot", f"replication slot {slot} on {where} was not synced from the primary",
                       f"drop it on the standby (SELECT pg_drop_replication_slot('{slot}')) so the sync can copy ours")
    if temporary:
        return Finding(
            FAIL, "synced slot", f"replication slot {slot} on {where} is synced but temporary: it is dropped at "
            "promotion",
            "it turns persistent once the primary's slot moves past the standby's position: let `cdc run` "
            "consume (on an idle primary: SELECT pg_log_standby_snapshot(); there), then check again")
    return Finding(PASS, "synced slot", f"replication slot {slot} on {where} is synced and survives a promotion")
