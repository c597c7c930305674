"""The alerts, the dashboard and the compose file name only what cdc exports, and Prometheus accepts them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cdc.metrics import PipelineMetrics, Sources
from cdc.metrics.exporter import Address, MetricsServer

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "docs" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "docs" / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = ROOT / "docs" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "docs" / "grafana" / "cdc.json"
DATASOURCE = ROOT / "docs" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"

# A metric name as PromQL writes it; Prometheus makes `up` itself, for every target.
_NAME = re.compile(r"\b((?:cdc|process)_[a-z0-9_]+)\b")


def named_in(path: Path) -> set[str]:
    return set(_NAME.findall(path.read_text()))


def sample_names(exposition: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(exposition) for s in family.samples}


def everything_exported() -> set[str]:
    """Every sample a pipeline exports once it has run a while: stored, acknowledged, measured, heartbeats on."""
    server = MetricsServer(Address("127.0.0.1", 0))  # only its registry: nothing listens
    m = PipelineMetrics(slot="s", publication="p", sink="clickhouse")
    m.attach(Sources(events=dict, buffer_rows=lambda: 0, dedup_ids=lambda: 0))
    m.batch_stored(1, [0], 0.1)
    m.acknowledged(1)
    m.slot_lag(0, 1 << 30)
    m.heartbeat.enable(10.0)
    server.add(m)
    return sample_names(generate_latest(server.registry).decode())


def test_labels_stay_few_and_bounded() -> None:
    """Only labels with a handful of values: a slot per pipeline (per shard), an outcome, a bucket bound."""
    server = MetricsServer(Address("127.0.0.1", 0))
    for slot in ("a", "b"):
        m = PipelineMetrics(slot=slot, publication="p", sink="clickhouse")
        m.attach(Sources(events=dict, buffer_rows=lambda: 0, dedup_ids=lambda: 0))
        m.batch_stored(1, [0], 0.1)
        m.acknowledged(1)
        m.slot_lag(0, 1 << 30)
        m.heartbeat.enable(10.0)
        server.add(m)
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(server.registry).decode()):
        if family.name.startswith("cdc_"):
            for sample in family.samples:
                labels.setdefault(family.name, set()).update(sample.labels)
    assert labels.pop("cdc_info") == {"version", "slot", "publication", "sink"}
    assert labels.pop("cdc_events") == {"slot", "outcome"}
    assert {name: names - {"le"} for name, names in labels.items()} == {name: {"slot"} for name in labels}


@pytest.mark.parametrize("path", [ALERTS, DASHBOARD], ids=lambda p: p.name)
def test_every_metric_named_is_one_cdc_exports(path: Path) -> None:
    named = named_in(path)
    assert named, f"no metric found in {path}: is the pattern still right?"
    missing = named - everything_exported()
    assert not missing, f"{path.relative_to(ROOT)} names metrics cdc does not export: {sorted(missing)}"


def test_the_dashboard_covers_the_issue_and_reads_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    uid = re.search(r"uid:\s*(\S+)", DATASOURCE.read_text())
    assert uid is not None
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid.group(1), panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for needed in ("cdc_events_total", "cdc_slot_lag_bytes", "cdc_last_heartbeat_timestamp_seconds",
                   "cdc_commit_to_stored_seconds_bucket", "cdc_batch_rows_sum", "cdc_clickhouse_errors_total"):
        assert needed in exprs, needed


def test_compose_mounts_files_that_exist() -> None:
    compose = COMPOSE.read_text()
    mounts = re.findall(r"\./(docs/[^:\"]+):", compose)
    assert {"docs/prometheus", "docs/grafana/provisioning", "docs/grafana/cdc.json"} <= set(mounts)
    for mount in mounts:
        assert (ROOT / mount).exists(), mount
    assert re.search(r"CDC_METRICS_ADDR: 0\.0\.0\.0:(\d+)", compose)
    port = re.search(r"CDC_METRICS_ADDR: 0\.0\.0\.0:(\d+)", compose).group(1)  # type: ignore[union-attr]
    assert f'"cdc:{port}"' in PROMETHEUS_CONFIG.read_text()


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # Grafana's variables as Grafana would fill them in; promtool parses each query as a recording rule.
    filled = [e.replace("$__rate_interval", "1m").replace("$slot", ".*") for e in dashboard_exprs()]
    assert not [e for e in filled if "$" in e], "a Grafana variable this test does not fill in"
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"cdc_dashboard:query{n}", "expr": e}
                                                       for n, e in enumerate(filled)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("no promtool: apt-get install prometheus (.ci/run does)")
    return found


@pytest.mark.parametrize(("command", "path"), [
    ("check rules", ALERTS), ("test rules", ALERTS_TEST), ("check config", PROMETHEUS_CONFIG),
], ids=["check-rules", "test-rules", "check-config"])
def test_promtool_accepts_it(command: str, path: Path) -> None:
    result = subprocess.run([promtool(), *command.split(), str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
