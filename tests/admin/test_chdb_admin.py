"""The DBA commands on a chdb:// sink: migrate creates its tables, status and doctor read them once
`cdc run` has let go of the directory, and while it has not they say so in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from admin_support import Cli, ok
from support import Target, checked, insert_events, stop, wait_until

pytest.importorskip("chdb")


@pytest.fixture
def chdb_target(pg_dsn: str, tmp_path: Path) -> Target:
    return Target(pg_dsn, f"chdb://{tmp_path / 'chdb'}")


def test_migrate_status_and_doctor_work_on_a_chdb_directory(chdb_target: Target) -> None:
    run = Cli(chdb_target)
    ok(run("migrate"))
    with chdb_target.pg() as conn:
        insert_events(conn, ["a1", "a2", "a3"])
    checked(chdb_target.cdc("run", "--until-lsn", "current"))
    result = run("status", "--json")
    data = json.loads(result.stdout)
    assert data["clickhouse"]["events"] == 3, data
    assert data["clickhouse"]["high_water_mark"] is not None
    doctor = ok(run("doctor"))
    assert "FAIL" not in doctor.stdout, doctor.stdout


@pytest.mark.single_slot("expects the one problem of the one slot's status report")
def test_status_while_cdc_run_holds_the_directory_names_the_process(chdb_target: Target) -> None:
    run = Cli(chdb_target)
    ok(run("migrate"))
    proc = chdb_target.start("run", "--status-interval", "0.2")
    try:
        with chdb_target.pg() as conn:
            insert_events(conn, ["b1"])
        lsn = chdb_target.current_lsn()
        wait_until(lambda: chdb_target.slot_reached(lsn), 120, "the run to store and acknowledge")
        result = run("status", "--json")
        assert result.exit_code == 2  # critical: the sink cannot be read
        [problem] = json.loads(result.stdout)["problems"]
        assert f"in use by process {proc.pid}" in problem["message"]
        assert "one process at a time" in problem["message"]
        doctor = run("doctor")
        assert doctor.exit_code != 0
        assert "FAIL  clickhouse              chDB directory" in doctor.stdout
        assert f"in use by process {proc.pid}" in doctor.stdout and "fix: stop the process named" in doctor.stdout
    finally:
        code, err = stop(proc)
    assert code == 0, err[-2000:]
