"""The process's metrics endpoint: one registry of its own, the pipelines it runs, an HTTP server.

The registry belongs to the run (not prometheus_client's global one): a
second run in the same process, or a test, starts from nothing. Every
pipeline the process runs adds its ``PipelineMetrics``; one collector reads
them all at scrape time, so each metric is one family with a sample per slot.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import Metric

from .pipeline import Families, PipelineMetrics


class MetricsAddressError(ValueError):
    """A --metrics-addr that is not HOST:PORT."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        """HOST:PORT, [IPv6]:PORT, or :PORT (every interface)."""
        host, colon, port_text = text.strip().rpartition(":")
        if not colon or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise MetricsAddressError(f"metrics address {text!r} is not HOST:PORT (for example 127.0.0.1:9108)")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise MetricsAddressError(f"metrics address {text!r}: write an IPv6 address in brackets, [::1]:9108")
        return cls(host or "0.0.0.0", int(port_text))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class _Pipelines:
    """The registry's one cdc collector: every pipeline's samples, family by family."""

    def __init__(self) -> None:
        self.pipelines: list[PipelineMetrics] = []
        self._lock = threading.Lock()

    def add(self, metrics: PipelineMetrics) -> None:
        with self._lock:
            self.pipelines.append(metrics)

    def remove(self, metrics: PipelineMetrics) -> None:
        with self._lock:
            self.pipelines = [m for m in self.pipelines if m is not metrics]

    def collect(self) -> Iterator[Metric]:
        families = Families()
        with self._lock:
            pipelines = list(self.pipelines)
        for metrics in pipelines:
            metrics.collect(families)
        return iter(families)


class MetricsServer:
    """Serves the process's metrics over HTTP until closed. Use as a context manager."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.registry: Final = CollectorRegistry(auto_describe=False)
        self._pipelines = _Pipelines()
        self.registry.register(self._pipelines)
        # Memory, CPU and open files of this process, read from /proc at scrape time.
        ProcessCollector(registry=self.registry)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, metrics: PipelineMetrics) -> None:
        self._pipelines.add(metrics)

    def remove(self, metrics: PipelineMetrics) -> None:
        self._pipelines.remove(metrics)

    @property
    def port(self) -> int:
        """The port served (the one the system picked when asked for port 0)."""
        return self.address.port if self._server is None else int(self._server.server_port)

    def start(self) -> None:
        """Listen; OSError (address in use, not ours) says why not."""
        self._server, self._thread = start_http_server(self.address.port, addr=self.address.host,
                                                       registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
