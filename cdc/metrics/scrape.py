"""Reading cdc's metrics endpoints back (for `cdc top`): fetch, parse, and turn two scrapes into rates.

Pure functions apart from ``fetch``. Quantiles are estimated from histogram
buckets the way PromQL's histogram_quantile does (linear within a bucket).
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from ..errors import UserError
from .pipeline import OUTCOMES

# An endpoint written for the server (every interface) is read on loopback.
_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "[::1]"}


class ScrapeError(UserError):
    """An endpoint could not be read or is not cdc's."""


def endpoint_url(address: str) -> str:
    """http://HOST:PORT/metrics for HOST:PORT (or :PORT, 0.0.0.0:PORT: this host); a URL stays as given."""
    if address.startswith(("http://", "https://")):
        return address
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit():
        raise ScrapeError(f"metrics address {address!r} is not HOST:PORT (the --metrics-addr of `cdc run`)")
    return f"http://{_LOOPBACK.get(host, host)}:{port}/metrics"


@dataclass(slots=True)
class Buckets:
    """A histogram's cumulative buckets (upper bound, count), +Inf last, and its sum."""

    bounds: list[tuple[float, float]] = field(default_factory=list)
    total: float = 0.0

    @property
    def count(self) -> float:
        return self.bounds[-1][1] if self.bounds else 0.0

    def minus(self, earlier: Buckets | None) -> Buckets:
        if earlier is None or [b for b, _ in earlier.bounds] != [b for b, _ in self.bounds]:
            return self
        return Buckets([(b, c - e) for (b, c), (_, e) in zip(self.bounds, earlier.bounds)], self.total - earlier.total)

    def quantile(self, q: float) -> float | None:
        """histogram_quantile(q): None without observations; the highest finite bound if it lies beyond."""
        if self.count <= 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound, cumulative in self.bounds:
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower
                if cumulative == below:
                    return bound
                return lower + (bound - lower) * (rank - below) / (cumulative - below)
            lower, below = bound, cumulative
        return lower


@dataclass(slots=True)
class SlotSample:
    """What one endpoint says about one pipeline (slot) at one moment."""

    endpoint: str
    slot: str
    at: float  # Unix time of the scrape
    events: dict[str, float] = field(default_factory=dict)
    batches: float = 0.0
    errors: float = 0.0
    lag_bytes: float | None = None
    buffer_rows: float | None = None
    heartbeat_interval: float = 0.0
    last_heartbeat: float | None = None
    last_flush: float | None = None
    last_ack: float | None = None
    batch_rows: Buckets = field(default_factory=Buckets)
    commit_to_stored: Buckets = field(default_factory=Buckets)
    heartbeat_latency: Buckets = field(default_factory=Buckets)


_GAUGES = {
    "cdc_slot_lag_bytes": "lag_bytes", "cdc_buffer_rows": "buffer_rows",
    "cdc_heartbeat_interval_seconds": "heartbeat_interval", "cdc_last_heartbeat_timestamp_seconds": "last_heartbeat",
    "cdc_last_flush_timestamp_seconds": "last_flush", "cdc_last_ack_timestamp_seconds": "last_ack",
    "cdc_batches_total": "batches", "cdc_clickhouse_errors_total": "errors",
}
_HISTOGRAMS = {
    "cdc_batch_rows": "batch_rows", "cdc_commit_to_stored_seconds": "commit_to_stored",
    "cdc_heartbeat_latency_seconds": "heartbeat_latency",
}


def parse(text: str, endpoint: str, at: float) -> list[SlotSample]:
    """The pipelines an endpoint's text exposition describes, one per slot, in the order they appear."""
    slots: dict[str, SlotSample] = {}

    def of(labels: dict[str, str]) -> SlotSample | None:
        slot = labels.get("slot")
        if slot is None:
            return None
        if slot not in slots:
            slots[slot] = SlotSample(endpoint, slot, at)
        return slots[slot]

    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise ScrapeError(f"{endpoint} does not serve Prometheus metrics: {exc}") from None
    for family in families:
        for sample in family.samples:
            target = of(sample.labels)
            if target is None:
                continue
            if sample.name == "cdc_events_total":
                target.events[sample.labels.get("outcome", "")] = sample.value
            elif sample.name in _GAUGES:
                setattr(target, _GAUGES[sample.name], sample.value)
            elif family.name in _HISTOGRAMS:
                buckets: Buckets = getattr(target, _HISTOGRAMS[family.name])
                if sample.name.endswith("_bucket"):
                    buckets.bounds.append((float(sample.labels["le"]), sample.value))
                elif sample.name.endswith("_sum"):
                    buckets.total = sample.value
    if not any(family.name == "cdc_info" for family in families):
        raise ScrapeError(f"{endpoint} serves metrics, but not cdc's (no cdc_info)")
    for pipeline in slots.values():
        for name in _HISTOGRAMS.values():
            getattr(pipeline, name).bounds.sort()
    return list(slots.values())


def fetch(address: str, *, timeout: float = 5.0) -> list[SlotSample]:
    url = endpoint_url(address)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ScrapeError(f"cannot read metrics from {url}: {reason}; is `cdc run --metrics-addr` serving there?") from None
    return parse(text, address, time.time())


@dataclass(frozen=True, slots=True)
class Row:
    """One line of `cdc top`: a pipeline between two scrapes."""

    endpoint: str
    slot: str
    rates: dict[str, float | None]        # outcome -> rows/s over the interval
    dead_letters: float                   # stored so far
    lag_bytes: float | None
    lag_seconds: float | None             # age of the newest stored heartbeat
    last_flush_ago: float | None
    rows_per_flush: float | None          # mean over the interval (since the start if none in it)
    latency_p50: float | None             # commit to stored, over the interval (since the start if none in it)
    latency_p99: float | None
    heartbeat_p99: float | None
    buffer_rows: float | None
    errors: float


def row(now: SlotSample, before: SlotSample | None) -> Row:
    seconds = None if before is None else now.at - before.at
    rates: dict[str, float | None] = {}
    for outcome in OUTCOMES:
        if before is None or not seconds or seconds <= 0:
            rates[outcome] = None
        else:
            rates[outcome] = max(0.0, now.events.get(outcome, 0.0) - before.events.get(outcome, 0.0)) / seconds
    latency = _recent(now.commit_to_stored, None if before is None else before.commit_to_stored)
    flushed = _recent(now.batch_rows, None if before is None else before.batch_rows)
    heartbeats = _recent(now.heartbeat_latency, None if before is None else before.heartbeat_latency)
    return Row(
        endpoint=now.endpoint, slot=now.slot, rates=rates, dead_letters=now.events.get("dead_letter", 0.0),
        lag_bytes=now.lag_bytes,
        lag_seconds=None if not now.heartbeat_interval or now.last_heartbeat is None else max(0.0, now.at - now.last_heartbeat),
        last_flush_ago=None if now.last_flush is None else max(0.0, now.at - now.last_flush),
        rows_per_flush=flushed.total / flushed.count if flushed.count else None,
        latency_p50=latency.quantile(0.5), latency_p99=latency.quantile(0.99), heartbeat_p99=heartbeats.quantile(0.99),
        buffer_rows=now.buffer_rows, errors=now.errors,
    )


def _recent(now: Buckets, before: Buckets | None) -> Buckets:
    delta = now.minus(before)
    return delta if delta.count > 0 else now


def rows(now: Iterable[SlotSample], before: Sequence[SlotSample]) -> list[Row]:
    earlier = {(s.endpoint, s.slot): s for s in before}
    return [row(s, earlier.get((s.endpoint, s.slot))) for s in now]
