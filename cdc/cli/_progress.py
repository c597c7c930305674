"""Progress of a long command: one line with rate and ETA on a terminal, a JSON log line every few seconds otherwise.

A command goes through phases; a phase may know its total (rows to go
through) or not (one long query: only the elapsed time is shown). A
background thread keeps the line (or the log) going while a single query
runs, so silence never looks like a hang.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO


class Progress:
    def __init__(self, command: str, *, log: Any, stream: TextIO | None = None, tty: bool | None = None,
                 every: float | None = None) -> None:
        self._command = command
        self._log = log
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._every = every if every is not None else (0.5 if self._tty else 10.0)
        self._lock = threading.Lock()
        self._phase = ""
        self._total: int | None = None
        self._done = 0
        self._phase_started = self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name=f"{command}-progress", daemon=True)
        self._thread.start()

    def phase(self, name: str, total: int | None = None) -> None:
        with self._lock:
            if self._phase:
                self._emit(final=True)
            self._phase, self._total, self._done = name, total, 0
            self._phase_started = time.monotonic()

    def advance(self, n: int) -> None:
        with self._lock:
            self._done += n
            if time.monotonic() - self._last >= self._every:
                self._emit()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            if self._phase:
                self._emit(final=True)
            if self._tty:
                self._stream.write("\n")
                self._stream.flush()
            self._phase = ""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tick(self) -> None:
        while not self._stop.wait(self._every):
            with self._lock:
                if self._phase and time.monotonic() - self._last >= self._every:
                    self._emit()

    def _emit(self, *, final: bool = False) -> None:
        now = time.monotonic()
        self._last = now
        elapsed = now - self._phase_started
        rate = self._done / elapsed if elapsed > 0 else 0.0
        eta: float | None = None
        if self._total and rate > 0 and not final:
            eta = max(0.0, (self._total - self._done) / rate)
        if self._tty:
            text = f"{self._command}: {self._phase}"
            if self._total is not None:
                pct = 100.0 * self._done / self._total if self._total else 100.0
                text += f" {self._done}/{self._total} ({pct:.0f}%), {rate:,.0f}/s"
                if eta is not None:
                    text += f", ETA {eta:.0f}s"
            text += f", {elapsed:.1f}s"
            self._stream.write("\r\033[K" + text)
            self._stream.flush()
            return
        fields: dict[str, Any] = {"phase": self._phase, "seconds": round(elapsed, 1)}
        if self._total is not None:
            fields.update(done=self._done, total=self._total, rate=round(rate, 1))
            if eta is not None:
                fields["eta_seconds"] = round(eta, 1)
        self._log.info(f"{self._command} progress" if not final else f"{self._command} phase done", **fields)
