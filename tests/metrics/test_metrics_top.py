"""`cdc top --once` reads endpoints twice and prints one frame; an endpoint it cannot read is one line."""

from __future__ import annotations

import itertools
import signal
import socket
import subprocess
import sys

import orjson
from support import wait_until

from cdc.metrics import PipelineMetrics, Sources
from cdc.metrics.exporter import Address, MetricsServer

CDC = [sys.executable, "-m", "cdc"]


def growing(slot: str, per_read: int) -> PipelineMetrics:
    """A pipeline that has stored ``per_read`` more rows each time it is read."""
    reads = itertools.count(1)
    m = PipelineMetrics(slot=slot, publication="p", sink="clickhouse")
    m.attach(Sources(events=lambda: {"stored": per_read * next(reads), "dead_letter": 3},
                     buffer_rows=lambda: 0, dedup_ids=lambda: 0))
    m.slot_lag(1 << 20)
    return m


def test_once_prints_rates_of_every_slot_of_every_endpoint() -> None:
    with MetricsServer(Address("127.0.0.1", 0)) as one, MetricsServer(Address("127.0.0.1", 0)) as two:
        one.add(growing("shard_0", 100))
        one.add(growing("shard_1", 10))
        two.add(growing("shard_2", 50))
        result = subprocess.run(
            [*CDC, "top", "--once", "--json", "--interval", "0.5", "--metrics-addr", f"127.0.0.1:{one.port}",
             "--metrics-addr", f"127.0.0.1:{two.port}"],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        frame = {r["slot"]: r for r in orjson.loads(result.stdout)}
        assert sorted(frame) == ["shard_0", "shard_1", "shard_2"]
        for slot, per_read in (("shard_0", 100), ("shard_1", 10), ("shard_2", 50)):
            # per_read rows between two reads at least 0.5 s apart.
            assert 0 < frame[slot]["rates"]["stored"] <= per_read / 0.5
            assert frame[slot]["dead_letters"] == 3 and frame[slot]["lag_bytes"] == 1 << 20
        assert frame["shard_2"]["endpoint"] == f"127.0.0.1:{two.port}"

        table = subprocess.run([*CDC, "top", "--once", "--interval", "0.1"], capture_output=True, text=True,
                               timeout=60, env={"CDC_METRICS_ADDR": f"127.0.0.1:{one.port}", "PATH": ""})
        assert table.returncode == 0, table.stderr
        assert "shard_0" in table.stdout and "1.0 MiB" in table.stdout and "shard_2" not in table.stdout


def test_the_live_view_keeps_showing_what_it_can_read_and_says_what_it_cannot_until_interrupted() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        gone = sock.getsockname()[1]
    with MetricsServer(Address("127.0.0.1", 0)) as server:
        reads = itertools.count(1)
        read: list[int] = []

        def events() -> dict[str, int]:
            read.append(next(reads))
            return {"stored": 10 * read[-1]}

        m = PipelineMetrics(slot="watched", publication="p", sink="clickhouse")
        m.attach(Sources(events=events, buffer_rows=lambda: 0, dedup_ids=lambda: 0))
        server.add(m)
        live = f"127.0.0.1:{server.port}"
        view = subprocess.Popen([*CDC, "top", "--interval", "0.1", "--metrics-addr", live,
                                 "--metrics-addr", f"127.0.0.1:{gone}"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: len(read) >= 3 or view.poll() is not None, 60, "three reads of the endpoint")
            assert view.poll() is None, view.communicate()
        finally:
            view.send_signal(signal.SIGINT)
            out, err = view.communicate(timeout=30)
    assert view.returncode == 0, err
    assert "watched" in out and live in out
    assert f"cannot read metrics from http://127.0.0.1:{gone}/metrics" in out
    assert "Traceback" not in err


def test_an_endpoint_that_does_not_answer_is_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = subprocess.run([*CDC, "top", "--once", "--metrics-addr", f"127.0.0.1:{port}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("cdc: error: cannot read metrics from") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_top_needs_an_endpoint() -> None:
    result = subprocess.run([*CDC, "top", "--once"], capture_output=True, text=True, timeout=60,
                            env={"PATH": ""})
    assert result.returncode == 2 and "CDC_METRICS_ADDR" in result.stderr
