"""``cdc doctor``: every precondition of ``cdc run``, each PASS, WARN or FAIL with the SQL or setting that fixes it.

Read-only: nothing here changes either server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from psycopg import sql

from .. import accel
from ..errors import ConnectError, PreflightError
from ..pg import ha, preflight
from ..pg.connect import Conn, connect, setting, version_text
from ..pg.partitions import list_partitions
from ..pg.publications import COVERS, PARTITIONS_ONLY, fix_for, get_publication
from ..pg.shards import WORKERS, Sharding, ShardingUnreadable, list_workers, read_sharding
from ..pg.slots import get_slot
from ..settings import Settings
from ..shards.layout import SHARD_COLUMN, shard_settings
from ..sink import open_sink_admin
from ..sink.base import SinkConfigError, SinkError

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"


@dataclass(frozen=True, slots=True)
class Check:
    status: str
    check: str
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Checks(list[Check]):
    def add(self, status: str, check: str, detail: str, fix: str | None = None) -> None:
        self.append(Check(status, check, detail, fix if status != PASS else None))


def run_checks(settings: Settings, *, timeout: float = 10.0) -> list[Check]:
    checks = _Checks()
    if not settings.pg_dsn:
        checks.add(FAIL, "postgres", "no PostgreSQL DSN given", "pass --pg-dsn or set CDC_PG_DSN")
    else:
        try:
            conn = connect(settings.pg_dsn, timeout=timeout, application_name="cdc-doctor")
        except ConnectError as exc:
            checks.add(FAIL, "postgres", str(exc), "check CDC_PG_DSN, the server, and pg_hba.conf")
        else:
            with conn:
                _postgres(conn, settings, checks)
                _ha_chain(conn, settings, checks, timeout)
    _clickhouse(settings, checks, timeout)
    _accelerator(checks)
    return checks


def _accelerator(checks: _Checks) -> None:
    # Not a precondition: the pure-Python path does the same work, only slower.
    if accel.native is None and not accel.STATUS.startswith("pure Python (CDC_NO_ACCEL="):
        checks.add(WARN, "accelerator", accel.accelerator_status(),
                   "install a C compiler and Python's headers (Debian: gcc python3-dev), then reinstall cdc")
    else:
        checks.add(PASS, "accelerator", accel.accelerator_status())


def _ident(conn: Conn, *parts: str) -> str:
    return sql.Identifier(*parts).as_string(conn)


def _restart(name: str, value: object) -> str:
    return f"ALTER SYSTEM SET {name} = {value}; then restart PostgreSQL"


def _role_and_outbox(conn: Conn, s: Settings, checks: _Checks) -> str:
    """The role's REPLICATION, heartbeats and the outbox: checked whatever the slots; returns the role."""
    user = conn.info.user
    can_replicate = conn.execute(
        "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    checks.add(PASS if can_replicate and can_replicate[0] else FAIL, "role REPLICATION",
               f"role {user} {'may' if can_replicate and can_replicate[0] else 'may not'} open replication connections",
               f"ALTER ROLE {_ident(conn, user)} REPLICATION;  -- as a superuser")
    _heartbeats(conn, checks, user)
    _outbox(conn, s, checks, user)
    return user


