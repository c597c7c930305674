"""Plant each catalogued defect in a copy of the package: the tests that guard its guarantee must fail.

Every CI run checks the quick subset (fast tests, seconds each); ``pytest -m
mutation`` runs the full check (every test named for each defect, minutes).
A test that passes with the defect in place does not guard what it claims.
Set CDC_MUTATION_REPORT to a file to append each defect's result as JSON.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from catalogue import CATALOGUE, Mutant
from mutate import REPO, imported_from, mutated_copy, patched, run_tests

CAUGHT = {"failed", "error"}


def test_every_defect_still_applies_to_the_code_it_names() -> None:
    names = [m.name for m in CATALOGUE]
    assert len(set(names)) == len(names)
    for mutant in CATALOGUE:
        assert mutant.new != mutant.old and "MUTANT" in mutant.new
        patched(mutant, (REPO / mutant.file).read_text())  # raises while the snippet is not there exactly once
        assert set(mutant.quick) <= set(mutant.must_fail), mutant.name
        for test in mutant.must_fail:
            assert (REPO / test.partition("::")[0]).is_file(), f"{mutant.name}: {test} names no file"


def _check(mutant: Mutant, tests: tuple[str, ...], tmp_path: Path, *, timeout: float) -> None:
    mutated_copy(mutant, tmp_path)
    assert imported_from(tmp_path) == (tmp_path / "cdc" / "__init__.py").resolve(), "the copy was not imported"
    started = time.monotonic()
    outcomes, reasons, output = run_tests(tmp_path, tests, timeout=timeout)
    result = {test: outcomes.get(test, "not run") for test in tests}
    _report(mutant, result, {t: reasons[t] for t in tests if t in reasons}, time.monotonic() - started)
    survived = {test: outcome for test, outcome in result.items() if outcome not in CAUGHT}
    assert not survived, (
        f"with the defect {mutant.name!r} ({mutant.guarantee}) planted, these tests did not fail: "
        f"{survived}\n{output}"
    )


def _report(mutant: Mutant, result: dict[str, str], reasons: dict[str, str], seconds: float) -> None:
    path = os.environ.get("CDC_MUTATION_REPORT")
    if not path:
        return
    line = orjson.dumps({
        "defect": mutant.name, "guarantee": mutant.guarantee, "file": mutant.file, "outcomes": result,
        "reasons": reasons,
        "seconds": round(seconds, 1), "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    with open(path, "ab") as out:
        out.write(line + b"\n")


@pytest.mark.parametrize("mutant", [pytest.param(m, id=m.name) for m in CATALOGUE if m.quick])
def test_quick_mutation_check(mutant: Mutant, tmp_path: Path) -> None:
    _check(mutant, mutant.quick, tmp_path, timeout=600)


@pytest.mark.mutation
@pytest.mark.parametrize("mutant", [pytest.param(m, id=m.name) for m in CATALOGUE])
def test_full_mutation_check(mutant: Mutant, tmp_path: Path) -> None:
    _check(mutant, mutant.must_fail, tmp_path, timeout=3600)
