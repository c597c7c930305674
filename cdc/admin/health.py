"""``cdc status``: one fast look at the server, the slot and ClickHouse, graded for monitoring.

Levels (also the exit code): 0 OK; 1 WARNING: the slot is inactive, behind
by more than the thresholds, or close to being invalidated; 2 CRITICAL: the slot
is missing or invalidated, or PostgreSQL or ClickHouse cannot be reached.

Lag in time: while a walsender holds the slot, PostgreSQL's own ``flush_lag``
(it grows while the acknowledged position is stuck, and is empty when caught
up); while the slot is inactive, the time since it was last used
(``inactive_since``, PostgreSQL 17+) or else since ClickHouse last stored an
event; unknown when neither is available.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from ..core import positions
from ..lsn import format_lsn
from ..pg import ha
from ..pg.connect import connect, setting, version_text
from ..pg.slots import SlotRow, get_slot
from ..redact import redact_dsn
from ..settings import Settings
from ..sink import open_sink_admin
from ..sink.base import SinkConfigError, SinkError

OK, WARNING, CRITICAL = 0, 1, 2
LEVEL_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}


@dataclass
class Status:
    level: int = OK
    problems: list[tuple[int, str]] = field(default_factory=list)
    postgres: dict[str, Any] = field(default_factory=dict)
    slot: dict[str, Any] | None = None
    clickhouse: dict[str, Any] | None = None
    shards: list[dict[str, Any]] | None = None  # a sharded outbox: each shard's slot, as ``slot`` is

    def problem(self, level: int, message: str) -> None:
        self.level = max(self.level, level)
        self.problems.append((level, message))

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": LEVEL_NAMES[self.level].lower(), "exit_code": self.level,
            "problems": [{"level": LEVEL_NAMES[lvl].lower(), "message": msg} for lvl, msg in self.problems],
            "postgres": self.postgres, "slot": self.slot, "clickhouse": self.clickhouse, "shards": self.shards,
        }


def _address(dsn: str, conn: Any) -> str:
    info = conn.info
    return f"{info.host}:{info.port}/{info.dbname}" if info.host and not info.host.startswith("/") else (
        f"{redact_dsn(dsn)}"
    )


def seconds_since(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (datetime.now(timezone.utc) - moment).total_seconds())


def gather(settings: Settings, *, max_lag_bytes: int, max_lag_seconds: float, timeout: float = 5.0) -> Status:
    """An unsharded outbox's status (cdc/admin/shard_status.py: a sharded one's)."""
    status = Status()
    row = _postgres(status, settings, timeout)
    last_insert = _clickhouse(status, settings, timeout)
    if row is not None:
        status.slot = grade_slot(status, row, last_insert, max_lag_bytes, max_lag_seconds)
    return status


def _postgres(status: Status, settings: Settings, timeout: float) -> SlotRow | None:
    try:
        conn = connect(settings.pg_dsn, timeout=timeout, application_name="cdc-status")
    except Exception as exc:  # noqa: BLE001 - any failure here is the CRITICAL answer
        status.postgres = {"reachable": False, "error": str(exc)}
        status.problem(CRITICAL, str(exc))
        return None
    with conn:
        server_info(status, settings, conn, timeout)
        row = get_slot(conn, settings.slot)
        ha_chain(status, settings, conn, [(settings.slot, None if row is None else row.failover)], timeout)
    if row is None:
        status.slot = {"name": settings.slot, "exists": False}
        status.problem(CRITICAL, f"replication slot {settings.slot} does not exist: `cdc run --create-slot` creates it")
    return row


def server_info(status: Status, settings: Settings, conn: Any, timeout: float) -> None:
    conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{int(timeout * 1000)}ms",))
    status.postgres = {
        "reachable": True,
        "address": _address(settings.pg_dsn, conn),
        "version": version_text(conn.info.server_version),
        "wal_level": setting(conn, "wal_level"),
        "max_slot_wal_keep_size": setting(conn, "max_slot_wal_keep_size"),
    }
    if status.postgres["wal_level"] != "logical":
        status.problem(CRITICAL, f"wal_level is {status.postgres['wal_level']}: logical decoding is off")


def clickhouse(status: Status, settings: Settings, timeout: float) -> datetime | None:
    return _clickhouse(status, settings, timeout)


def ha_chain(status: Status, settings: Settings, conn: Any, slots: list[tuple[str, bool | None]],
             timeout: float) -> None:
    """The failover chain of our ``slots`` (name, failover; None: missing): the primary's side, and each
    standby given with --standby-dsn."""
    primary, standbys = ha.chain_findings(conn, slots, settings.standby_dsns, timeout=timeout)
    # A standby that would lose the slot at promotion degrades failover, not streaming: a WARNING.
    findings = primary + [replace(f, status=ha.WARN) if f.status == ha.FAIL else f for f in standbys]
    if not findings:
        return
    status.postgres["ha"] = [{"status": f.status, "check": f.check, "detail": f.detail} for f in findings]
    for f in findings:
        if f.status != ha.PASS:
            # A listed slot that does not exist stalls decoding for good; the rest degrade failover.
            status.problem(CRITICAL if f.status == ha.FAIL else WARNING, f"{f.detail} (fix: {f.fix})")


def _clickhouse(status: Status, settings: Settings, timeout: float) -> datetime | None:
    if not settings.sink_url:
        status.clickhouse = {"configured": False}
        status.problem(WARNING, "no ClickHouse URL given (CDC_CLICKHOUSE_URL): delivery not checked")
        return None
    try:
        with open_sink_admin(settings.sink_url, settings, timeout=timeout) as wh:
            status.clickhouse = {"configured": True, "reachable": True, "url": wh.url, "version": wh.version}
            latest = wh.latest()
            hwm = wh.high_water_mark()
            events, dead = wh.counts()
            last_insert = wh.last_inserted_at()
            try:
                ledger: dict[str, Any] = wh.ledger_check().as_dict()
            except SinkError as exc:
                ledger = {"error": str(exc)}
            replicas = wh.replicas()
    except (SinkConfigError, SinkError) as exc:
        status.clickhouse = {"configured": True, "reachable": False, "error": str(exc)}
        status.problem(CRITICAL, str(exc))
        return None
    high: dict[str, Any] | None = None
    if latest is not None and hwm is not None:
        high = {
            "commit_lsn": format_lsn(hwm[0]), "commit_seq": hwm[1],
            "committed_at": latest.committed_at.isoformat(), "age_seconds": seconds_since(latest.committed_at),
            "origin": positions.describe(hwm[0]) or "stream",
        }
    status.clickhouse.update(
        high_water_mark=high, events=events, dead_letters=dead,
        last_insert_at=last_insert.isoformat() if last_insert else None, ledger=ledger,
        replicas=[r.as_dict() for r in replicas] or None,
    )
    if ledger.get("warning"):
        status.problem(WARNING, ledger["warning"])
    for r in replicas:
        for critical, message in r.problems():
            status.problem(CRITICAL if critical else WARNING, message)
    return last_insert


def grade_slot(
    status: Status, row: SlotRow, last_insert: datetime | None, max_lag_bytes: int, max_lag_seconds: float,
    *, label: str = "",
) -> dict[str, Any]:
    """The slot as ``cdc status`` shows it; its problems go to ``status`` (prefixed with ``label``)."""
    if row.active:
        lag_seconds: float | None = row.flush_lag_seconds or 0.0
        ack_age, ack_source = row.ack_age_seconds, "pg_stat_replication.reply_time"
    else:
        since = row.inactive_since or last_insert
        lag_seconds = seconds_since(since)
        ack_age, ack_source = None, "unknown: no walsender holds the slot"
    if row.lag_bytes is not None and row.lag_bytes <= 0:
        lag_seconds = 0.0
    state = {
        "name": row.name, "exists": True, "active": row.active, "pid": row.active_pid, "plugin": row.plugin,
        "database": row.database, "wal_status": row.wal_status, "safe_wal_size": row.safe_wal_size,
        "confirmed_flush_lsn": row.confirmed_flush_lsn, "restart_lsn": row.restart_lsn,
        "lag_bytes": row.lag_bytes, "lag_seconds": lag_seconds,
        "last_ack_age_seconds": ack_age, "last_ack_source": ack_source,
        "inactive_since": row.inactive_since.isoformat() if row.inactive_since else None,
        "invalidated": row.invalidated,
    }
    name = f"{label}replication slot {row.name}"
    if row.invalidated:
        status.problem(CRITICAL, f"{name} is invalidated ({row.invalidation_reason or 'wal_status lost'}): "
                                 "drop it, then `cdc run --create-slot` delivers the gap")
        return state
    if row.plugin != "pgoutput":
        status.problem(CRITICAL, f"{name} uses plugin {row.plugin}, not pgoutput")
    if not row.active:
        status.problem(WARNING, f"{name} is inactive: no `cdc run` is streaming from it")
    if row.wal_status == "unreserved":
        status.problem(WARNING, f"{name} is past max_slot_wal_keep_size: it will be invalidated soon")
    if row.lag_bytes is not None and row.lag_bytes > max_lag_bytes:
        status.problem(WARNING, f"{name} is {row.lag_bytes} bytes behind (threshold {max_lag_bytes})")
    if lag_seconds is not None and lag_seconds > max_lag_seconds:
        status.problem(WARNING, f"{name} is {lag_seconds:.0f}s behind (threshold {max_lag_seconds:g}s)")
    return state