def _postgres(conn: Conn, s: Settings, checks: _Checks) -> None:
    v = conn.info.server_version
    checks.add(PASS, "postgres", f"connected to PostgreSQL {version_text(v)} as {conn.info.user}")
    if v >= 130000:
        checks.add(PASS, "version", f"PostgreSQL {version_text(v)}")
    else:
        checks.add(FAIL, "version", f"PostgreSQL {version_text(v)}: a partitioned outbox needs 13 or newer",
                   "upgrade PostgreSQL to 13 or newer (16+ recommended)")
    encoding = setting(conn, "server_encoding")
    checks.add(PASS if encoding == "UTF8" else FAIL, "server_encoding", str(encoding),
               "create the database with ENCODING 'UTF8'")
    wal_level = setting(conn, "wal_level")
    checks.add(PASS if wal_level == "logical" else FAIL, "wal_level", str(wal_level), _restart("wal_level", "logical"))

    try:
        sharding = read_sharding(conn, s.outbox_schema, s.slot)
    except ShardingUnreadable as exc:
        what, _, grant = str(exc).partition(": ")
        checks.add(FAIL, "shards", what, grant)
        _role_and_outbox(conn, s, checks)
        return
    shards = [] if sharding is None else sharding.all_shards()
    slot = get_slot(conn, s.slot) if sharding is None else None
    rows = {shard.slot: get_slot(conn, shard.slot) for shard in shards}
    used, max_slots = conn.execute(
        "SELECT count(*), current_setting('max_replication_slots')::int FROM pg_replication_slots").fetchone()  # type: ignore[misc]
    # A reshard makes as many slots again as there are shards, for a while.
    spare = max((len(g.shard_list()) for g in sharding.generations), default=0) if sharding is not None else 0
    free_slot = (slot is not None or used < max_slots) if sharding is None else used + spare <= max_slots
    checks.add(PASS if free_slot else FAIL, "max_replication_slots", f"{used} of {max_slots} in use"
               + (f", {spare} more during a reshard" if spare else ""), _restart("max_replication_slots", used + spare + 2))
    senders, max_senders = conn.execute(
        "SELECT count(*) FILTER (WHERE backend_type = 'walsender'), current_setting('max_wal_senders')::int "
        "FROM pg_stat_activity").fetchone()  # type: ignore[misc]
    free_sender = ((slot is not None and slot.active) or senders < max_senders) if sharding is None else (
        sum(1 for r in rows.values() if r is None or not r.active) + senders <= max_senders)
    checks.add(PASS if free_sender else FAIL, "max_wal_senders", f"{senders} of {max_senders} in use",
               _restart("max_wal_senders", senders + 2))

    user = _role_and_outbox(conn, s, checks)
    if sharding is None:
        _publication(conn, s, checks)
        _slot(conn, s, checks, slot)
    else:
        _shards(conn, s, checks, sharding, rows, user)
    keep = setting(conn, "max_slot_wal_keep_size")
    if keep is None:
        checks.add(WARN, "max_slot_wal_keep_size", "not available before PostgreSQL 13: a stuck slot keeps WAL forever",
                   "watch `cdc status` lag, or upgrade")
    elif keep == "-1":
        checks.add(WARN, "max_slot_wal_keep_size", "-1: an abandoned slot keeps WAL until the disk is full",
                   "ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'; SELECT pg_reload_conf();")
    else:
        checks.add(PASS, "max_slot_wal_keep_size", keep)


def _heartbeats(conn: Conn, checks: _Checks, user: str) -> None:
    if conn.info.server_version < 140000:
        checks.add(WARN, "heartbeats", "PostgreSQL before 14 cannot send logical messages to cdc: no end-to-end "
                   "latency while the outbox is idle", "upgrade PostgreSQL to 14 or newer")
        return
    allowed = conn.execute("SELECT bool_or(has_function_privilege(oid, 'EXECUTE')) FROM pg_proc "
                           "WHERE proname = 'pg_logical_emit_message'").fetchone()
    if allowed and allowed[0]:
        checks.add(PASS, "heartbeats", f"role {user} may emit heartbeat messages (pg_logical_emit_message)")
    else:
        checks.add(WARN, "heartbeats", f"role {user} may not execute pg_logical_emit_message: cdc runs without "
                   "heartbeats", f"GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO "
                   f"{_ident(conn, user)};  -- every overload: see docs/least-privilege.sql")


