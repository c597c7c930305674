"""Shards streamed in child processes: the worker's one endpoint serves what each child's pipeline counts
(no servers: children forked by the worker's own runner)."""

from __future__ import annotations

import threading
import time

import structlog
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cdc.metrics import MetricsHub, PipelineMetrics, Sources
from cdc.metrics.children import ChildMetrics
from cdc.metrics.exporter import Address, MetricsServer
from cdc.shards.layout import Shard, shard_number, shards_of
from cdc.workers.runner import ForkRunner

SHARDS = shards_of("cdc_outbox", "cdc_outbox", 1, 3)


def counts_in_child(shard: Shard, stop: threading.Event, abort: threading.Event, hub: MetricsHub | None) -> int:
    """A shard's pipeline as far as its metrics go: it stored 10 × (its number + 1) rows, in the child."""
    assert hub is not None
    m = PipelineMetrics(slot=shard.slot, publication=shard.publication, sink="clickhouse",
                        shard=shard_number(shard.stream))
    stored = 10 * (shard.index + 1)
    m.attach(Sources(events=lambda: {"stored": stored}, buffer_rows=lambda: 0, dedup_ids=lambda: 0))
    hub.add(m)
    stop.wait(30)
    hub.remove(m)
    return 0


def stored(server: MetricsServer) -> dict[tuple[str, str], float]:
    """(slot, shard) -> cdc_events_total{outcome="stored"}, as the endpoint would serve it now."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(server.registry).decode()):
        for s in family.samples:
            if s.name == "cdc_events_total" and s.labels["outcome"] == "stored":
                out[(s.labels["slot"], s.labels["shard"])] = s.value
    return out


def wait_for(check: object, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(what)


def test_the_worker_endpoint_serves_every_child_shard_and_forgets_one_that_ended() -> None:
    server = MetricsServer(Address("127.0.0.1", 0))
    children = ChildMetrics()
    server.registry.register(children)
    runner = ForkRunner(counts_in_child, structlog.get_logger(), children)
    for shard in SHARDS:
        runner.start(shard)
    try:
        want = {("cdc_outbox_0", "0"): 10.0, ("cdc_outbox_1", "1"): 20.0, ("cdc_outbox_2", "2"): 30.0}
        wait_for(lambda: stored(server) == want, f"every child's samples; got {stored(server)}")
        # One family per metric, however many children report it: a valid exposition.
        text = generate_latest(server.registry).decode()
        assert text.count("# TYPE cdc_events_total counter") + text.count("# TYPE cdc_events counter") == 1
        runner.stop(SHARDS[1])
        wait_for(lambda: any(e.shard == SHARDS[1] for e in runner.reap()), "shard 1's child to end")
        assert stored(server) == {k: v for k, v in want.items() if k[1] != "1"}
    finally:
        for shard in runner.running():
            runner.kill(shard)
        wait_for(lambda: not (runner.reap() or runner.running()), "the children to end")


def test_an_unsharded_pipeline_keeps_its_labels() -> None:
    m = PipelineMetrics(slot="cdc_outbox", publication="cdc_outbox", sink="clickhouse", shard=shard_number(0))
    assert m.key == ("slot",) and "shard" not in m.info
