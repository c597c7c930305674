"""``cdc checkpoint show | save FILE``: where the slot and ClickHouse stand (format: cdc/admin/checkpoint.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..admin import checkpoint as fmt
from ..core import positions
from ..lsn import format_lsn
from ..pg.connect import connect
from ..pg.shards import Sharding, read_sharding, streaming_generation
from ..pg.slots import get_slot
from ..settings import Settings
from ..sink import open_sink_admin
from ._output import emit_json, json_option
from .options import require_pg, shared_options


@click.group()
def checkpoint() -> None:
    """The slot's confirmed LSN and ClickHouse's high-water mark, shown or saved for `cdc run --from-checkpoint`."""


def _gather(settings: Settings) -> dict[str, Any]:
    dsn = require_pg(settings)
    server = fmt.identify(dsn)
    with connect(dsn, application_name="cdc-admin") as conn:
        sharding = read_sharding(conn, settings.outbox_schema, settings.slot)
        if sharding is not None:
            return _gather_shards(settings, server, conn, sharding)
        row = get_slot(conn, settings.slot)
    slot = None if row is None else {
        "name": row.name, "plugin": row.plugin, "confirmed_flush_lsn": row.confirmed_flush_lsn,
        "restart_lsn": row.restart_lsn, "wal_status": row.wal_status,
    }
    clickhouse = None
    if settings.sink_url:
        with open_sink_admin(settings.sink_url, settings) as wh:
            hwm, latest = wh.high_water_mark(), wh.latest()
            clickhouse = {
                "database": wh.database, "table": settings.sink_table,
                "high_water_mark": None if hwm is None or latest is None else {
                    "commit_lsn": format_lsn(hwm[0]), "commit_seq": hwm[1],
                    "committed_at": latest.committed_at.isoformat(),
                    "origin": positions.describe(hwm[0]) or "stream",
                },
            }
    return fmt.build(server, slot, clickhouse)


def _slot(row: Any) -> dict[str, Any] | None:
    return None if row is None else {
        "name": row.name, "plugin": row.plugin, "confirmed_flush_lsn": row.confirmed_flush_lsn,
        "restart_lsn": row.restart_lsn, "wal_status": row.wal_status,
    }


def _gather_shards(settings: Settings, server: Any, conn: Any, sharding: Sharding) -> dict[str, Any]:
    """One file, every shard: each slot's position and its stream's high-water mark."""
    generation = streaming_generation(sharding, reshard_running=False) or sharding.current
    rows = [(shard, get_slot(conn, shard.slot)) for shard in generation.shard_list()]
    summaries: dict[int, Any] = {}
    clickhouse = None
    if settings.sink_url:
        with open_sink_admin(settings.sink_url, settings) as wh:
            summaries = wh.stream_summaries()
            clickhouse = {"database": wh.database, "table": settings.sink_table, "high_water_mark": None}
    shards = []
    for shard, row in rows:
        summary = summaries.get(shard.stream)
        shards.append({
            "slot": shard.slot, "shard": shard.label, "stream": shard.stream, "exists": row is not None,
            **{k: v for k, v in (_slot(row) or {}).items() if k != "name"},
            "high_water_mark": None if summary is None else {
                "commit_lsn": format_lsn(summary.high_water_mark[0]), "commit_seq": summary.high_water_mark[1],
                "committed_at": summary.committed_at.isoformat(),
                "origin": positions.describe(summary.high_water_mark[0]) or "stream",
            },
        })
    return fmt.build(server, None, clickhouse, shards=shards)


@checkpoint.command()
@shared_options
@json_option
def show(settings: Settings, as_json: bool) -> None:
    """Print the slot's confirmed LSN, ClickHouse's high-water mark, and the LSN a replay would start from."""
    data = _gather(settings)
    if as_json:
        emit_json(data)
        return
    server, slot, ch = data["server"], data["slot"], data["clickhouse"]
    click.echo(f"server       system {server['system_identifier']}, timeline {server['timeline']}, "
               f"database {server['database']}, PostgreSQL {server['version']}")
    if "shards" in data:
        for shard in data["shards"]:
            hwm = shard["high_water_mark"]
            click.echo(f"shard {shard['shard']:<6} {shard['slot']}: confirmed {shard.get('confirmed_flush_lsn') or 'none'}, "
                       f"high-water {hwm['commit_lsn'] + ' #' + str(hwm['commit_seq']) if hwm else 'none'}, "
                       f"replay from {shard['replay_from_lsn'] or 'nothing recorded'}")
        click.echo(f"replay from  {data['replay_from_lsn'] or 'nothing recorded'} (the lowest; each shard from its own)")
        return
    click.echo(f"slot         {settings.slot}: " + (
        "does not exist" if slot is None else f"confirmed {slot['confirmed_flush_lsn'] or 'none (invalidated)'}, "
                                              f"restart {slot['restart_lsn'] or 'none'}"))
    if ch is None:
        click.echo("clickhouse   not checked (no --clickhouse-url)")
    elif ch["high_water_mark"] is None:
        click.echo(f"clickhouse   {ch['database']}.{ch['table']}: no event yet")
    else:
        hwm = ch["high_water_mark"]
        origin = "" if hwm["origin"] == "stream" else f" ({hwm['origin']}: not a WAL position)"
        click.echo(f"clickhouse   {ch['database']}.{ch['table']}: high-water {hwm['commit_lsn']} #{hwm['commit_seq']}"
                   f"{origin}, committed {hwm['committed_at']}")
    click.echo(f"replay from  {data['replay_from_lsn'] or 'nothing recorded'}")


@checkpoint.command()
@shared_options
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def save(settings: Settings, file: Path, as_json: bool) -> None:
    """Write the checkpoint to FILE as JSON (atomically; no secrets in it)."""
    data = _gather(settings)
    fmt.save(file, data)
    if as_json:
        emit_json({"file": str(file), "replay_from_lsn": data["replay_from_lsn"]})
    else:
        click.echo(f"checkpoint saved to {file}: replay from {data['replay_from_lsn'] or 'nothing recorded'}")
