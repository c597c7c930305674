"""``cdc demo``: the whole path on this machine, no Docker: PostgreSQL 18, ClickHouse, load, ``cdc run``, checks."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import orjson

from ..logs import configure, get_logger


@click.command()
@click.option("--events", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="Stop after this many distinct committed events.")
@click.option("--rate", type=click.FloatRange(min=0), default=2_000.0, show_default=True,
              help="Outbox rows per second the application-like load writes (0: as fast as it can).")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the servers' data in this new (or empty) directory instead of removing it.")
@click.option("--sink", type=click.Choice(["auto", "chdb", "clickhouse-server"]), default="auto", show_default=True,
              help="Where the events go: chDB (ClickHouse inside cdc run), or a clickhouse-server on PATH; "
                   "auto takes the server when there is one.")
@click.option("--json", "as_json", is_flag=True, help="Report as JSON at the end (and no live progress).")
def demo(events: int, rate: float, keep: Path | None, sink: str, as_json: bool) -> None:
    """Run cdc end to end on this machine (pip install 'cdc[embedded]'): exit 0 when every event arrived once.

    Starts PostgreSQL 18 (wal_level=logical) and ClickHouse (chDB, or a local clickhouse-server), runs
    `cdc migrate`, writes orders and their events with cdc.emit (some transactions roll back, some are
    retried with the same unique_id) while the real `cdc run` streams them, then queries ClickHouse
    (events per type per minute) and checks exactly once: the distinct committed unique_ids are the events
    stored. Ctrl-C stops it cleanly; the servers and their data go (unless --keep).
    """
    from ..demo.processes import ServerError
    from ..demo.report import per_minute_table
    from ..demo.run import DemoFailed, DemoSettings, run_demo

    configure(fmt="console", level="warning")
    live = sys.stdout.isatty() and not as_json
    echo = (lambda _text: None) if as_json else _echo(live)
    status = _status(live, as_json)
    settings = DemoSettings(events=events, rate=rate or None, keep=keep, sink=sink)
    try:
        report, outcome = run_demo(settings, echo, status, log=get_logger())
    except KeyboardInterrupt:
        click.echo("\ncdc demo: interrupted; cdc run and the servers are stopped"
                   + ("" if keep is None else f", the data kept in {keep}"), err=True)
        sys.exit(130)
    except (DemoFailed, ServerError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(orjson.dumps({"load": {
            "transactions_committed": report.transactions_committed,
            "transactions_rolled_back": report.transactions_rolled_back,
            "outbox_rows": report.outbox_rows, "retries_of_committed": report.retries_of_committed,
            "retries_of_rolled_back": report.retries_of_rolled_back,
        }, **outcome.as_dict()}).decode())
    else:
        click.echo(f"\nload: {report.transactions_committed:,} transactions committed, "
                   f"{report.transactions_rolled_back:,} rolled back; {report.outbox_rows:,} outbox rows, of which "
                   f"{report.retries_of_committed:,} retries of committed events")
        click.echo("\nevents per type per minute (ClickHouse, FINAL):")
        for line in per_minute_table(outcome):
            click.echo(f"  {line}")
        verdict = "OK" if outcome.exactly_once else "FAILED"
        click.echo(f"\nexactly once: {verdict}: {outcome.committed_ids:,} distinct committed unique_ids, "
                   f"{outcome.outbox_ids:,} in the outbox, {outcome.stored_events:,} events in ClickHouse "
                   f"({outcome.stored_ids:,} distinct)")
        if outcome.missing:
            click.echo(f"  missing from ClickHouse: {', '.join(outcome.missing)}")
        if outcome.unexpected:
            click.echo(f"  in ClickHouse but never committed: {', '.join(outcome.unexpected)}")
    sys.exit(0 if outcome.exactly_once else 1)


def _echo(live: bool) -> Callable[[str], None]:
    def echo(text: str) -> None:
        click.echo(("\r\033[K" if live else "") + text)

    return echo


def _status(live: bool, quiet: bool) -> Callable[[str], None]:
    last = [0.0]

    def status(text: str) -> None:
        if quiet:
            return
        if live:
            click.echo("\r\033[K  " + text, nl=False)
            return
        now = time.monotonic()
        if now - last[0] >= 2.0:  # not a terminal: a line every 2 s, not a torrent
            last[0] = now
            click.echo("  " + text)

    return status
