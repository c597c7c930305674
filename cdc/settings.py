"""The one frozen settings object every command reads, built from flags and CDC_* variables."""

from __future__ import annotations

from dataclasses import dataclass

from . import names
from .redact import redact_dsn, redact_url


@dataclass(frozen=True, slots=True)
class Settings:
    pg_dsn: str
    clickhouse_url: str
    slot: str = "cdc_outbox"
    publication: str = "cdc_outbox"
    outbox_schema: str = "public"
    outbox_table: str = "outbox"
    clickhouse_table: str = "events"
    batch_rows: int = 50_000
    batch_bytes: int = 32 * 1024 * 1024
    flush_interval: float = 1.0
    dedup_window: int = 1_000_000
    dedup_max_age: float = 3600.0
    max_payload_bytes: int = 1024 * 1024
    streaming: bool = False
    spill_bytes: int = 64 * 1024 * 1024
    status_interval: float = 10.0
    retry_initial: float = 0.5
    retry_max: float = 30.0
    heartbeat_interval: float = 10.0  # seconds between heartbeat messages; 0: none
    clickhouse_password: str | None = None

    def __post_init__(self) -> None:
        names.slot_name(self.slot)
        names.identifier(self.publication, "publication")
        names.identifier(self.outbox_schema, "schema")
        names.identifier(self.outbox_table, "table")
        names.identifier(self.clickhouse_table, "ClickHouse table")
        for field, value in (("batch_rows", self.batch_rows), ("batch_bytes", self.batch_bytes)):
            if value < 1:
                raise ValueError(f"{field} must be at least 1, got {value}")
        if self.flush_interval <= 0:
            raise ValueError(f"flush interval must be positive, got {self.flush_interval}")
        if self.heartbeat_interval < 0:
            raise ValueError(f"heartbeat interval must be 0 (off) or positive, got {self.heartbeat_interval}")

    def __repr__(self) -> str:
        # A repr may end up in a traceback or a log: never show a password.
        return (
            f"Settings(pg_dsn={redact_dsn(self.pg_dsn)!r}, clickhouse_url={redact_url(self.clickhouse_url)!r}, "
            f"slot={self.slot!r}, publication={self.publication!r}, "
            f"outbox={self.outbox_schema}.{self.outbox_table}, clickhouse_table={self.clickhouse_table!r})"
        )

    __str__ = __repr__
