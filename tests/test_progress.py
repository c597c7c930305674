"""Long commands report progress: JSON log lines off a terminal, a bar with rate and ETA on one."""

from __future__ import annotations

import io
from collections.abc import MutableMapping
from typing import Any

import pytest
import structlog
from rich.console import Console

from cdc.progress import Progress, human_rate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def progress_lines(run: Any) -> list[MutableMapping[str, Any]]:
    with structlog.testing.capture_logs() as logs:
        run()
    return [entry for entry in logs if entry["event"] == "progress"]


def test_off_a_terminal_a_line_every_interval_with_rate_and_eta() -> None:
    clock = Clock()

    def run() -> None:
        with Progress("verify", total=1000, log=structlog.get_logger(), terminal=False, every=10.0,
                      clock=clock) as progress:
            progress.advance(100)       # t=0: too early for a line
            clock.now += 10
            progress.advance(100)       # t=10: 200 done, 20/s
            clock.now += 5
            progress.advance(300)       # t=15: too early
            clock.now += 5
            progress.advance(100)       # t=20: 600 done, 40/s over the last 10 s
            clock.now += 1

    first, second, last = progress_lines(run)
    assert first == {"event": "progress", "log_level": "info", "task": "verify", "done": 200, "total": 1000,
                     "unit": "rows", "percent": 20.0, "rate": 20.0, "eta_seconds": 40.0}
    assert (second["done"], second["rate"], second["eta_seconds"]) == (600, 40.0, 10.0)
    assert last["finished"] is True and last["done"] == 600 and last["seconds"] == 21.0
    assert last["rate"] == pytest.approx(600 / 21, abs=0.1) and "eta_seconds" not in last


def test_an_unknown_total_has_no_percent_and_no_eta() -> None:
    clock = Clock()

    def run() -> None:
        with Progress("reshard", total=None, log=structlog.get_logger(), terminal=False, every=1.0,
                      clock=clock) as progress:
            clock.now += 2
            progress.advance(50)

    first, last = progress_lines(run)
    assert first["rate"] == 25.0 and "percent" not in first and "eta_seconds" not in first
    assert last["finished"] is True


def test_a_failed_command_says_it_did_not_finish() -> None:
    def run() -> None:
        with pytest.raises(RuntimeError):
            with Progress("backfill", total=10, log=structlog.get_logger(), terminal=False) as progress:
                progress.advance(3)
                raise RuntimeError("boom")

    [last] = progress_lines(run)
    assert last["finished"] is False and last["done"] == 3


def test_on_a_terminal_a_bar_with_count_rate_and_eta() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with structlog.testing.capture_logs() as logs:
        with Progress("backfill", total=1000, log=structlog.get_logger(), terminal=True, console=console) as p:
            p.advance(250)
    text = out.getvalue()
    assert "backfill" in text and "250/1000" in text and "rows/s" in text and "ETA" in text
    assert logs == []  # the bar replaces the log lines


@pytest.mark.parametrize(("rate", "text"), [(None, "? rows/s"), (12.4, "12 rows/s"), (4200.0, "4.2k rows/s"),
                                            (3.5e6, "3.5M rows/s")])
def test_rates_read_well(rate: float | None, text: str) -> None:
    assert human_rate(rate, "rows") == text
