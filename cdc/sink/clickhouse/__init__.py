"""The ClickHouse sink (``clickhouse://`` and ``clickhouses://`` URLs): see sink.py for its tables.

``open_sink`` and ``open_admin`` are what the registry (cdc/sink/__init__.py) calls.
"""

from __future__ import annotations

from typing import Any

from ...settings import Settings
from ..base import LatestCommit
from .admin import ClickHouseAdmin
from .sink import ClickHouseSink

__all__ = ["ClickHouseAdmin", "ClickHouseSink", "LatestCommit", "open_admin", "open_sink"]


def open_sink(url: str, settings: Settings, *, log: Any = None) -> ClickHouseSink:
    return ClickHouseSink(url, settings.sink_table, password=settings.sink_password, log=log,
                          stream=settings.stream, siblings=settings.sibling_streams,
                          cluster=settings.sink_cluster or None)


def open_admin(url: str, settings: Settings, *, timeout: float | None = None, log: Any = None) -> ClickHouseAdmin:
    return ClickHouseAdmin(url, settings.sink_table, password=settings.sink_password, timeout=timeout, log=log)
