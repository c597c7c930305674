"""cdc: stream outbox events from PostgreSQL into ClickHouse through a pgoutput slot."""

from __future__ import annotations

__version__ = "0.1.0"
