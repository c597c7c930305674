"""One clickhouse-driver connection, with its errors turned into ours and its password kept out of them.

Every failure leaves the connection closed, so the next call reconnects
instead of reusing a socket in the middle of a half-sent INSERT.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import socket
import threading
from collections.abc import Generator, Iterator, Sequence
from typing import Any, Final, Protocol

import structlog

# Without this, importing clickhouse-driver builds a lookup table for every Date
# from 1900 to 2299: ~35 MB of RSS and ~90 ms of start-up, for a column type we
# never write. Lazy (the driver's documented switch) fills it only if used.
os.environ.setdefault("CLICKHOUSE_DRIVER_LASY_DATE_LUT", "1")

from clickhouse_driver import errors as driver_errors

from ..base import SinkConfigError, SinkError
from .client import Client
from .url import PASSWORD_ENV, ClickHouseTarget, scrub

DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_SEND_RECEIVE_TIMEOUT: Final = 300.0
# clickhouse-driver splits an INSERT into blocks of this many rows. One block per
# batch keeps a batch's progress rows in a single part, which the server commits
# whole after the events of that block: so the high-water mark never covers a
# half-written batch.
_ONE_BLOCK: Final = 1 << 40

# The server refuses the login: a wrong URL or password, not a passing fault.
_AUTH_CODES: Final = frozenset({192, 193, 194, 195, 516})
UNKNOWN_DATABASE: Final = 81
# Failures of the connection itself, as clickhouse-driver and the OS raise them.
_TRANSPORT_ERRORS: Final = (driver_errors.Error, OSError, EOFError, socket.timeout)
_STACK_TRACE_RE: Final = re.compile(r"[.,]?\s*Stack trace.*", re.DOTALL)
_MAX_MESSAGE: Final = 500

_COMPRESSION_MODULES: Final = {
    "lz4": ("lz4", "clickhouse_cityhash"),
    "lz4hc": ("lz4", "clickhouse_cityhash"),
    "zstd": ("zstd", "clickhouse_cityhash"),
}


class DatabaseMissing(SinkConfigError):
    """The URL's database does not exist yet (the login itself fails on that)."""


class UnstorableValue(SinkConfigError, ValueError):
    """A value its ClickHouse column cannot hold: sending the same batch again cannot help.

    A SinkConfigError (the run ends with one line saying what to do) and still a
    ValueError for callers that catch that.
    """


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost`` or a loopback address (no name lookup)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def compression_available(method: str) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in _COMPRESSION_MODULES[method])


