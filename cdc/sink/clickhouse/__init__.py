"""The ClickHouse sink."""

from __future__ import annotations

from .sink import ClickHouseSink, LatestCommit

__all__ = ["ClickHouseSink", "LatestCommit"]