def _ha_chain(conn: Conn, s: Settings, checks: _Checks, timeout: float) -> None:
    """Only where it applies: a 17+ primary with physical standbys, or standbys named with --standby-dsn."""
    if not ha.has_standbys(conn) and not s.standby_dsns:
        return
    try:
        sharding = read_sharding(conn, s.outbox_schema, s.slot)
    except ShardingUnreadable:
        sharding = None  # the "shards" check failed already, with its GRANT: check the family's name
    names = [s.slot] if sharding is None else [shard.slot for shard in sharding.all_shards()]
    slots = [(name, None if (row := get_slot(conn, name)) is None else row.failover) for name in names]
    primary, standbys = ha.chain_findings(conn, slots, s.standby_dsns, timeout=timeout)
    for f in primary + standbys:
        checks.add(f.status, f.check, f.detail, f.fix)


def _outbox(conn: Conn, s: Settings, checks: _Checks, user: str) -> None:
    table = f"{s.outbox_schema}.{s.outbox_table}"
    try:
        preflight.check_outbox(conn, s.outbox_schema, s.outbox_table)
    except PreflightError as exc:
        checks.add(FAIL, "outbox columns", str(exc), "cdc migrate")
        return
    checks.add(PASS, "outbox columns", f"{table} has every column cdc reads")
    allowed = conn.execute(
        "SELECT has_table_privilege(format('%%I.%%I', %s::text, %s::text), 'SELECT')",
        (s.outbox_schema, s.outbox_table)).fetchone()
    checks.add(PASS if allowed and allowed[0] else FAIL, "outbox SELECT",
               f"role {user} {'can' if allowed and allowed[0] else 'cannot'} read {table} (initial copy, backfill)",
               f"GRANT SELECT ON {_ident(conn, s.outbox_schema, s.outbox_table)} TO {_ident(conn, user)};")
    parts = list_partitions(conn, s.outbox_schema, s.outbox_table)
    if parts is None:
        checks.add(WARN, "outbox partitions", f"{table} is not partitioned: `cdc outbox prune` cannot drop old rows",
                   "recreate it partitioned by range (created_at), see migrations/0001_outbox.sql")
        return
    default = [p for p in parts if p.is_default]
    if not default:
        checks.add(WARN, "outbox partitions", f"{table} has no default partition: an insert outside every range fails",
                   f"CREATE TABLE {_ident(conn, s.outbox_schema, s.outbox_table + '_default')} "
                   f"PARTITION OF {_ident(conn, s.outbox_schema, s.outbox_table)} DEFAULT;")
    ahead = conn.execute(
        "SELECT now() + interval '1 day'").fetchone()[0]  # type: ignore[index]
    if not any(p.lower is not None and p.upper is not None and p.lower <= ahead < p.upper for p in parts):
        checks.add(WARN, "outbox partitions", "no partition for tomorrow: new rows pile up in the default partition",
                   "run `cdc outbox maintain` daily (cron)")
    elif default:
        checks.add(PASS, "outbox partitions", f"{len(parts) - 1} range partition(s) and a default one")


def _shards(conn: Conn, s: Settings, checks: _Checks, sharding: Sharding, rows: dict[str, Any], user: str) -> None:
    current = sharding.current
    alive = sum(1 for w in list_workers(conn, s.outbox_schema, s.slot) if w.alive)
    checks.add(PASS, "shards", f"outbox split into {current.shards} shard(s) (generation {current.number}, "
                               f"{current.state}); {alive} live worker(s)")
    for generation in sharding.older():
        checks.add(WARN, "reshard", f"generation {generation.number} is still {generation.state}: a reshard was "
                                    "interrupted", "run `cdc shards reshard` again: it finishes what was started")
    _shard_column(conn, s, checks)
    workers = _ident(conn, s.outbox_schema, WORKERS)
    allowed = conn.execute(
        "SELECT has_table_privilege(%s, 'SELECT, INSERT, UPDATE, DELETE')", (workers,)).fetchone()
    checks.add(PASS if allowed and allowed[0] else FAIL, "cdc_workers",
               f"role {user} {'can' if allowed and allowed[0] else 'cannot'} record its liveness in {workers}",
               f"GRANT SELECT, INSERT, UPDATE, DELETE ON {workers} TO {_ident(conn, user)};")
    for shard in sharding.all_shards():
        at = shard_settings(s, shard)
        _publication(conn, at, checks, expected_filter=shard.row_filter, label=f"shard {shard.label} ")
        _slot(conn, at, checks, rows[shard.slot], label=f"shard {shard.label} ")


