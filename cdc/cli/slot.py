"""``cdc slot list | create | drop | advance``: the replication slots, for the DBA who owns them."""

from __future__ import annotations

import threading
from contextlib import nullcontext
from typing import Any

import click
import psycopg

from ..admin import AdminError
from ..admin.health import seconds_since
from ..lsn import parse_lsn
from ..pg import slots as admin
from ..pg.connect import connect, server_version
from ..settings import Settings
from ..stopping import StopSignals
from ..sink import open_sink_admin
from ..pg.shards import read_sharding
from ..sink.base import SinkConfigError, SinkError
from ._output import confirm, emit_json, human_bytes, human_seconds, json_option, slot_arg, table, yes_option
from .options import lsn_value, require_pg, settings_options, shared_options


@click.group()
def slot() -> None:
    """Logical replication slots: list all, create, drop or advance one."""


def _last_ack(settings: Settings, row: admin.SlotRow, stream: int | None) -> dict[str, Any]:
    """``stream``: the slot's in the sink, when it is a shard's (None: the one slot of an unsharded outbox)."""
    if row.active:
        return {"age_seconds": row.ack_age_seconds, "source": "pg_stat_replication.reply_time"}
    if settings.sink_url:
        try:
            with open_sink_admin(settings.sink_url, settings, timeout=3) as wh:
                if stream is None:
                    last = wh.last_inserted_at()
                else:
                    summary = wh.stream_summaries().get(stream)
                    last = None if summary is None else summary.last_inserted_at
        except (SinkConfigError, SinkError):
            return {"age_seconds": None, "source": "unknown: slot inactive and ClickHouse unreachable"}
        if last is not None:
            return {"age_seconds": seconds_since(last), "source": "ClickHouse progress table (last delivery)"}
    return {"age_seconds": None, "source": "unknown: slot inactive (nothing reports acknowledgements then)"}


@slot.command("list")
@shared_options
@json_option
def list_(settings: Settings, as_json: bool) -> None:
    """Every logical slot on the server (all databases), with its lag; `*` marks --slot (or its shards')."""
    with connect(require_pg(settings), application_name="cdc-admin") as conn:
        rows = admin.list_slots(conn)
        sharding = read_sharding(conn, settings.outbox_schema, settings.slot)
    shards = {} if sharding is None else {shard.slot: shard for shard in sharding.all_shards()}
    out = []
    for row in rows:
        data = row.as_dict()
        shard = shards.get(row.name)
        data["ours"] = row.name == settings.slot if sharding is None else shard is not None
        data["shard"] = None if shard is None else {"shard": shard.label, "generation": shard.generation,
                                                    "stream": shard.stream}
        data["last_ack"] = (_last_ack(settings, row, None if shard is None else shard.stream)
                            if data["ours"] else None)
        out.append(data)
    if as_json:
        emit_json(out)
        return
    if not rows:
        click.echo("no logical replication slots on this server")
        return
    table(
        ["slot", "plugin", "database", "active", "restart_lsn", "confirmed_flush", "lag", "wal_status",
         "safe_wal_size", "last ack"],
        [
            [("* " if d["ours"] else "") + r.name, r.plugin, r.database,
             f"yes (pid {r.active_pid})" if r.active else "no", r.restart_lsn, r.confirmed_flush_lsn,
             "" if r.lag_bytes is None else f"{human_bytes(r.lag_bytes)} ({r.lag_bytes})",
             r.wal_status, human_bytes(r.safe_wal_size),
             "" if d["last_ack"] is None else (
                 f"{human_seconds(d['last_ack']['age_seconds'])} ago ({d['last_ack']['source']})"
                 if d["last_ack"]["age_seconds"] is not None else d["last_ack"]["source"])]
            for r, d in zip(rows, out)
        ],
    )


@slot.command()
@shared_options
@click.argument("name", required=False)
@click.option("--temporary", is_flag=True, help="Dropped when this command ends: it holds the slot until Ctrl-C.")
@settings_options("failover", help={"failover": "Synchronised to physical standbys with sync_replication_slots, "
                                                 "so it survives a promotion [default: on for PostgreSQL 17+, "
                                                 "off for --temporary]."})
