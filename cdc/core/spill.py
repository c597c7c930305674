"""Rows of a streamed, still-open transaction: in memory up to a budget, then in a local file.

Streamed transactions (pgoutput ``streaming``) arrive before we know whether
they commit, so their rows are held until Stream Commit. The budget is shared by
every open transaction, so memory stays bounded however many are in flight.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Iterator
from typing import IO, Any, Final

_CHUNK: Final = 1000  # records per pickle frame in the file


class SpillBudget:
    """Bytes held in memory by all spools together."""

    def __init__(self, limit: int, directory: str | None = None) -> None:
        self.limit = limit
        self.directory = directory
        self.in_memory = 0
        self.spilled_files = 0


class Spool:
    """An append-only sequence of records, replayed once in order, then discarded."""

    def __init__(self, budget: SpillBudget) -> None:
        self._budget = budget
        self._memory: list[Any] = []
        self._memory_bytes = 0
        self._file: IO[bytes] | None = None
        self._pending: list[Any] = []
        self.count = 0

    def append(self, record: Any, nbytes: int) -> None:
        self.count += 1
        if self._file is not None:
            self._pending.append(record)
            if len(self._pending) >= _CHUNK:
                self._write_pending()
            return
        self._memory.append(record)
        self._memory_bytes += nbytes
        self._budget.in_memory += nbytes
        if self._budget.in_memory > self._budget.limit:
            self._spill()

    def _spill(self) -> None:
        fd, path = tempfile.mkstemp(prefix="cdc-stream-", suffix=".spool", dir=self._budget.directory)
        os.unlink(path)  # the open descriptor keeps it; nothing is left behind after a crash
        self._file = os.fdopen(fd, "w+b")
        self._budget.spilled_files += 1
        self._pending = self._memory
        self._write_pending()
        self._memory = []
        self._budget.in_memory -= self._memory_bytes
        self._memory_bytes = 0

    def _write_pending(self) -> None:
        assert self._file is not None
        pickle.dump(self._pending, self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self._pending = []

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def __iter__(self) -> Iterator[Any]:
        if self._file is None:
            yield from self._memory
            return
        if self._pending:
            self._write_pending()
        self._file.flush()
        self._file.seek(0)
        while True:
            try:
                chunk = pickle.load(self._file)  # our own file, written by this process
            except EOFError:
                return
            yield from chunk

    def close(self) -> None:
        self._budget.in_memory -= self._memory_bytes
        self._memory = []
        self._memory_bytes = 0
        if self._file is not None:
            self._file.close()
            self._file = None
