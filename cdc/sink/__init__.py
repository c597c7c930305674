"""Destinations for batches of events, chosen by the sink URL's scheme.

``open_sink`` gives the ``Sink`` the pipeline writes to, ``open_sink_admin``
the read-only ``SinkAdmin`` the DBA commands ask (both protocols: cdc/sink/base.py).
A sink is a module with ``open_sink(url, settings, *, log)`` and
``open_admin(url, settings, *, timeout, log)``, registered below by scheme; it
is imported only when a URL asks for it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any, Final, Protocol

from ..redact import redact_url
from ..settings import Settings
from .base import Sink, SinkAdmin, SinkConfigError

# scheme -> module. Add a sink here.
SCHEMES: Final[Mapping[str, str]] = {
    "clickhouse": "cdc.sink.clickhouse",
    "clickhouses": "cdc.sink.clickhouse",
    "chdb": "cdc.sink.chdb",
}
_SCHEME: Final = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*):")


class SinkModule(Protocol):
    def open_sink(self, url: str, settings: Settings, *, log: Any = None) -> Sink: ...

    def open_admin(self, url: str, settings: Settings, *, timeout: float | None = None, log: Any = None) -> SinkAdmin:
        ...


def open_sink(url: str, settings: Settings, *, log: Any = None) -> Sink:
    """The sink for ``url`` (connected; call ``ensure_schema()`` before writing), or SinkConfigError."""
    return _module(url).open_sink(url, settings, log=log)


def open_sink_admin(url: str, settings: Settings, *, timeout: float | None = None, log: Any = None) -> SinkAdmin:
    """The read-only view of the sink at ``url`` for the DBA commands, or SinkConfigError."""
    if not url:
        raise SinkConfigError("no ClickHouse URL: pass --clickhouse-url or set CDC_CLICKHOUSE_URL")
    return _module(url).open_admin(url, settings, timeout=timeout, log=log)


def opened_by_one_process(url: str) -> bool:
    """Whether the sink at ``url`` can be open in one process only (chDB locks its directory), by the scheme
    that ``open_sink`` goes by."""
    return _module_name(url) == SCHEMES["chdb"]


def _module_name(url: str) -> str | None:
    match = _SCHEME.match(url)
    return SCHEMES.get(match.group(1).lower()) if match else None


def _module(url: str) -> SinkModule:
    name = _module_name(url)
    if name is None:
        schemes = " or ".join(f"{scheme}://" for scheme in SCHEMES)
        raise SinkConfigError(f"CDC_CLICKHOUSE_URL {redact_url(url)} must start with {schemes}")
    module: SinkModule = importlib.import_module(name)
    return module


__all__ = ["SCHEMES", "Sink", "SinkAdmin", "SinkConfigError", "open_sink", "open_sink_admin", "opened_by_one_process"]
