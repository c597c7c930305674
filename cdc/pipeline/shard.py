"""One shard's pipeline: the settings pointed at the shard's slot, publication and stream, then ``build``.

A new owner first waits, calmly, until no walsender holds the slot (the previous
owner's may linger a moment, and PostgreSQL lets one stream a slot at a time),
and only then reads where the sink stands for this shard: so it sees every row
the previous owner stored before its walsender ended. Used by the workers
(cdc/workers/) and by a reshard's drain (cdc/admin/reshard.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from structlog.typing import FilteringBoundLogger

from ..failpoints import Failpoints
from ..lsn import format_lsn
from ..pg import preflight
from ..pg.connect import connect
from ..settings import Settings
from ..shards.layout import Shard, shard_settings
from ..sink import open_sink
from .build import build
from .pipeline import RunSummary
from .retain import Retention

SLOT_POLL = 0.2


def wait_for_slot(settings: Settings, stop: threading.Event, log: FilteringBoundLogger) -> bool:
    """Until no walsender holds ``settings.slot``: True, or False when stopped first."""
    said = False
    while not stop.is_set():
        with connect(settings.pg_dsn, application_name="cdc-worker") as conn:
            info = preflight.slot_info(conn, settings.slot)
        if info is None or info.active_pid is None:
            return True
        if not said:
            log.info("slot is active: waiting for its walsender to end", pid=info.active_pid)
            said = True
        stop.wait(SLOT_POLL)
    return False


def run_shard(
    settings: Settings, shard: Shard, stop: threading.Event, abort: threading.Event, *, log: FilteringBoundLogger,
    failpoints: Failpoints | None = None, retention: Retention | None = None, until: int | None = None,
    stop_before: int | None = None, from_lsn: int | None = None,
) -> RunSummary | None:
    """Stream ``shard`` until ``stop`` (or ``until``); None when stopped before it started."""
    s = shard_settings(settings, shard)
    if not wait_for_slot(s, stop, log):
        return None
    sink = open_sink(s.sink_url, s, log=log)
    done = threading.Event()
    try:
        sink.ensure_schema()
        pipeline = build(s, sink, log=log, stop=stop, failpoints=failpoints, retention=retention)
        threading.Thread(target=_abort_when, args=(abort, done, pipeline.abort), daemon=True,
                         name=f"cdc-abort-{shard.slot}").start()
        return pipeline.run(until=None if until is None else format_lsn(until), from_lsn=from_lsn,
                            floor=shard.skip_before, stop_before=stop_before)
    finally:
        done.set()
        sink.close()


def _abort_when(abort: threading.Event, done: threading.Event, give_up: Callable[[], None]) -> None:
    while not done.wait(0.2):
        if abort.is_set():
            give_up()
            return
