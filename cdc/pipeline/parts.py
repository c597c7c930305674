"""One pipeline's parts, as ``build`` wires them: everything one slot's run needs, and nothing global."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from ..backoff import Backoff
from ..core.buffer import BatchBuilder
from ..core.collector import Collector
from ..core.dedup import DedupWindow
from ..core.flusher import Flusher
from ..core.handoff import Handoff
from ..core.tracker import AckTracker
from ..core.transactions import TransactionAssembler
from ..metrics import PipelineMetrics
from ..settings import Settings
from ..sink.base import Sink
from .acknowledge import Acknowledger


@dataclass(frozen=True, eq=False)
class Parts:
    settings: Settings
    sink: Sink
    log: FilteringBoundLogger
    stop: threading.Event
    backoff: Backoff
    dedup: DedupWindow
    tracker: AckTracker
    builder: BatchBuilder
    collector: Collector
    assembler: TransactionAssembler
    flusher: Flusher
    handoff: Handoff
    ack: Acknowledger
    metrics: PipelineMetrics
