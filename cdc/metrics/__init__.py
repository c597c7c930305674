"""Prometheus metrics of a running pipeline, heartbeats, and reading them back (`cdc top`).

Importing this package stays cheap: prometheus_client is loaded only when an
endpoint is served (``cdc.metrics.exporter``) or scraped (``cdc.metrics.scrape``).
"""

from __future__ import annotations

from .heartbeat import HeartbeatLatency
from .histogram import Histogram
from .pipeline import OUTCOMES, PipelineMetrics, Sources

__all__ = ["OUTCOMES", "HeartbeatLatency", "Histogram", "PipelineMetrics", "Sources"]
