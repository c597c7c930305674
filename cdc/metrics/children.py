"""The metrics of shards streamed in child processes, served by their worker's one endpoint.

A worker forks one child per shard (cdc/workers/runner.py); each child's
pipeline keeps its metrics in that child. The worker's endpoint reaches them
this way: each child has a pipe to its worker and a registry of its own, and
answers every request on the pipe with its text exposition
(prometheus_client's ``generate_latest``). At scrape time the worker's
collector asks every child at once, reads the answers (prometheus_client's
parser) and serves their samples as its own, one family per metric name. No
file, no port per child: a child that has ended has no samples, and one that
does not answer in time is left out of that scrape.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from .exporter import PipelineCollector
from .pipeline import PipelineMetrics

_ASK: Final = b"scrape"


class ChildMetrics:
    """The worker's side: one pipe per running child, and the collector that reads them all."""

    def __init__(self, *, timeout: float = 2.0, close_in_child: tuple[int, ...] = ()) -> None:
        self._timeout = timeout
        self._ends: dict[str, Connection[Any, Any]] = {}
        self._lock = threading.Lock()
        # Descriptors a child must not keep (the endpoint's listening socket).
        self._close_in_child = close_in_child

    def open(self, key: str) -> Connection[Any, Any]:
        """Before forking the child for ``key``: the end the child keeps (the worker closes its copy after the fork)."""
        ours, theirs = Pipe(duplex=True)
        with self._lock:
            old = self._ends.pop(key, None)
            self._ends[key] = ours
        if old is not None:
            old.close()
        return theirs

    def forget(self, key: str) -> None:
        """The child for ``key`` has ended."""
        with self._lock:
            end = self._ends.pop(key, None)
        if end is not None:
            end.close()

    def in_child(self, end: Connection[Any, Any]) -> ChildReport:
        """In the child, just forked (one thread): drop the worker's ends, report on ``end``."""
        # No lock: the worker's threads did not survive the fork, and only the forking one changes _ends.
        for other in self._ends.values():
            other.close()
        self._ends = {}
        if self._close_in_child:
            # /dev/null over the descriptor, not a close: its number stays taken, so the socket object the
            # child inherited can never close something else that would reuse it.
            null = os.open(os.devnull, os.O_RDONLY)
            for fd in self._close_in_child:
                try:
                    os.dup2(null, fd)
                except OSError:
                    pass
            os.close(null)
        return ChildReport(end)

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # one scrape at a time: answers are matched to requests by order
            asked = []
            for end in self._ends.values():
                try:
                    while end.poll(0):
                        end.recv_bytes()  # a late answer to an earlier scrape
                    end.send_bytes(_ASK)
                    asked.append(end)
                except (OSError, EOFError):
                    continue  # the child is ending: the worker reaps it
            texts = []
            deadline = time.monotonic() + self._timeout
            for end in asked:
                try:
                    if end.poll(max(0.0, deadline - time.monotonic())):
                        texts.append(end.recv_bytes().decode())
                except (OSError, EOFError):
                    continue
        return iter(merge(texts))


def merge(texts: list[str]) -> list[Metric]:
    """The families of several expositions, one per name, holding every exposition's samples."""
    families: dict[str, Metric] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            into = families.get(family.name)
            if into is None:
                into = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            into.samples.extend(family.samples)
    return list(families.values())


class ChildReport:
    """The child's side: its pipelines' metrics in a registry of its own, sent to the worker when it asks."""

    def __init__(self, end: Connection[Any, Any]) -> None:
        self._end = end
        self._pipelines = PipelineCollector()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._pipelines)
        threading.Thread(target=self._answer, name="cdc-metrics-report", daemon=True).start()

    def add(self, metrics: PipelineMetrics) -> None:
        self._pipelines.add(metrics)

    def remove(self, metrics: PipelineMetrics) -> None:
        self._pipelines.remove(metrics)

    def _answer(self) -> None:
        while True:
            try:
                self._end.recv_bytes()
                self._end.send_bytes(generate_latest(self._registry))
            except (OSError, EOFError):
                return  # the worker is gone or forgot this child