def describe_error(exc: BaseException, secrets: tuple[str, ...]) -> str:
    """One line about a driver error: its text without the server's stack trace or any secret."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = _STACK_TRACE_RE.sub("", str(text))
    text = " ".join(text.split())
    code = getattr(exc, "code", None)
    if code is not None and not text.startswith("Code:"):
        text = f"Code: {code}. {text}"
    return scrub(text, *secrets)[:_MAX_MESSAGE]


class Connection(Protocol):
    """How the sink reaches ClickHouse (ClickHouseConnection below; cdc/sink/chdb's in-process one)."""

    @property
    def compression(self) -> str: ...

    def setup_query(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """A start-up or schema statement: a failure is a SinkConfigError."""
        ...

    def query(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """A statement; a failure is a SinkError (the caller may retry)."""
        ...

    def insert(self, query: str, columns: Sequence[list[Any]]) -> None:
        """One columnar ``INSERT INTO t (columns) VALUES`` written as one block; SinkError or UnstorableValue."""
        ...

    def column_blocks(
        self, query: str, params: dict[str, Any] | None = None, *, block_rows: int = 65536
    ) -> Generator[list[Sequence[Any]], None, None]:
        """A SELECT's result in blocks of at most ``block_rows`` rows, in order, each as its columns (a String
        column's values as bytes), streamed; a failure is a SinkError."""
        ...

    def close(self) -> None: ...


class ClickHouseConnection:
    """A lock-guarded clickhouse-driver Client for one target; safe to share between threads."""

    def __init__(
        self,
        target: ClickHouseTarget,
        *,
        database: str | None = None,
        connect_timeout: float | None = None,
        send_receive_timeout: float | None = None,
        log: Any = None,
    ) -> None:
        self.target = target
        self.log = log if log is not None else structlog.get_logger("cdc.sink.clickhouse")
        self.compression = self._choose_compression(target.compression)
        options = dict(target.options)
        # An explicit argument beats the URL, which beats our default.
        if connect_timeout is not None or "connect_timeout" not in options:
            options["connect_timeout"] = connect_timeout or DEFAULT_CONNECT_TIMEOUT
        if send_receive_timeout is not None or "send_receive_timeout" not in options:
            options["send_receive_timeout"] = send_receive_timeout or DEFAULT_SEND_RECEIVE_TIMEOUT
        self._client = Client(
            host=target.host,
            port=target.port,
            database=target.database if database is None else database,
            user=target.user,
            password=target.password,
            secure=target.secure,
            compression=False if self.compression == "none" else self.compression,
            settings={"insert_block_size": _ONE_BLOCK},
            # The other replicas: tried in order when the first does not answer.
            alt_hosts=target.alt_hosts_option,
            **options,
        )
        self._lock = threading.Lock()

    def _choose_compression(self, wanted: str) -> str:
        if wanted == "none":
            return "none"
        if wanted == "auto" and is_loopback(self.target.host):
            # Nothing crosses a network to this machine's own server: compressing
            # would only spend CPU that the server shares with us.
            return "none"
        method = "lz4" if wanted == "auto" else wanted
        if compression_available(method):
            return method
        if wanted != "auto":
            extra = "zstd" if method == "zstd" else "lz4"
            raise SinkConfigError(
                f"compression={wanted} needs clickhouse-driver's extras: pip install 'clickhouse-driver[{extra}]'"
            )
        self.log.warning("clickhouse.uncompressed", hint="pip install 'clickhouse-driver[lz4]' to compress with lz4")
        return "none"

    def setup_query(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a start-up or schema statement: a failure is a configuration problem (SinkConfigError)."""
        try:
            return self._run(query, params, None)
        except _TRANSPORT_ERRORS as exc:
            raise self.config_error(exc) from None

    def config_error(self, exc: BaseException) -> SinkConfigError:
        detail = describe_error(exc, self.target.secrets)
        code = getattr(exc, "code", None)
        where = f"ClickHouse at {self.target.address}"
        if isinstance(exc, driver_errors.ServerException) and code == UNKNOWN_DATABASE:
            return DatabaseMissing(f"{where}: {detail}; run `cdc migrate` to create it")
        if isinstance(exc, driver_errors.ServerException) and code in _AUTH_CODES:
            return SinkConfigError(
                f"{where} refused user {self.target.user!r}: {detail}; "
                f"check CDC_CLICKHOUSE_URL and {PASSWORD_ENV}"
            )
        if isinstance(exc, driver_errors.ServerException):
            return SinkConfigError(f"{where} failed: {detail}; check CDC_CLICKHOUSE_URL")
        return SinkConfigError(f"{where} is unreachable: {detail}; check CDC_CLICKHOUSE_URL")

    def query(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a statement; a failure is a SinkError (the caller may retry)."""
        try:
            return self._run(query, params, None)
        except _TRANSPORT_ERRORS as exc:
            raise self.sink_error(exc) from None

    def column_blocks(
        self, query: str, params: dict[str, Any] | None = None, *, block_rows: int = 65536
    ) -> Generator[list[Sequence[Any]], None, None]:
        """A SELECT's result a block at a time, each block as its columns, streamed: memory holds one block.

        String values come as the server's bytes: decoding them would cost the
        caller that wants bytes (the dedup window) a second pass. The connection
        is held (locked) until the iterator is exhausted or closed; one left
        unfinished is disconnected, since the rest of its result would still be on
        the socket. A failure is a SinkError.
        """
        with self._lock:
            done = False
            try:
                settings = {"max_block_size": block_rows, "strings_as_bytes": True}
                yield from self._client.column_blocks(query, params, settings)
                done = True
            except _TRANSPORT_ERRORS as exc:
                raise self.sink_error(exc) from None
            finally:
                if not done:
                    self._disconnect()

    def insert(self, query: str, columns: Sequence[list[Any]]) -> None:
        """One columnar INSERT ... VALUES; a failure is a SinkError (the caller may retry).

        A value the column cannot hold (a negative UInt32, an int past Int64)
        raises UnstorableValue instead: sending the same batch again cannot help.
        """
        try:
            self._run(query, None, columns)
        except driver_errors.TypeMismatchError as exc:
            raise UnstorableValue(
                f"ClickHouse at {self.target.address} cannot store a value of this batch: "
                f"{describe_error(exc, self.target.secrets)}; widen that column (ALTER TABLE ... MODIFY COLUMN) "
                "or point cdc at another table, then run cdc again: nothing of the batch was acknowledged"
            ) from None
        except _TRANSPORT_ERRORS as exc:
            raise self.sink_error(exc) from None

    def stream(self, query: str, params: dict[str, Any] | None = None) -> Iterator[tuple[Any, ...]]:
        """Rows of a large result as they arrive (a failure is a SinkError); holds the connection until exhausted."""
        with self._lock:
            try:
                yield from self._client.execute_iter(query, params)
            except _TRANSPORT_ERRORS as exc:
                self._disconnect()
                raise self.sink_error(exc) from None
            except BaseException:
                # Abandoned in the middle of a result: the socket is unusable.
                self._disconnect()
                raise

    def last_read(self) -> tuple[int, int]:
        """(rows, bytes) the server read for the last query, as its progress packets said."""
        info = self._client.last_query
        progress = getattr(info, "progress", None)
        return (int(getattr(progress, "rows", 0) or 0), int(getattr(progress, "bytes", 0) or 0))

    def sink_error(self, exc: BaseException) -> SinkError:
        return SinkError(f"ClickHouse at {self.target.address}: {describe_error(exc, self.target.secrets)}")

    def _run(
        self, query: str, params: dict[str, Any] | None, columns: Sequence[list[Any]] | None
    ) -> list[tuple[Any, ...]]:
        # "from None" at the callers: the driver's exception, kept as __cause__,
        # would carry its unscrubbed text into every logged traceback.
        with self._lock:
            try:
                if columns is None:
                    rows: list[tuple[Any, ...]] = self._client.execute(query, params)
                    return rows
                self._client.execute(query, list(columns), columnar=True, types_check=False)
                return []
            except BaseException:
                self._disconnect()
                raise

    def _disconnect(self) -> None:
        try:
            self._client.disconnect()
        except Exception:  # noqa: BLE001 - the socket is being dropped anyway
            pass

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    def __repr__(self) -> str:
        return f"ClickHouseConnection({self.target.redacted_url!r})"
