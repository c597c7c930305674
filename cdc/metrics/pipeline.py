"""One pipeline's metrics: what it counts anyway, read at scrape time, plus what is observed once per batch.

Nothing here runs per row. The counts the pipeline keeps for itself (rows
stored, duplicates, dead letters...) are read through ``Sources`` when
Prometheus scrapes; the flusher reports each stored batch once; the reader
reports an acknowledgement when the position it sends moves; the monitor
thread reports the slot's lag. Every sample carries the pipeline's ``slot``
label, so that one process running several pipelines (one per slot) exports
them side by side from one registry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .. import __version__
from .heartbeat import HeartbeatLatency
from .histogram import FLUSH_BOUNDS, LATENCY_BOUNDS, ROW_BOUNDS, Histogram

if TYPE_CHECKING:  # loaded at the first scrape: a run without an endpoint never imports prometheus_client
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# Outcomes of a row read from the slot, the values of cdc_events_total's outcome label.
OUTCOMES: Final = ("stored", "duplicate", "dead_letter", "already_stored")


@dataclass(frozen=True, slots=True)
class Sources:
    """Readers of counts the running pipeline keeps anyway; called on the HTTP server's thread."""

    events: Callable[[], Mapping[str, int]]  # outcome (one of OUTCOMES) -> rows so far
    buffer_rows: Callable[[], int]           # rows read and not yet stored
    dedup_ids: Callable[[], int]             # unique_ids the dedup window remembers


