"""The one frozen settings object every command reads, built from flags and CDC_* variables.

Each field that is also a command-line option carries its definition here
(``option``): help, bounds, flag names, environment variables. cdc/cli/options.py
makes the click options from it, so an option is written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import names
from .core._dedup_table import MAX_CAPACITY as DEDUP_MAX_CAPACITY
from .redact import redact_dsn, redact_url

_MiB = 1024 * 1024


def option(
    default: Any, help: str, *, minimum: float | None = None, maximum: int | None = None,
    flags: tuple[str, ...] = (), envvars: tuple[str, ...] = (), show_default: bool = True, multiple: bool = False,
) -> Any:
    """A field that is a command-line option. ``flags`` and ``envvars`` default to --field-name and
    CDC_FIELD_NAME; ``minimum`` and ``maximum`` bound a number (inclusive). ``multiple``: the flag
    repeats, and the variable holds one value per line (a key=value DSN has spaces in it)."""
    return field(default=default, metadata={
        "help": help, "minimum": minimum, "maximum": maximum, "flags": flags, "envvars": envvars,
        "show_default": show_default, "multiple": multiple,
    })


@dataclass(frozen=True, slots=True)
class Settings:
    pg_dsn: str = option("", "PostgreSQL connection string (libpq URI or key=value). "
                             "Put the password in PGPASSWORD or ~/.pgpass rather than here.", show_default=False)
    sink_url: str = option("", "clickhouse://user@host:9000/database (?secure=1 for TLS), or chdb:///path/to/dir.",
                           show_default=False,
                           flags=("--sink-url", "--clickhouse-url"), envvars=("CDC_SINK_URL", "CDC_CLICKHOUSE_URL"))
    slot: str = option("cdc_outbox", "Replication slot.")
    publication: str = option("cdc_outbox", "Publication of the outbox table.")
    outbox_schema: str = option("public", "Schema of the outbox table.")
    outbox_table: str = option("outbox", "Outbox table.")
    sink_table: str = option("events", "Events table in the URL's database.",
                             flags=("--sink-table", "--clickhouse-table"),
                             envvars=("CDC_SINK_TABLE", "CDC_CLICKHOUSE_TABLE"))
    # Up to three batches are in memory at once (one written, one queued, one filling): at 50,000 rows a 5M
    # drain peaked at 172-180 MB, at 25,000 at 135-136 MB, for about 10 % of the drain's rate (bench/RESULTS.md).
    batch_rows: int = option(25_000, "Flush when the buffer holds this many rows.", minimum=1)
    batch_bytes: int = option(32 * _MiB, "... or this many bytes.", minimum=1)
    flush_interval: float = option(1.0, "... or its oldest row is this many seconds old.", minimum=0.001)
    dedup_window: int = option(1_000_000, "How many recent unique_ids to remember exactly "
                                          "(0 turns deduplication off).", minimum=0,
                                maximum=DEDUP_MAX_CAPACITY)
    dedup_max_age: float = option(3600.0, "Forget unique_ids older than this (seconds).", minimum=0)
    max_payload_bytes: int = option(_MiB, "Larger payloads go to the dead-letter table.", minimum=1)
    streaming: bool = option(False, "Receive large transactions while still in progress (PostgreSQL 14+).",
                             flags=("--streaming/--no-streaming",))
    binary: str = option("auto", "pgoutput's binary format: on, off, or auto (on where the server, 14+, and the "
                                 "outbox's column types allow; it costs both sides less CPU).")
    spill_bytes: int = option(64 * _MiB, "Memory for in-progress streamed transactions before they spill to a "
                                         "temporary file.", minimum=0)
    status_interval: float = option(10.0, "Seconds between status updates to the server.", minimum=0.1)
    read_settle: float = option(0.02, "Once caught up, wait this many seconds after data arrives before reading "
                                      "it, so that small transactions come several to a wake-up (0: one each; "
                                      "at most a tenth of the flush interval).",
                                minimum=0)
    retry_initial: float = option(0.5, "First wait between retries (seconds).", minimum=0.01)
    retry_max: float = option(30.0, "Longest wait between retries (seconds).", minimum=0.01)
    heartbeat_interval: float = option(10.0, "Seconds between heartbeat messages through the slot, which measure "
                                             "end-to-end latency when idle (0: off; PostgreSQL 14+).", minimum=0)
    sink_cluster: str = option("", "ClickHouse cluster (<remote_servers>) the sink's tables are replicated on: "
                                   "`cdc migrate` creates them ON CLUSTER as Replicated*MergeTree (docs/ha.md).",
                               show_default=False, flags=("--sink-cluster", "--clickhouse-cluster"),
                               envvars=("CDC_SINK_CLUSTER", "CDC_CLICKHOUSE_CLUSTER"))
    failover: bool | None = option(None, "Make the slot a failover slot, kept on standbys with "
                                         "sync_replication_slots [default: on for PostgreSQL 17+].",
                                   show_default=False, flags=("--failover/--no-failover",))
    standby_dsns: tuple[str, ...] = option((), "A physical standby of the primary (repeatable; in CDC_STANDBY_DSN "
                                               "one per line): check it keeps our slot across a promotion.",
                                           show_default=False, flags=("--standby-dsn",),
                                           envvars=("CDC_STANDBY_DSN",), multiple=True)
    # Not an option of its own: --clickhouse-password-file or CDC_CLICKHOUSE_PASSWORD.
    sink_password: str | None = None
    # Not options: set per shard by a sharded worker (cdc/workers/). The key of this
    # slot's rows in the sink's progress ledger (0: the one slot of an unsharded
    # outbox), and the other streams of its generation, whose ids never reach it.
    stream: int = 0
    sibling_streams: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        names.slot_name(self.slot)
        names.identifier(self.publication, "publication")
        names.identifier(self.outbox_schema, "schema")
        names.identifier(self.outbox_table, "table")
        names.identifier(self.sink_table, "ClickHouse table")
        if self.sink_cluster:
            names.identifier(self.sink_cluster, "ClickHouse cluster")
        for name, value in (("batch_rows", self.batch_rows), ("batch_bytes", self.batch_bytes)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.binary not in ("auto", "on", "off"):
            raise ValueError(f"--binary must be auto, on or off, got {self.binary!r}")
        if self.flush_interval <= 0:
            raise ValueError(f"flush interval must be positive, got {self.flush_interval}")

    def __repr__(self) -> str:
        # A repr may end up in a traceback or a log: never show a password.
        return (
            f"Settings(pg_dsn={redact_dsn(self.pg_dsn)!r}, sink_url={redact_url(self.sink_url)!r}, "
            f"slot={self.slot!r}, publication={self.publication!r}, "
            f"outbox={self.outbox_schema}.{self.outbox_table}, sink_table={self.sink_table!r})"
        )

    __str__ = __repr__
