"""Destinations for batches of events. ``Sink`` is the protocol; ClickHouse is the one we ship."""

from __future__ import annotations

from .base import EVENT_COLUMNS, Batch, DeadLetter, Sink, SinkConfigError, SinkError

__all__ = ["EVENT_COLUMNS", "Batch", "DeadLetter", "Sink", "SinkConfigError", "SinkError"]
