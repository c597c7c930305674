"""``cdc top``: a live view of running pipelines, read from their metrics endpoints."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

from typing import TYPE_CHECKING

import click

from ._output import emit_json, human_bytes, human_seconds, json_option
from .options import Finite, cdc_option

if TYPE_CHECKING:  # rich and prometheus_client load when `cdc top` runs, not for every command
    from rich.console import Console
    from rich.table import Table

    from ..metrics.scrape import Row, SlotSample


@click.command()
@cdc_option("--metrics-addr", "addresses", multiple=True, metavar="HOST:PORT",
            help="A `cdc run --metrics-addr` endpoint; repeat it (or separate them by spaces) for several.")
@click.option("--interval", type=Finite(min=0.1), default=2.0, show_default=True,
              help="Seconds between reads; rates are over this interval.")
@click.option("--once", is_flag=True, help="Read twice, --interval apart, print one frame and exit (for scripts).")
@json_option
def top(addresses: Sequence[str], interval: float, once: bool, as_json: bool) -> None:
    """Events/s by outcome, slot lag in bytes and seconds, the last flush, latency p50/p99, dead letters and
    errors of every pipeline behind the given endpoints, one line per slot."""
    if not addresses:
        raise click.UsageError("no metrics endpoint: pass --metrics-addr HOST:PORT or set CDC_METRICS_ADDR")
    if as_json and not once:
        raise click.UsageError("--json prints one frame: use it with --once")
    from rich.live import Live

    from ..metrics.scrape import rows
    if once:
        first = _read_all(addresses)
        time.sleep(interval)
        frame = rows(_read_all(addresses), first)
        if as_json:
            emit_json([asdict(r) for r in frame])
        else:
            _console().print(_table(frame, [], interval))
        return
    previous: list[SlotSample] = []
    failures: list[str] = []
    try:
        with Live(_table([], [], interval), console=_console(), auto_refresh=False, screen=False) as live:
            while True:
                current, failures = _read_some(addresses)
                live.update(_table(rows(current, previous), failures, interval), refresh=True)
                previous = current
                time.sleep(interval)
    except KeyboardInterrupt:
        return


def _console() -> Console:
    from rich.console import Console

    # Piped into a file or a log: the whole table, not cut to 80 columns.
    return Console(width=None if sys.stdout.isatty() else 200)


def _read_all(addresses: Sequence[str]) -> list[SlotSample]:
    """Every endpoint's pipelines; one that cannot be read is a refusal (ScrapeError, one line)."""
    from ..metrics.scrape import fetch

    return [sample for address in addresses for sample in fetch(address)]


def _read_some(addresses: Sequence[str]) -> tuple[list[SlotSample], list[str]]:
    from ..metrics.scrape import ScrapeError, fetch

    samples: list[SlotSample] = []
    failures: list[str] = []
    for address in addresses:
        try:
            samples.extend(fetch(address))
        except ScrapeError as exc:
            failures.append(str(exc))
    return samples, failures


def _table(frame: Sequence[Row], failures: Sequence[str], interval: float) -> Table:
    from rich.table import Table

    table = Table(title=f"cdc top (every {interval:g}s)", title_justify="left", caption="\n".join(failures) or None,
                  caption_style="red")
    for header in ("endpoint", "slot", "stored", "duplicate", "dead letter", "dead letters", "lag", "lag s",
                   "last flush", "rows/flush", "p50", "p99", "heartbeat p99", "buffer", "errors"):
        table.add_column(header, justify="left" if header in ("endpoint", "slot") else "right", no_wrap=True)
    for r in frame:
        table.add_row(
            r.endpoint, r.slot, *(_rate(r.rates.get(k)) for k in ("stored", "duplicate", "dead_letter")),
            f"{r.dead_letters:.0f}", human_bytes(None if r.lag_bytes is None else int(r.lag_bytes)),
            _seconds(r.lag_seconds), "" if r.last_flush_ago is None else f"{human_seconds(r.last_flush_ago)} ago",
            "" if r.rows_per_flush is None else f"{r.rows_per_flush:.0f}",
            _seconds(r.latency_p50), _seconds(r.latency_p99), _seconds(r.heartbeat_p99),
            "" if r.buffer_rows is None else f"{r.buffer_rows:.0f}", f"{r.errors:.0f}",
        )
    return table


def _rate(value: float | None) -> str:
    return "" if value is None else human_rate(value, "ev")


def _seconds(value: float | None) -> str:
    return "" if value is None else (f"{value * 1000:.0f}ms" if value < 1 else human_seconds(value))


def human_rate(per_second: float | None, unit: str) -> str:
    if per_second is None:
        return f"? {unit}/s"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_second >= scale:
            return f"{per_second / scale:.1f}{suffix} {unit}/s"
    return f"{per_second:.0f} {unit}/s"
