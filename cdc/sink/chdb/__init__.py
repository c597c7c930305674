"""The chDB sink (``chdb:///path/to/dir`` URLs): ClickHouse inside the cdc process, for one machine and development.

``pip install 'cdc[embedded]'`` brings chDB. See sink.py; ``open_sink`` and
``open_admin`` are what the registry (cdc/sink/__init__.py) calls.
"""

from __future__ import annotations

from typing import Any

from ...settings import Settings
from .sink import ChdbAdmin, ChdbSink

__all__ = ["ChdbAdmin", "ChdbSink", "open_admin", "open_sink"]


def open_sink(url: str, settings: Settings, *, log: Any = None) -> ChdbSink:
    return ChdbSink(url, settings.sink_table, log=log, stream=settings.stream, siblings=settings.sibling_streams)


def open_admin(url: str, settings: Settings, *, timeout: float | None = None, log: Any = None) -> ChdbAdmin:
    # Nothing to wait for: the directory is opened, or refused, at once.
    return ChdbAdmin(url, settings.sink_table, log=log)
