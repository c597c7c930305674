"""SIGINT and SIGTERM as events, set without taking a lock inside a signal handler.

A Python signal handler runs on the main thread between two bytecodes, which
may be inside ``threading.Event.wait()`` while that thread holds the event's
lock. A handler that calls ``set()`` there waits for itself forever: the shard
children lost about one stop in 1,800 that way. Printing from a handler has
the same flaw with the stream's lock. So the handler here does nothing but
the start-up exit: the interpreter's own C handler writes each signal's
number to a pipe (``signal.set_wakeup_fd``), and a thread of its own reads the
pipe and acts, on a thread that holds nothing.

The first signal sets ``stop`` (flush, acknowledge, leave); every later one
calls ``on_abort`` and sets ``abort`` (give up what is not stored).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Final

STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Use as a context manager, on the main thread; it restores the handlers it replaced on exit."""

    def __init__(self, *, on_abort: Callable[[], None] | None = None, exit_while_starting: str | None = None) -> None:
        """``exit_while_starting``: until ``started()``, a signal ends the process at once (exit 0) after
        printing this line; for a start-up that may block in a connection for its whole timeout, and has
        read nothing that a stop would need to flush."""
        self.stop: Final = threading.Event()
        self.abort: Final = threading.Event()
        self.received = 0
        self._on_abort = on_abort
        self._exit_line = exit_while_starting
        self._starting = exit_while_starting is not None
        self._pipe: tuple[int, int] | None = None
        self._previous_fd = -1
        self._previous: dict[int, object] = {}
        self._thread: threading.Thread | None = None

    def started(self) -> None:
        """From now on a signal stops the run rather than the process."""
        self._starting = False

    def __enter__(self) -> StopSignals:
        read, write = os.pipe()
        os.set_blocking(write, False)  # the C handler must never block on a full pipe
        self._pipe = (read, write)
        self._previous_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        self._thread = threading.Thread(target=self._watch, args=(read,), name="cdc-stop-signals", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._previous_fd)
        if self._pipe is not None:
            read, write = self._pipe
            os.close(write)  # the watcher reads the end of the pipe and returns
            if self._thread is not None:
                self._thread.join(timeout=5)
            os.close(read)
            self._pipe = None

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        # The pipe already holds the signal; only the start-up exit happens here, because
        # only the main thread can interrupt a connection that is still being made.
        if self._starting and self._exit_line is not None:
            os.write(2, f"{self._exit_line}\n".encode())  # no buffered stream: its lock may be held
            raise SystemExit(0)

    def _watch(self, read: int) -> None:
        while True:
            try:
                data = os.read(read, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                # The wakeup pipe receives every signal with a Python handler, not only ours.
                if signum in STOP_SIGNALS:
                    self._received()

    def _received(self) -> None:
        self.received += 1
        if not self.stop.is_set():
            self.stop.set()
            return
        if self._on_abort is not None:
            self._on_abort()
        self.abort.set()
