"""`cdc top`'s arithmetic: what an endpoint says, rates between two reads, quantiles from buckets."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from cdc.metrics import PipelineMetrics, Sources
from cdc.metrics.exporter import Address, MetricsServer
from cdc.metrics.scrape import Buckets, ScrapeError, endpoint_url, parse, rows


def exposition(stored: int, *, lag: int | None = None, batches: list[list[int]] = ()) -> str:  # type: ignore[assignment]
    server = MetricsServer(Address("127.0.0.1", 0))  # never started: only its registry is used
    m = PipelineMetrics(slot="s", publication="p", sink="clickhouse")
    m.attach(Sources(events=lambda: {"stored": stored, "dead_letter": 4}, buffer_rows=lambda: 9, dedup_ids=lambda: 1))
    for ages_ms in batches:
        m.batch_stored(len(ages_ms), [1_000_000_000_000 - a * 1000 for a in ages_ms], 0.1, now=1_000_000.0)
    m.slot_lag(lag)
    server.add(m)
    return generate_latest(server.registry).decode()


def test_rates_come_from_two_reads_and_latency_from_the_interval() -> None:
    before = parse(exposition(1000, batches=[[2000] * 10]), "e", at=100.0)
    now = parse(exposition(1500, lag=2048, batches=[[2000] * 10, [300] * 4]), "e", at=102.0)
    [r] = rows(now, before)
    assert r.slot == "s" and r.endpoint == "e"
    assert r.rates["stored"] == 250.0 and r.rates["dead_letter"] == 0.0
    assert r.dead_letters == 4 and r.lag_bytes == 2048 and r.buffer_rows == 9
    # Only the batch stored between the reads counts: four rows 0.3 s old (bucket 0.25..0.5).
    assert r.latency_p50 is not None and 0.25 <= r.latency_p50 <= 0.5
    assert r.rows_per_flush == 4


def test_one_read_has_no_rates_but_latency_since_the_start() -> None:
    [r] = rows(parse(exposition(7, batches=[[2000] * 10]), "e", at=1.0), [])
    assert r.rates["stored"] is None
    assert r.latency_p99 is not None and 1.0 <= r.latency_p99 <= 2.5
    assert r.lag_bytes is None and r.lag_seconds is None


def test_quantiles_interpolate_like_histogram_quantile() -> None:
    b = Buckets([(1.0, 10.0), (2.0, 20.0), (float("inf"), 20.0)], 25.0)
    assert b.quantile(0.5) == 1.0
    assert b.quantile(0.75) == 1.5
    assert b.quantile(0.25) == 0.5
    assert Buckets([(1.0, 0.0), (float("inf"), 4.0)]).quantile(0.5) == 1.0  # beyond the last bound
    assert Buckets().quantile(0.5) is None


def test_something_that_is_not_cdc_is_refused() -> None:
    with pytest.raises(ScrapeError, match="not cdc's"):
        parse("# TYPE up gauge\nup 1\n", "e", at=0.0)
    with pytest.raises(ScrapeError, match="does not serve Prometheus"):
        parse("<html>nope</html>\n", "e", at=0.0)


@pytest.mark.parametrize(("address", "url"), [
    ("127.0.0.1:9108", "http://127.0.0.1:9108/metrics"), ("0.0.0.0:9108", "http://127.0.0.1:9108/metrics"),
    (":9108", "http://127.0.0.1:9108/metrics"), ("[::]:9108", "http://[::1]:9108/metrics"),
    ("http://h:1/metrics", "http://h:1/metrics"),
])
def test_the_run_address_is_read_on_loopback(address: str, url: str) -> None:
    assert endpoint_url(address) == url
