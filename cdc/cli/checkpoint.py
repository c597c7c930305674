"""``cdc checkpoint show | save FILE``: where the slot and ClickHouse stand (format: cdc/admin/checkpoint.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..admin import checkpoint as fmt
from ..core import positions
from ..lsn import format_lsn
from ..pg.connect import connect
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