@yes_option
@json_option
def create(settings: Settings, name: str | None, temporary: bool, yes: bool, as_json: bool) -> None:
    """Create a pgoutput slot NAME (default: --slot). It copies nothing: `cdc run --create-slot` also
    delivers the rows already in the outbox."""
    name = slot_arg(name or settings.slot)
    with connect(require_pg(settings), application_name="cdc-admin") as conn:
        failover = settings.failover
        # A temporary slot cannot be synchronised (PostgreSQL refuses): default it off there.
        if failover is None:
            failover = not temporary and server_version(conn) >= admin.FAILOVER_SINCE
        admin.check_create(conn, name, failover=failover)
        confirm(f"Create {'temporary ' if temporary else ''}logical replication slot {name} in database "
                f"{conn.info.dbname}? It keeps WAL on the server until a client consumes it.",
                yes=yes, refusal=f"creating replication slot {name}")
        # Installed before the slot exists (and after the prompt, which Ctrl-C must still abort): the slot is
        # visible the moment it is made, so a signal from then on ends the hold cleanly instead of killing
        # the process between the creation and the hold.
        with StopSignals() if temporary else nullcontext() as signals:
            created = admin.create_slot(conn, name, temporary=temporary, failover=failover)
            has_rows = (not temporary and name == settings.slot
                        and admin.outbox_has_rows(conn, settings.outbox_schema, settings.outbox_table))
            note = ("the outbox already holds rows this slot will not send: deliver them with `cdc backfill`"
                    if has_rows else None)
            if as_json:
                emit_json({"slot": created.name, "lsn": created.lsn, "temporary": temporary, "failover": failover,
                           "note": note})
            else:
                click.echo(f"slot {created.name} created at {created.lsn}"
                           f"{' (temporary)' if temporary else ''}{' (failover)' if failover else ''}")
                if note:
                    click.echo(f"note: {note}")
            if signals is not None:
                _hold(conn, created.name, as_json, signals.stop)


def _hold(conn: Any, name: str, as_json: bool, stop: threading.Event) -> None:
    if not as_json:
        click.echo(f"holding temporary slot {name}; it is dropped when this command stops (Ctrl-C)")
    while not stop.is_set():
        try:
            conn.execute("SELECT 1")  # the slot lives with this session: notice if it is gone
        except psycopg.Error:
            raise AdminError(f"lost the connection to PostgreSQL: temporary slot {name} is gone") from None
        stop.wait(1.0)
    if not as_json:
        click.echo(f"slot {name} dropped")


@slot.command()
@shared_options
@click.argument("name", required=False)
@click.option("--force", is_flag=True, help="Drop even an active slot: terminate the walsender holding it first.")
@yes_option
@json_option
def drop(settings: Settings, name: str | None, force: bool, yes: bool, as_json: bool) -> None:
    """Drop slot NAME (default: --slot). Refused while a client streams from it, unless --force."""
    name = slot_arg(name or settings.slot)
    with connect(require_pg(settings), application_name="cdc-admin") as conn:
        info = admin.get_slot(conn, name)
        if info is None:
            raise _missing(conn, settings, name)
        if info.active and not force:
            admin.drop_slot(conn, name, force=False)  # raises the refusal
        held = f" and terminate process {info.active_pid} streaming from it" if info.active else ""
        confirm(f"Drop replication slot {name}{held}? Changes it holds that were not delivered are then lost "
                "to cdc (recover them with `cdc backfill`).", yes=yes, refusal=f"dropping replication slot {name}")
        terminated = admin.drop_slot(conn, name, force=force)
    if as_json:
        emit_json({"slot": name, "dropped": True, "terminated_pid": terminated})
    else:
        click.echo(f"slot {name} dropped" + (f" (terminated process {terminated})" if terminated else ""))


@slot.command()
@shared_options
@click.argument("name", required=False)
@click.option("--to-lsn", "to_lsn", required=True, metavar="LSN", callback=lsn_value,
              help="Move the slot to this LSN (never backward).")
@yes_option
@json_option
def advance(settings: Settings, name: str | None, to_lsn: str, yes: bool, as_json: bool) -> None:
    """Move slot NAME (default: --slot) forward to LSN: what was committed before it is never delivered."""
    name = slot_arg(name or settings.slot)
    target = parse_lsn(to_lsn)
    with connect(require_pg(settings), application_name="cdc-admin") as conn:
        if admin.get_slot(conn, name) is None:
            raise _missing(conn, settings, name)
        info = admin.check_advance(conn, name, target)
        confirm(f"Advance replication slot {name} from {info.confirmed_flush_lsn} to {to_lsn}? Changes committed "
                "in between will never be delivered by this slot.", yes=yes, refusal=f"advancing slot {name}")
        result = admin.advance_slot(conn, name, target)
    if as_json:
        emit_json({"slot": name, "before": result.before, "after": result.after})
    else:
        click.echo(f"slot {name} advanced from {result.before} to {result.after}")


def _missing(conn: Any, settings: Settings, name: str) -> AdminError:
    """Slot ``name`` does not exist; when it names a sharded outbox's slots, they are named instead."""
    sharding = read_sharding(conn, settings.outbox_schema, name) if name == settings.slot else None
    if sharding is not None:
        names = [shard.slot for shard in sharding.all_shards()]
        return AdminError(f"replication slot {name} does not exist: the outbox is split over {len(names)} shard "
                          f"slots ({', '.join(names)}): name one of them")
    return AdminError(f"replication slot {name} does not exist: `cdc slot list` shows the slots there are")
