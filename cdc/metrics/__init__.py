"""Prometheus metrics of a running pipeline, heartbeats, and reading them back (`cdc top`)."""

from __future__ import annotations

from .exporter import Address, MetricsAddressError, MetricsServer
from .heartbeat import HeartbeatLatency
from .histogram import Histogram
from .pipeline import OUTCOMES, PipelineMetrics, Sources

__all__ = [
    "OUTCOMES",
    "Address",
    "HeartbeatLatency",
    "Histogram",
    "MetricsAddressError",
    "MetricsServer",
    "PipelineMetrics",
    "Sources",
]
