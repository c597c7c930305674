"""The Prometheus fixture scrapes a live endpoint, answers PromQL and evaluates rules."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from servers.prometheus import PrometheusServer

METRICS = b"""\
# HELP cdc_fixture_events_total Events seen by the fixture test.
# TYPE cdc_fixture_events_total counter
cdc_fixture_events_total{outcome="stored"} 42
cdc_fixture_events_total{outcome="dead_letter"} 3
"""


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(METRICS)))
        self.end_headers()
        self.wfile.write(METRICS)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _metrics_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_prometheus_scrapes_an_endpoint_and_answers_promql(prometheus: PrometheusServer) -> None:
    with _metrics_endpoint() as target:
        prometheus.scrape([target])
        assert prometheus.active_targets() == {target}
        stored = prometheus.wait_for(f'cdc_fixture_events_total{{instance="{target}", outcome="stored"}}')
        total = prometheus.query_value(f'sum(cdc_fixture_events_total{{instance="{target}"}})')
    assert stored == 42
    assert total == 45


def test_prometheus_evaluates_loaded_rules(prometheus: PrometheusServer, tmp_path: Path) -> None:
    rules = tmp_path / "fixture.yml"
    rules.write_text(
        "groups:\n"
        "  - name: fixture\n"
        "    rules:\n"
        "      - record: cdc_fixture:dead_letter_share\n"
        '        expr: sum(cdc_fixture_events_total{outcome="dead_letter"}) / sum(cdc_fixture_events_total)\n'
        "      - alert: CdcFixtureDeadLetters\n"
        '        expr: cdc_fixture_events_total{outcome="dead_letter"} > 0\n'
    )
    with _metrics_endpoint() as target:
        prometheus.scrape([target], wait=False)
        prometheus.load_rules(rules)
        share = prometheus.wait_for("cdc_fixture:dead_letter_share")
        firing = prometheus.wait_for('count(ALERTS{alertname="CdcFixtureDeadLetters"})')
    assert share == 3 / 45
    assert firing == 1


def test_promtool_rejects_a_rule_with_a_broken_expression(prometheus: PrometheusServer, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: sum(\n")
    result = subprocess.run(
        [prometheus.promtool, "check", "rules", str(broken)], check=False, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "broken.yml" in result.stdout + result.stderr