def _shard_column(conn: Conn, s: Settings, checks: _Checks) -> None:
    """The generated column that routes each row: a NULL in it matches no shard's filter, so no slot sends it."""
    outbox = _ident(conn, s.outbox_schema, s.outbox_table)
    row = conn.execute(
        "SELECT pg_get_expr(d.adbin, d.adrelid), u.attnotnull FROM pg_attribute a "
        "JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "LEFT JOIN pg_attribute u ON u.attrelid = a.attrelid AND u.attname = 'unique_id' AND NOT u.attisdropped "
        "WHERE a.attrelid = %s::regclass AND a.attname = %s AND NOT a.attisdropped", (outbox, SHARD_COLUMN),
    ).fetchone()
    if row is None:
        checks.add(FAIL, "shard column", f"{outbox} has no generated column {SHARD_COLUMN}: no shard's row filter "
                                         "can match its rows", "run `cdc migrate` with the outbox's --shards")
    elif "coalesce" not in str(row[0]).lower() and not row[1]:
        # Outboxes sharded before the expression coalesced: their NULL ids are lost, not dead-lettered.
        checks.add(FAIL, "shard column", f"a row with a NULL unique_id gets a NULL {SHARD_COLUMN} ({row[0]}), "
                                         "which no shard's filter matches: no slot would ever send it",
                   f"ALTER TABLE {outbox} ALTER COLUMN unique_id SET NOT NULL;")
    else:
        checks.add(PASS, "shard column", f"every row goes to one shard ({SHARD_COLUMN} = {row[0]})")


def _publication(conn: Conn, s: Settings, checks: _Checks, *, expected_filter: str | None = None,
                 label: str = "") -> None:
    name = s.publication
    pub = get_publication(conn, name, s.outbox_schema, s.outbox_table)
    if pub is None:
        checks.add(FAIL, f"{label}publication", f"publication {name} does not exist", "cdc publication create")
        return
    if "insert" not in pub.publish:
        checks.add(FAIL, f"{label}publication", f"publication {name} does not publish inserts",
                   f"ALTER PUBLICATION {_ident(conn, name)} SET (publish = 'insert');")
    elif pub.covers_outbox == COVERS:
        checks.add(PASS, f"{label}publication", f"publication {name} publishes inserts into {pub.outbox}")
    else:
        why = ("sends the outbox's rows under its partitions' names, which cdc ignores"
               if pub.covers_outbox == PARTITIONS_ONLY else f"does not cover {pub.outbox}")
        checks.add(FAIL, f"{label}publication", f"publication {name} {why}",
                   fix_for(_ident(conn, name), pub.covers_outbox, _ident(conn, s.outbox_schema), _ident(conn, s.outbox_table)))
    for t in pub.tables:
        if (t.schema, t.table) != (s.outbox_schema, s.outbox_table):
            continue
        if expected_filter is not None:
            ok = t.row_filter is not None and _same_filter(t.row_filter, expected_filter)
            checks.add(PASS if ok else FAIL, f"{label}row filter", f"rows WHERE {t.row_filter}",
                       f"ALTER PUBLICATION {_ident(conn, name)} SET TABLE {_ident(conn, t.schema, t.table)} "
                       f"WHERE {expected_filter};")
        elif t.row_filter:
            checks.add(WARN, "publication row filter", f"only rows WHERE {t.row_filter} are delivered",
                       f"ALTER PUBLICATION {_ident(conn, name)} SET TABLE {_ident(conn, t.schema, t.table)};")


