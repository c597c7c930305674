"""The endpoint serves each pipeline's metrics, labelled by slot, from a registry of its own."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cdc.metrics import PipelineMetrics, Sources
from cdc.metrics.exporter import Address, MetricsAddressError, MetricsServer


def scrape(server: MetricsServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def pipeline(slot: str, stored: int) -> PipelineMetrics:
    m = PipelineMetrics(slot=slot, publication="pub", sink="clickhouse", version="9.9")
    m.attach(Sources(events=lambda: {"stored": stored, "duplicate": 2, "dead_letter": 1},
                     buffer_rows=lambda: 11, dedup_ids=lambda: 12))
    return m


def test_two_pipelines_in_one_process_are_told_apart_by_slot() -> None:
    with MetricsServer(Address("127.0.0.1", 0)) as server:
        a, b = pipeline("shard_a", 100), pipeline("shard_b", 200)
        server.add(a)
        server.add(b)
        a.batch_stored(3, [1_700_000_000_000_000] * 3, 0.5, now=1_700_000_001.0)
        a.acknowledged(0x1_0000_0010, now=1_700_000_002.0)
        b.slot_lag(4096)
        samples = scrape(server)
    assert samples[("cdc_events_total", (("outcome", "stored"), ("slot", "shard_a")))] == 100
    assert samples[("cdc_events_total", (("outcome", "stored"), ("slot", "shard_b")))] == 200
    assert samples[("cdc_events_total", (("outcome", "dead_letter"), ("slot", "shard_b")))] == 1
    assert samples[("cdc_info", (("publication", "pub"), ("sink", "clickhouse"), ("slot", "shard_a"),
                                 ("version", "9.9")))] == 1
    assert samples[("cdc_batches_total", (("slot", "shard_a"),))] == 1
    assert samples[("cdc_batches_total", (("slot", "shard_b"),))] == 0
    assert samples[("cdc_commit_to_stored_seconds_bucket", (("le", "1.0"), ("slot", "shard_a")))] == 3
    assert samples[("cdc_commit_to_stored_seconds_bucket", (("le", "0.5"), ("slot", "shard_a")))] == 0
    assert samples[("cdc_commit_to_stored_seconds_sum", (("slot", "shard_a"),))] == 3.0
    assert samples[("cdc_confirmed_lsn", (("slot", "shard_a"),))] == 0x1_0000_0010
    assert samples[("cdc_last_ack_timestamp_seconds", (("slot", "shard_a"),))] == 1_700_000_002.0
    assert samples[("cdc_slot_lag_bytes", (("slot", "shard_b"),))] == 4096
    assert ("cdc_slot_lag_bytes", (("slot", "shard_a"),)) not in samples  # not measured yet: absent, not 0
    assert samples[("cdc_buffer_rows", (("slot", "shard_a"),))] == 11
    assert samples[("cdc_dedup_window_ids", (("slot", "shard_b"),))] == 12
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)


def test_each_server_has_its_own_registry() -> None:
    with MetricsServer(Address("127.0.0.1", 0)) as one, MetricsServer(Address("127.0.0.1", 0)) as other:
        one.add(pipeline("only_here", 1))
        assert ("cdc_batches_total", (("slot", "only_here"),)) in scrape(one)
        assert not any(name.startswith("cdc_") for name, _ in scrape(other))


def test_a_removed_pipeline_is_no_longer_exported() -> None:
    with MetricsServer(Address("127.0.0.1", 0)) as server:
        m = pipeline("gone", 1)
        server.add(m)
        server.remove(m)
        assert not any(name.startswith("cdc_") for name, _ in scrape(server))


def test_closing_the_server_frees_its_port() -> None:
    server = MetricsServer(Address("127.0.0.1", 0))
    server.start()
    port = server.port
    server.close()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_a_busy_port_is_an_os_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        with pytest.raises(OSError):
            MetricsServer(Address("127.0.0.1", sock.getsockname()[1])).start()


@pytest.mark.parametrize(("text", "host", "port"), [
    ("127.0.0.1:9108", "127.0.0.1", 9108), (":9108", "0.0.0.0", 9108), ("[::1]:9108", "::1", 9108),
    ("metrics.local:0", "metrics.local", 0),
])
def test_addresses_parse(text: str, host: str, port: int) -> None:
    address = Address.parse(text)
    assert (address.host, address.port) == (host, port)
    assert Address.parse(str(address)) == address


@pytest.mark.parametrize("text", ["9108", "host:", "host:port", "::1:9108", "host:70000"])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(MetricsAddressError, match="HOST:PORT|brackets"):
        Address.parse(text)
