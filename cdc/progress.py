"""Progress of a long command (backfill, verify, resharding): rate and ETA.

On a terminal, a live bar on stderr (rich); otherwise a JSON log line every
``every`` seconds and one at the end, so that a job run by cron or in a
container still says how far it is::

    {"event": "progress", "task": "backfill", "done": 120000, "total": 1000000, "percent": 12.0,
     "rate": 41234.5, "eta_seconds": 21.3, ...}

Usage, the same for every command::

    with Progress("verify", total=rows, log=log) as progress:
        for chunk in work:
            ...
            progress.advance(len(chunk))

``total=None`` when the amount is unknown: then no percent and no ETA.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from structlog.typing import FilteringBoundLogger

if TYPE_CHECKING:  # rich loads only for a bar on a terminal
    from rich.console import Console
    from rich.progress import Progress as RichProgress


def human_rate(per_second: float | None, unit: str) -> str:
    if per_second is None:
        return f"? {unit}/s"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_second >= scale:
            return f"{per_second / scale:.1f}{suffix} {unit}/s"
    return f"{per_second:.0f} {unit}/s"


class Progress:
    def __init__(
        self, task: str, total: int | None, *, log: FilteringBoundLogger, unit: str = "rows",
        terminal: bool | None = None, every: float = 10.0, clock: Callable[[], float] = time.monotonic,
        console: Console | None = None,
    ) -> None:
        self.task = task
        self.total = total
        self.done = 0
        self._log = log
        self._unit = unit
        self._every = every
        self._clock = clock
        self._terminal = sys.stderr.isatty() if terminal is None else terminal
        self._console = console
        self._bar: RichProgress | None = None
        self._bar_task: Any = None
        self._started = 0.0
        self._last_line = (0.0, 0)  # (when, done) at the last log line

    def __enter__(self) -> Progress:
        self._started = self._clock()
        self._last_line = (self._started, 0)
        if self._terminal:
            self._bar = _bar(self._unit, self._console)
            self._bar.start()
            self._bar_task = self._bar.add_task(self.task, total=self.total)
        return self

    def advance(self, n: int) -> None:
        if n <= 0:
            return
        self.done += n
        if self._bar is not None:
            self._bar.update(self._bar_task, advance=n)
            return
        now = self._clock()
        when, done = self._last_line
        if now - when >= self._every:
            self._line(rate=(self.done - done) / (now - when))
            self._last_line = (now, self.done)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
            return
        elapsed = self._clock() - self._started
        self._line(rate=self.done / elapsed if elapsed > 0 else None, finished=exc is None, seconds=round(elapsed, 3))

    def _line(self, *, rate: float | None, **extra: Any) -> None:
        fields: dict[str, Any] = {"task": self.task, "done": self.done, "total": self.total, "unit": self._unit}
        if self.total:
            fields["percent"] = round(100.0 * self.done / self.total, 1)
        fields["rate"] = None if rate is None else round(rate, 1)
        if self.total is not None and rate and "finished" not in extra:
            fields["eta_seconds"] = round(max(0, self.total - self.done) / rate, 1)
        self._log.info("progress", **fields, **extra)


def _bar(unit: str, console: Console | None) -> RichProgress:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, Task, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(human_rate(task.speed, unit), style="progress.data.speed")

    return RichProgress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(), TextColumn("ETA"),
        TimeRemainingColumn(), console=console or Console(stderr=True), transient=False,
    )