class PipelineMetrics:
    def __init__(self, *, slot: str, publication: str, sink: str, version: str = __version__) -> None:
        self.slot: Final = slot
        self.info: Final = {"version": version, "slot": slot, "publication": publication, "sink": sink}
        self.sources: Sources | None = None
        self.flush_seconds: Final = Histogram(FLUSH_BOUNDS)
        self.batch_rows: Final = Histogram(ROW_BOUNDS)
        self.commit_to_stored: Final = Histogram(LATENCY_BOUNDS)
        self.heartbeat: Final = HeartbeatLatency(slot)
        self.batches = 0
        self.insert_errors = 0
        self.last_flush: float | None = None
        self.slot_lag_bytes: int | None = None
        self.slot_safe_wal_bytes: int | None = None
        self.confirmed_lsn: int | None = None
        self.started = time.time()
        self.last_ack: float | None = None
        self._lock = threading.Lock()

    def attach(self, sources: Sources) -> None:
        self.sources = sources

    # -- reports from the pipeline's threads ---------------------------------------------------

    def batch_stored(self, rows: int, committed_at_us: Sequence[int], seconds: float, now: float | None = None) -> None:
        """A batch is stored (flusher thread): ``committed_at_us`` is its column of row commit times."""
        stored_at = time.time() if now is None else now
        self.commit_to_stored.observe_ages(committed_at_us, round(stored_at * 1_000_000))
        self.flush_seconds.observe(seconds)
        self.batch_rows.observe(rows)
        with self._lock:
            self.batches += 1
            self.last_flush = stored_at

    def insert_failed(self) -> None:
        with self._lock:
            self.insert_errors += 1

    def acknowledged(self, lsn: int, now: float | None = None) -> None:
        """The position sent to the server is ``lsn`` (a reconnect sends the same one again: not a move)."""
        if lsn != self.confirmed_lsn:
            self.confirmed_lsn = lsn
            self.last_ack = time.time() if now is None else now

    def slot_lag(self, nbytes: int | None, safe_wal_bytes: int | None = None) -> None:
        self.slot_lag_bytes = nbytes
        self.slot_safe_wal_bytes = safe_wal_bytes

    # -- scrape --------------------------------------------------------------------------------

    def collect(self, families: Families) -> None:
        slot = self.slot
        families.gauge("cdc_info", "The pipeline: version, slot, publication and sink (always 1).",
                       tuple(self.info)).add_metric(tuple(self.info.values()), 1)
        sources = self.sources
        if sources is not None:
            events = sources.events()
            counter = families.counter("cdc_events", "Rows read from the slot, by what became of them.",
                                       ("slot", "outcome"))
            for outcome in OUTCOMES:
                counter.add_metric((slot, outcome), events.get(outcome, 0))
            families.gauge("cdc_buffer_rows", "Rows read from the slot and not yet stored.").add_metric(
                (slot,), sources.buffer_rows())
            families.gauge("cdc_dedup_window_ids", "unique_ids the dedup window remembers.").add_metric(
                (slot,), sources.dedup_ids())
        families.counter("cdc_batches", "Batches stored.").add_metric((slot,), self.batches)
        families.counter("cdc_clickhouse_errors", "Failed inserts (each one retried).").add_metric(
            (slot,), self.insert_errors)
        families.histogram("cdc_flush_seconds", "Seconds to store a batch, retries included.", self.flush_seconds, slot)
        families.histogram("cdc_batch_rows", "Events per stored batch.", self.batch_rows, slot)
        families.histogram("cdc_commit_to_stored_seconds",
                           "From a row's commit in PostgreSQL to the moment its batch is stored.",
                           self.commit_to_stored, slot)
        families.histogram("cdc_heartbeat_latency_seconds",
                           "From a heartbeat's emission to the moment the batch holding its point is stored.",
                           self.heartbeat.histogram, slot)
        families.gauge("cdc_heartbeat_interval_seconds", "Seconds between heartbeats (0: off).").add_metric(
            (slot,), self.heartbeat.interval)
        if self.heartbeat.last_stored is not None:
            families.gauge("cdc_last_heartbeat_timestamp_seconds",
                           "Emit time of the newest heartbeat whose point is stored (before the first: when "
                           "heartbeats started).").add_metric((slot,), self.heartbeat.last_stored)
        if self.slot_lag_bytes is not None:
            families.gauge("cdc_slot_lag_bytes", "The server's current WAL position minus the slot's confirmed "
                           "position.").add_metric((slot,), self.slot_lag_bytes)
        if self.slot_safe_wal_bytes is not None:
            families.gauge("cdc_slot_safe_wal_bytes", "WAL the server may still write before max_slot_wal_keep_size "
                           "invalidates the slot (absent: no such limit).").add_metric((slot,), self.slot_safe_wal_bytes)
        if self.confirmed_lsn is not None:
            families.gauge("cdc_confirmed_lsn", "The position last acknowledged to the server, as a number.").add_metric(
                (slot,), self.confirmed_lsn)
        families.gauge("cdc_last_ack_timestamp_seconds", "When the acknowledged position last moved (before the "
                       "first: when the run started).").add_metric((slot,), self.last_ack or self.started)
        if self.last_flush is not None:
            families.gauge("cdc_last_flush_timestamp_seconds", "When the last batch was stored.").add_metric(
                (slot,), self.last_flush)


class Families:
    """The metric families of one scrape, each made once and filled by every pipeline."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def _get(self, name: str, make: Callable[[], Metric]) -> Metric:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = make()
        return family

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ("slot",)) -> GaugeMetricFamily:
        from prometheus_client.core import GaugeMetricFamily

        family = self._get(name, lambda: GaugeMetricFamily(name, doc, labels=list(labels)))
        assert isinstance(family, GaugeMetricFamily)
        return family

    def counter(self, name: str, doc: str, labels: Sequence[str] = ("slot",)) -> CounterMetricFamily:
        from prometheus_client.core import CounterMetricFamily

        family = self._get(name, lambda: CounterMetricFamily(name, doc, labels=list(labels)))
        assert isinstance(family, CounterMetricFamily)
        return family

    def histogram(self, name: str, doc: str, histogram: Histogram, slot: str) -> None:
        from prometheus_client.core import HistogramMetricFamily

        family = self._get(name, lambda: HistogramMetricFamily(name, doc, labels=["slot"]))
        assert isinstance(family, HistogramMetricFamily)
        cumulative, total = histogram.snapshot()
        les = [repr(b) for b in histogram.bounds] + ["+Inf"]  # as prometheus_client writes them: 1.0, 0.25
        family.add_metric([slot], buckets=list(zip(les, cumulative)), sum_value=total)

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())
