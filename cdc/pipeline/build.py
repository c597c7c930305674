"""``build``: settings and a sink in, one pipeline out, wired; used by ``cdc run`` and ``cdc backfill``.

Everything one slot's pipeline needs comes from the arguments (settings name
the slot, the publication and the outbox), so one process may build several.
Nothing is read from either server here: ``Pipeline.run`` does that.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

from structlog.typing import FilteringBoundLogger

from ..backoff import Backoff
from ..core.buffer import BatchBuilder
from ..core.collector import Collector
from ..core.dedup import DedupWindow
from ..core.flusher import Flusher
from ..core.handoff import Handoff
from ..core.spill import SpillBudget
from ..core.tracker import AckTracker
from ..core.transactions import TransactionAssembler
from ..failpoints import Failpoints
from ..metrics import PipelineMetrics, Sources
from ..settings import Settings
from ..sink.base import Sink
from .acknowledge import Acknowledger
from .parts import Parts
from .pipeline import Pipeline
from .retain import Retention


def build(
    settings: Settings, sink: Sink, *, log: FilteringBoundLogger, stop: threading.Event | None = None,
    failpoints: Failpoints | None = None, retention: Retention | None = None,
) -> Pipeline:
    """The parts of one pipeline, wired: transactions -> collector -> buffer -> flusher -> sink, and the
    acknowledgement of what is stored. The flusher's thread starts here: ``Pipeline.close()`` ends it."""
    s = settings
    bounds = sink.timestamp_bounds()
    backoff = Backoff(s.retry_initial, s.retry_max)
    # Kept whether served or not: nothing of it runs per row (see cdc/metrics/pipeline.py).
    metrics = PipelineMetrics(slot=s.slot, publication=s.publication, sink=urlsplit(s.sink_url).scheme)
    tracker = AckTracker(0, on_stored=metrics.heartbeat.stored)
    builder = BatchBuilder(max_rows=s.batch_rows, max_bytes=s.batch_bytes, max_age=s.flush_interval)
    dedup = DedupWindow(capacity=s.dedup_window, max_age=s.dedup_max_age)
    flusher = Flusher(
        sink, tracker, backoff, log, failpoints,
        # The progress ledger only needs the dedup window and the newest position.
        keep_progress_seconds=max(s.dedup_max_age, 3600.0) + 3600.0, observer=metrics,
    )
    ack = Acknowledger(tracker, retention or Retention(), s.status_interval, on_ack=metrics.acknowledged)
    handoff = Handoff(builder, tracker, flusher, while_waiting=ack.send_forced, status_interval=s.status_interval)
    collector = Collector(
        outbox=(s.outbox_schema, s.outbox_table), builder=builder, tracker=tracker, dedup=dedup,
        bounds=bounds, max_payload_bytes=s.max_payload_bytes, log=log, failpoints=failpoints,
        # A full batch goes to the flusher at once, even in the middle of a run of rows.
        on_full=handoff.hand_off, on_message=metrics.heartbeat.on_message,
    )
    assembler = TransactionAssembler(collector, SpillBudget(s.spill_bytes), log)
    metrics.attach(_sources(collector, flusher, dedup))
    return Pipeline(Parts(
        settings=s, sink=sink, log=log, stop=stop or threading.Event(), backoff=backoff, dedup=dedup,
        tracker=tracker, builder=builder, collector=collector, assembler=assembler, flusher=flusher,
        handoff=handoff, ack=ack, metrics=metrics,
    ))


def _sources(collector: Collector, flusher: Flusher, dedup: DedupWindow) -> Sources:
    """The counts the parts keep anyway, read when Prometheus scrapes (another thread: plain int reads)."""
    counters = collector.counters
    return Sources(
        events=lambda: {"stored": flusher.rows_stored, "duplicate": counters.duplicates,
                        "dead_letter": flusher.dead_letters_stored, "already_stored": counters.already_stored},
        buffer_rows=lambda: max(0, counters.rows_buffered + counters.dead_letters
                                - flusher.rows_stored - flusher.dead_letters_stored),
        dedup_ids=lambda: len(dedup),
    )