def _slot(conn: Conn, s: Settings, checks: _Checks, slot: Any, *, label: str = "") -> None:
    name = s.slot
    if slot is None:
        checks.add(FAIL, f"{label}slot", f"replication slot {name} does not exist",
                   "cdc run --create-slot  (creates it and copies the rows already in the outbox)")
        return
    problems = []
    if slot.plugin != "pgoutput":
        problems.append(f"uses plugin {slot.plugin}, not pgoutput")
    if slot.database != conn.info.dbname:
        problems.append(f"belongs to database {slot.database}, not {conn.info.dbname}")
    if slot.invalidated:
        problems.append("is invalidated (the WAL it needed is gone)")
    if problems:
        checks.add(FAIL, f"{label}slot", f"replication slot {name} " + " and ".join(problems),
                   "cdc slot drop, then cdc run --create-slot (it delivers what ClickHouse lacks)")
    elif slot.wal_status == "unreserved":
        checks.add(WARN, f"{label}slot", f"replication slot {name} is past max_slot_wal_keep_size and may be lost",
                   "start `cdc run` now so it catches up")
    else:
        state = f"in use by process {slot.active_pid}" if slot.active else "not in use"
        checks.add(PASS, f"{label}slot", f"replication slot {name} ({state}, confirmed {slot.confirmed_flush_lsn})")


def _same_filter(found: str, expected: str) -> bool:
    """PostgreSQL prints ``((shard_hash % 4) = 1)`` back as ``((shard_hash % (4)::bigint) = 1)``."""
    def bare(text: str) -> str:
        return text.replace("::bigint", "").replace("(", "").replace(")", "").replace(" ", "")

    return bare(found) == bare(expected)


def _clickhouse(s: Settings, checks: _Checks, timeout: float) -> None:
    if not s.sink_url:
        checks.add(FAIL, "clickhouse", "no ClickHouse URL given", "pass --clickhouse-url or set CDC_CLICKHOUSE_URL")
        return
    try:
        with open_sink_admin(s.sink_url, s, timeout=timeout) as wh:
            checks.add(PASS, "clickhouse", f"connected to {wh.url}")
            warning = wh.version_warning()
            if warning is None:
                checks.add(PASS, "clickhouse version", wh.version)
            else:
                checks.add(WARN, "clickhouse version", *warning)
            problems = wh.schema_problems()
            ledger = None if problems else wh.ledger_check()
            replicas = wh.replicas()
    except (SinkConfigError, SinkError) as exc:
        in_process = s.sink_url.strip().lower().startswith("chdb:")  # no server, no password: a directory
        checks.add(FAIL, "clickhouse", str(exc), "stop the process named, or check CDC_SINK_URL" if in_process
                   else "check CDC_CLICKHOUSE_URL and the ClickHouse password")
        return
    if problems:
        checks.add(FAIL, "clickhouse schema", "; ".join(problems),
                   "cdc migrate --clickhouse-url ...  (creates what is missing)")
    else:
        checks.add(PASS, "clickhouse schema", f"{s.sink_table}, its dead-letter and progress tables are in place")
    if ledger is not None and ledger.warning:
        checks.add(WARN, "clickhouse ledger", ledger.warning,
                   "cdc verify --repair  (then cdc verify, which checks everything the outbox still holds)")
    elif ledger is not None:
        checks.add(PASS, "clickhouse ledger", f"the events table holds the ledger's {ledger.recorded} newest events")
    for r in replicas:
        found = r.problems()
        detail = r.summary()
        if not found:
            checks.add(PASS, "clickhouse replicas", detail)
        for critical, message in found:
            checks.add(FAIL if critical else WARN, "clickhouse replicas", message,
                       "check ZooKeeper and the replicas' logs; SELECT * FROM system.replication_queue shows the queue")
