"""A worker of the group whose streamers only hold their shard's slot (START_REPLICATION, answer, acknowledge).

It tests the group alone: locks, liveness, shares, takeover, handover, the
walsender fence. Which worker streams which slot is read from PostgreSQL itself
(the walsender's application_name is ``holder <worker name>``).

    python holder_worker.py DSN NAME [--max-shards K] [--threads]
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from cdc.backoff import Backoff
from cdc.logs import configure, get_logger
from cdc.pg.replication import ReplicationConnection, ReplicationError
from cdc.shards.layout import Shard
from cdc.workers.group import WorkerGroup
from cdc.workers.runner import ForkRunner, ThreadRunner


def holder(dsn: str, name: str) -> object:
    log = get_logger(worker_name=name)

    def target(shard: Shard, stop: threading.Event, abort: threading.Event) -> int:
        said = False
        while not stop.is_set():
            repl = ReplicationConnection.connect(dsn, application_name=f"holder {name}")
            try:
                repl.start_replication(shard.slot, "0/0", {"proto_version": "1",
                                                            "publication_names": f'"{shard.publication}"'})
            except ReplicationError as exc:
                repl.close()
                if exc.sqlstate != "55006":
                    raise
                if not said:
                    log.info("slot is active, waiting", slot=shard.slot)
                    said = True
                stop.wait(0.2)
                continue
            log.info("holding", slot=shard.slot)
            while not stop.is_set():
                repl.read(100, 0.2)
                repl.send_status(0)
            repl.close()
            log.info("released", slot=shard.slot, aborted=abort.is_set())
        return 0

    return target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("name")
    parser.add_argument("--max-shards", type=int)
    parser.add_argument("--threads", action="store_true")
    args = parser.parse_args()
    configure(fmt="json", level="info")
    log = get_logger(worker_name=args.name)
    target = holder(args.dsn, args.name)
    runner = (ThreadRunner if args.threads else ForkRunner)(target, log)  # type: ignore[arg-type]
    group = WorkerGroup(dsn=args.dsn, schema="public", slot="cdc_outbox", runner=runner, log=log,
                        backoff=Backoff(0.2, 2.0), max_shards=args.max_shards, worker_id=args.name)
    stop, abort = threading.Event(), threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        (abort if stop.is_set() else stop).set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    group.run(stop, abort)


if __name__ == "__main__":
    main()
