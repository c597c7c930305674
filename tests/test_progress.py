"""Progress of long commands: rate and ETA on a terminal, log lines otherwise, and a tick while one query runs."""

from __future__ import annotations

import io
import time
from typing import Any

from cdc.cli._progress import Progress


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_progress_is_log_lines_with_rate_and_eta() -> None:
    log = Log()
    with Progress("verify", log=log, stream=io.StringIO(), every=0.05) as progress:
        progress.phase("drill-down", total=1000)
        for _ in range(4):
            time.sleep(0.06)
            progress.advance(100)
        progress.phase("postgres")  # one long query: no total, only the time it has taken
        time.sleep(0.2)
    during = [f for event, f in log.lines if event == "verify progress" and f["phase"] == "drill-down"]
    moving = [f for f in during if f["done"]]
    assert moving and all(f["total"] == 1000 and f["rate"] > 0 and "eta_seconds" in f for f in moving)
    assert [f["done"] for f in during] == sorted(f["done"] for f in during)
    ticks = [f for event, f in log.lines if event == "verify progress" and f["phase"] == "postgres"]
    assert ticks and all("total" not in f for f in ticks)
    finished = [f["phase"] for event, f in log.lines if event == "verify phase done"]
    assert finished == ["drill-down", "postgres"]


def test_on_a_terminal_progress_rewrites_one_line() -> None:
    screen = Terminal()
    log = Log()
    with Progress("backfill", log=log, stream=screen, every=0.01) as progress:
        progress.phase("rows", total=200)
        progress.advance(50)
        time.sleep(0.05)  # the ticker redraws the line meanwhile
    text = screen.getvalue()
    assert "\r\033[K" in text and "backfill: rows 50/200 (25%)" in text and "ETA" in text
    assert text.endswith("\n") and log.lines == []
