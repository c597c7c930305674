"""chDB (ClickHouse in this process) behind the interface of ClickHouseConnection: the ClickHouse sink's code,
DDL and queries run on it unchanged.

A chDB directory is open in one process at a time (chDB holds an flock on its
``status`` file, which the kernel drops when the process dies, kill -9
included), and one process can only have one directory open. Each part of a
MergeTree table is written under a temporary name and renamed when complete,
so a process killed mid-INSERT leaves no partial part: chDB removes the
leftovers when the directory is opened again.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections.abc import Generator, Sequence
from typing import Any, Final

from clickhouse_driver.util.escape import escape_params

from ..base import SinkConfigError, SinkError
from ..clickhouse.connection import UnstorableValue, describe_error
from .arrow import ArrowEncoder, decode_rows
from .url import ChdbTarget

_INSERT_RE: Final = re.compile(r"^INSERT INTO (?P<table>\S+) \((?P<columns>[^)]*)\) VALUES$")
# One INSERT must stay one block, as over the native protocol: the materialized
# view then writes the batch's progress rows as one part, after its events.
_ONE_BLOCK: Final = ("SETTINGS max_insert_block_size = 1099511627776, min_insert_block_size_rows = 0, "
                     "min_insert_block_size_bytes = 0")
_EXTRA: Final = "pip install 'cdc[embedded]'"


class ChdbConnection:
    """A lock-guarded chDB connection to one directory; safe to share between threads."""

    compression = "none"  # nothing crosses a network

    def __init__(self, target: ChdbTarget) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._encoders: dict[str, ArrowEncoder] = {}
        self._conn: Any = _open(target)

    def setup_query(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            return self._run(query, params)
        except RuntimeError as exc:
            raise SinkConfigError(
                f"chDB at {self.target.address} failed: {describe_error(exc, ())}; check CDC_SINK_URL"
            ) from None

    def query(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            return self._run(query, params)
        except RuntimeError as exc:
            raise self._sink_error(exc) from None

    def column_blocks(
        self, query: str, params: dict[str, Any] | None = None, *, block_rows: int = 65536
    ) -> Generator[list[Sequence[Any]], None, None]:
        """The result of ``query`` in blocks of columns, as ClickHouseConnection.column_blocks hands them
        (a text value as its UTF-8 bytes).

        chDB answers in this process and the answer comes whole, so this saves
        the caller's copies (the dedup window's rebuild), not chDB's own.
        """
        rows = self.query(query, params)
        for start in range(0, len(rows), max(1, block_rows)):
            block = rows[start:start + block_rows]
            yield [[v.encode() if type(v) is str else v for v in column] for column in zip(*block)]

    def insert(self, query: str, columns: Sequence[list[Any]]) -> None:
        """One ``INSERT INTO t (a, b) VALUES`` of columns, sent as one Arrow record batch (one block)."""
        match = _INSERT_RE.match(query)
        if match is None:
            raise ValueError(f"not an INSERT ... VALUES this connection can send: {query[:80]!r}")
        table, names = match["table"], [name.strip() for name in match["columns"].split(",")]
        encoder = self._encoder(table, names)
        try:
            payload = encoder.encode(columns)
        except (OverflowError, ValueError, TypeError) as exc:
            raise UnstorableValue(
                f"chDB at {self.target.address} cannot store a value of this batch in {table}: "
                f"{' '.join(str(exc).split())[:300]}; widen that column (ALTER TABLE ... MODIFY COLUMN) "
                "or point cdc at another table, then run cdc again: nothing of the batch was acknowledged"
            ) from None
        try:
            with self._lock:
                inserter = self._open_conn().send_insert(f"INSERT INTO {table} ({', '.join(names)}) {_ONE_BLOCK}",
                                                         "ArrowStream")
                try:
                    inserter.append(payload)
                    inserter.finish()
                except BaseException:
                    inserter.cancel()
                    raise
        except RuntimeError as exc:
            self._encoders.pop(table, None)  # the table may have changed under us: read its types again
            raise self._sink_error(exc) from None

    def _encoder(self, table: str, names: list[str]) -> ArrowEncoder:
        key = f"{table} {names}"
        encoder = self._encoders.get(key)
        if encoder is None:
            types = {str(name): str(type_sql) for name, type_sql, *_ in self.query(f"DESCRIBE TABLE {table}")}
            missing = [name for name in names if name not in types]
            if missing:
                raise SinkConfigError(f"chDB table {table} lacks columns {', '.join(missing)}; run `cdc migrate`")
            try:
                encoder = ArrowEncoder(names, [types[name] for name in names])
            except ValueError as exc:
                raise SinkConfigError(f"chDB table {table}: {exc}; point cdc at another table name") from None
            self._encoders[key] = encoder
        return encoder

    def _run(self, query: str, params: dict[str, Any] | None) -> list[tuple[Any, ...]]:
        if params:
            query = query % escape_params(params, None)
        with self._lock:
            result = self._open_conn().query(query, "JSONCompact")
        return decode_rows(result.bytes())

    def _open_conn(self) -> Any:
        if self._conn is None:
            raise RuntimeError(f"the chDB connection to {self.target.address} is closed")
        return self._conn

    def _sink_error(self, exc: BaseException) -> SinkError:
        return SinkError(f"chDB at {self.target.address}: {describe_error(exc, ())}")

    def close(self) -> None:
        """Close the directory (idempotent): another process may open it then."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __repr__(self) -> str:
        return f"ChdbConnection({self.target.url!r})"


def _open(target: ChdbTarget) -> Any:
    try:
        import chdb
    except ImportError:
        raise SinkConfigError(f"the chdb:// sink needs chDB, which is not installed: {_EXTRA}") from None
    try:
        target.path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkConfigError(
            f"cannot create the chDB directory {target.path}: {exc.strerror}; choose a writable one in CDC_SINK_URL"
        ) from None
    holder = _holder(target)
    if holder is not None and holder != str(os.getpid()):
        raise SinkConfigError(
            f"chDB directory {target.path} is in use by process {holder} (a running `cdc run`?): "
            "chDB opens a directory from one process at a time; stop that process first, or use another directory"
        )
    try:
        connect: Any = chdb.connect  # untyped
        return connect(str(target.path))
    except RuntimeError as exc:
        detail = describe_error(exc, ())
        if "already initialized with path" in detail:
            raise SinkConfigError(
                f"this process already has another chDB directory open, and chDB allows one: {detail}"
            ) from None
        raise SinkConfigError(f"chDB could not open {target.path}: {detail}") from None


def _holder(target: ChdbTarget) -> str | None:
    """The process that holds the directory's lock (its PID as chDB wrote it), or None when it is free."""
    status = target.path / "status"
    try:
        with open(status, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = handle.read(200).decode(errors="replace")
                pid = re.search(r"PID:\s*(\d+)", text)
                return pid.group(1) if pid else "another process"
            fcntl.flock(handle, fcntl.LOCK_UN)
    except FileNotFoundError:
        return None
    return None
