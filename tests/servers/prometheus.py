"""A real Prometheus (Debian's `prometheus` package), run as a child process.

It scrapes every second whatever targets a test gives it: the scrape job
reads a file_sd file that `scrape()` rewrites, so one server serves the whole
session and each test points it at its own endpoints. Rule files can be
loaded the same way (`load_rules`), for tests of alerting rules against live
series. The config is written as JSON, which is YAML too: no YAML library.
Queries go over the HTTP API with urllib.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import _process

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
SCRAPE_INTERVAL = "1s"
JOB = "cdc"


def find_prometheus() -> str | None:
    return _process.which("/usr/bin/prometheus", "prometheus")


def find_promtool() -> str | None:
    return _process.which("/usr/bin/promtool", "promtool")


def missing_reason() -> str | None:
    if find_prometheus() is None or find_promtool() is None:
        return "Prometheus is not installed (apt-get install prometheus)"
    return None


class PrometheusError(RuntimeError):
    pass


class PrometheusServer(_process.ChildServer):
    """One Prometheus on a free loopback port, its TSDB in a temp dir."""

    host = "127.0.0.1"

    def __init__(self, binary: str, promtool: str, workdir: Path) -> None:
        self.binary = binary
        self.promtool = promtool
        self.base_dir = workdir
        self.config_path = workdir / "prometheus.yml"
        self.targets_path = workdir / "targets.json"
        self.rules_dir = workdir / "rules"
        self.storage_dir = workdir / "data"
        self.log_path = workdir / "prometheus.log"
        self.port = _process.free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle ----------------------------------------------------------

    def init(self) -> None:
        for path in (self.base_dir, self.rules_dir, self.storage_dir):
            path.mkdir(parents=True, exist_ok=True)
        self._write_json(self.targets_path, [])
        config = {
            "global": {
                "scrape_interval": SCRAPE_INTERVAL,
                "scrape_timeout": SCRAPE_INTERVAL,
                "evaluation_interval": SCRAPE_INTERVAL,
            },
            "rule_files": [str(self.rules_dir / "*.yml")],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    # fsnotify normally sees a rewrite at once; the refresh
                    # is the fallback.
                    "file_sd_configs": [{"files": [str(self.targets_path)], "refresh_interval": "1s"}],
                }
            ],
        }
        self._write_json(self.config_path, config)
        _process.run([self.promtool, "check", "config", str(self.config_path)], user=None, timeout=60)

    def start(self) -> None:
        if self.running:
            return
        self._proc = _process.spawn(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.storage_dir}",
                f"--web.listen-address={self.host}:{self.port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=info",
            ],
            log=self.log_path,
            user=None,
            cwd=self.base_dir,
        )
        _process.wait_until(
            self._ready,
            proc=self._proc,
            timeout=START_TIMEOUT,
            what=f"Prometheus on port {self.port}",
            log_tail=lambda: _process.tail(self.log_path),
        )

    def stop(self) -> None:
        if self._proc is None:
            return
        _process.terminate(self._proc, signal.SIGTERM, timeout=STOP_TIMEOUT)
        self._proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- what it scrapes ----------------------------------------------------

    def scrape(
        self,
        targets: Sequence[str],
        labels: Mapping[str, str] | None = None,
        *,
        wait: bool = True,
        timeout: float = 30.0,
    ) -> None:
        """Scrape exactly `targets` ("host:port", path /metrics) from now on.

        Prometheus hands discovered targets to its scrapers at most every
        5 s (a fixed throttle), so a new list takes up to that long to be
        picked up. `wait=True` returns once it has; with `wait=False` a test
        can name its endpoint before starting what serves it, and let the
        delay overlap its own start-up (then `wait_for` a series).
        """
        groups = [{"targets": list(targets), "labels": dict(labels or {})}] if targets else []
        self._write_json(self.targets_path, groups)
        if wait:
            wanted = set(targets)
            self._poll(
                lambda: self.active_targets() == wanted, timeout, lambda: f"targets {sorted(wanted)} not picked up"
            )

    def active_targets(self) -> set[str]:
        data = self._api("targets", {"state": "active"})
        return {str(t["labels"].get("instance", "")) for t in data.get("activeTargets", [])}

    def load_rules(self, path: Path, timeout: float = 30.0) -> None:
        """Load a rule file (copied in) and wait until Prometheus has loaded it.

        A file without any group never shows as loaded, so it times out.
        """
        check = subprocess.run(
            [self.promtool, "check", "rules", str(path)], check=False, capture_output=True, text=True
        )
        if check.returncode != 0:
            raise PrometheusError(f"promtool check rules {path}:\n{check.stdout}{check.stderr}")
        loaded = self.rules_dir / f"{path.stem}.yml"
        shutil.copyfile(path, loaded)
        self.reload()
        self._poll(lambda: str(loaded) in self._rule_files(), timeout, lambda: f"rules of {path} not loaded")

    def reset(self) -> None:
        """Forget the previous test: no targets, no rule files."""
        self.scrape([], wait=False)
        removed = False
        for rules in self.rules_dir.glob("*.yml"):
            rules.unlink()
            removed = True
        if removed:
            self.reload()

    def reload(self) -> None:
        if self._proc is None:
            raise PrometheusError("Prometheus is not running")
        os.kill(self._proc.pid, signal.SIGHUP)

    # -- queries ------------------------------------------------------------

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query: the result vector, each {"metric": {...}, "value": [ts, "v"]}."""
        data = self._api("query", {"query": promql})
        if data.get("resultType") not in ("vector", "scalar"):
            raise PrometheusError(f"{promql!r} gave a {data.get('resultType')}, not an instant vector")
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def query_value(self, promql: str) -> float | None:
        """The single value of `promql` now, None when the result is empty."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"{promql!r} has {len(result)} series, expected one: {result}")
        return float(result[0]["value"][1])

    def wait_for(
        self, promql: str, predicate: Callable[[float], bool] = lambda _: True, timeout: float = 30.0
    ) -> float:
        """Poll `promql` until it has one value that satisfies `predicate`; return that value."""
        seen: list[float | None] = [None]

        def ok() -> bool:
            seen[0] = self.query_value(promql)
            return seen[0] is not None and predicate(seen[0])

        self._poll(ok, timeout, lambda: f"{promql!r} never satisfied the condition (last value {seen[0]})")
        assert seen[0] is not None
        return seen[0]

    # -- internals ----------------------------------------------------------

    def _api(self, endpoint: str, params: Mapping[str, str]) -> dict[str, Any]:
        url = f"{self.url}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{endpoint} {dict(params)}: {body.get('errorType')}: {body.get('error')}")
        return dict(body["data"])

    def rule_groups(self) -> list[dict[str, Any]]:
        """The loaded rule groups as the API reports them: each rule's health, last evaluation, state."""
        return list(self._api("rules", {}).get("groups", []))

    def _rule_files(self) -> set[str]:
        return {str(g["file"]) for g in self._api("rules", {}).get("groups", [])}

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _poll(self, ready: Callable[[], bool], timeout: float, explain: Callable[[], str]) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.running:
                raise PrometheusError(f"Prometheus exited\n{_process.tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{explain()} within {timeout:.0f}s\n{_process.tail(self.log_path)}")
            time.sleep(0.1)

    @staticmethod
    def _write_json(path: Path, value: object) -> None:
        # Write-then-rename: Prometheus must never read a half-written file.
        staging = path.with_name(path.name + ".new")
        staging.write_text(json.dumps(value, indent=1))
        os.replace(staging, path)

    def __repr__(self) -> str:
        return f"PrometheusServer(port={self.port}, base_dir={str(self.base_dir)!r})"


def start_prometheus(workdir: Path) -> PrometheusServer:
    """Generate a config under `workdir` (created if needed) and start a server."""
    reason = missing_reason()
    if reason is not None:
        raise RuntimeError(reason)
    binary, promtool = find_prometheus(), find_promtool()
    assert binary is not None and promtool is not None
    server = PrometheusServer(binary, promtool, Path(workdir))
    server.init()
    try:
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server
