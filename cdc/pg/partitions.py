"""The outbox's partitions: list them with their bounds, and create the coming ones (``cdc outbox maintain``).

The outbox is ``PARTITION BY RANGE (created_at)`` with a DEFAULT partition
(migrations/0001_outbox.sql). ``maintain`` adds one partition per day or per
week, named ``<table>_pYYYYMMDD`` after the first day it holds (UTC). It is
idempotent and safe to run from cron, also twice at once (an advisory lock
serialises runs, and ``cdc outbox prune``).

A range whose rows already sit in the default partition (inserted before its
partition existed) is left there: PostgreSQL refuses the new partition then,
and moving rows would publish them again. The default partition is never
dropped by ``prune``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql

from ..errors import AdminError
from .connect import Conn, describe

LOCK_KEY = 0x6364635F70617274  # "cdc_part": maintain and prune never run at once
PARTITION_KEY = "RANGE (created_at)"
_BOUND = re.compile(r"^FOR VALUES FROM \((.+)\) TO \((.+)\)$")
_STEPS = {"day": timedelta(days=1), "week": timedelta(days=7)}


@dataclass(frozen=True, slots=True)
class Partition:
    schema: str
    name: str
    leaf: bool                 # False: itself partitioned (not handled here)
    is_default: bool
    lower: datetime | None     # None: MINVALUE (or unparsable, see bound)
    upper: datetime | None     # None: MAXVALUE
    bound: str                 # as PostgreSQL prints it
    estimated_rows: int        # pg_class.reltuples; -1 when never analysed

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema, "name": self.name, "default": self.is_default, "bound": self.bound,
            "from": self.lower.isoformat() if self.lower else None, "to": self.upper.isoformat() if self.upper else None,
        }


def _bound_value(text: str) -> datetime | None:
    text = text.strip()
    if text in ("MINVALUE", "MAXVALUE") or not (text.startswith("'") and text.endswith("'")):
        return None
    value = text[1:-1].replace("''", "'")
    if value in ("infinity", "-infinity"):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def outbox_oid(conn: Conn, schema: str, table: str) -> tuple[int, str, str | None]:
    """(oid, relkind, partition key) of the outbox, or AdminError when it does not exist."""
    row = conn.execute(
        "SELECT c.oid::int8, c.relkind::text, CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END "
        "FROM pg_class c WHERE c.oid = to_regclass(format('%%I.%%I', %s::text, %s::text))",
        (schema, table),
    ).fetchone()
    if row is None:
        raise AdminError(f"table {schema}.{table} does not exist: run `cdc migrate`")
    return int(row[0]), str(row[1]), row[2]


def list_partitions(conn: Conn, schema: str, table: str) -> list[Partition] | None:
    """The outbox's direct partitions, oldest first (default last); None when it is not partitioned.

    Bounds are read as PostgreSQL prints them; the connection must use TimeZone UTC (cdc.pg.connect pins it).
    """
    oid, relkind, _key = outbox_oid(conn, schema, table)
    if relkind != "p":
        return None
    parts = []
    for p_schema, name, kind, bound, tuples in conn.execute(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text, pg_get_expr(c.relpartbound, c.oid), "
        "c.reltuples::int8 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = %s::oid",
        (oid,),
    ).fetchall():
        bound = str(bound)
        match = _BOUND.match(bound)
        lower = upper = None
        if match:
            lower, upper = _bound_value(match.group(1)), _bound_value(match.group(2))
        parts.append(Partition(str(p_schema), str(name), kind == "r", bound == "DEFAULT", lower, upper, bound,
                               int(tuples)))
    far = datetime.max.replace(tzinfo=timezone.utc)
    return sorted(parts, key=lambda p: (p.is_default, p.lower or datetime.min.replace(tzinfo=timezone.utc), p.upper or far))


def require_range_partitioned(conn: Conn, schema: str, table: str) -> list[Partition]:
    _oid, relkind, key = outbox_oid(conn, schema, table)
    if relkind != "p" or key != PARTITION_KEY:
        raise AdminError(
            f"table {schema}.{table} is not partitioned by {PARTITION_KEY} (it is {key or 'not partitioned'}): "
            "partition maintenance needs the layout of migrations/0001_outbox.sql"
        )
    return list_partitions(conn, schema, table) or []


def partition_name(table: str, start: datetime) -> str:
    return f"{table}_p{start:%Y%m%d}"


def period_start(moment: datetime, interval: str) -> datetime:
    day = moment.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday()) if interval == "week" else day


@dataclass(frozen=True, slots=True)
class Planned:
    name: str
    lower: datetime
    upper: datetime
    action: str          # created | exists | skipped | failed
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "from": self.lower.isoformat(), "to": self.upper.isoformat(),
                "action": self.action, "note": self.note}


def maintain(conn: Conn, schema: str, table: str, *, days_ahead: int, interval: str,
             lock_timeout_ms: int = 5000) -> list[Planned]:
    """Make sure a partition covers every ``interval`` from the current one to ``days_ahead`` days from now."""
    if interval not in _STEPS:
        raise AdminError(f"interval must be day or week, not {interval!r}")
    if len(partition_name(table, datetime(2000, 1, 1))) > 63:
        raise AdminError(f"table name {table!r} is too long to name its partitions {table}_pYYYYMMDD (63 characters)")
    require_range_partitioned(conn, schema, table)
    now: datetime = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    step = _STEPS[interval]
    start, end = period_start(now, interval), now + timedelta(days=days_ahead)
    results = []
    while start <= end:
        results.append(_ensure(conn, schema, table, start, start + step, lock_timeout_ms))
        start += step
    return results


def _ensure(conn: Conn, schema: str, table: str, lower: datetime, upper: datetime, lock_timeout_ms: int) -> Planned:
    name = partition_name(table, lower)
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{lock_timeout_ms}ms",))
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            parts = list_partitions(conn, schema, table) or []
            for p in parts:
                if p.lower == lower and p.upper == upper:
                    return Planned(p.name, lower, upper, "exists")
            for p in parts:
                if not p.is_default and p.lower is not None and p.upper is not None and p.lower < upper and lower < p.upper:
                    return Planned(name, lower, upper, "skipped", f"overlaps partition {p.name} ({p.bound})")
            taken = conn.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
                                 (schema, name)).fetchone()
            if taken and taken[0]:
                return Planned(name, lower, upper, "failed", f"{schema}.{name} exists and is not a partition of {table}")
            default = next((p for p in parts if p.is_default), None)
            if default is not None and _default_holds(conn, default, lower, upper):
                return Planned(name, lower, upper, "skipped",
                               f"rows for this range are already in the default partition {default.name}: they stay there")
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                        sql.Identifier(schema, name), sql.Identifier(schema, table),
                        sql.Literal(lower.isoformat()), sql.Literal(upper.isoformat()),
                    ))
            except psycopg.Error as exc:
                return Planned(name, lower, upper, "failed", describe(exc))
            return Planned(name, lower, upper, "created")
    except psycopg.errors.LockNotAvailable as exc:
        return Planned(name, lower, upper, "failed", f"{describe(exc)}: the outbox is busy, run again later")


def _default_holds(conn: Conn, default: Partition, lower: datetime, upper: datetime) -> bool:
    row = conn.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE created_at >= %s AND created_at < %s)").format(
            sql.Identifier(default.schema, default.name)),
        (lower, upper),
    ).fetchone()
    return bool(row and row[0])
