"""pytest plugin for the mutation check's inner runs: each test's outcome, written as JSON at the end."""

from __future__ import annotations

import json
import os

import pytest

_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        _outcomes[report.nodeid] = "failed" if report.when == "call" else "error"
    elif report.skipped:
        _outcomes.setdefault(report.nodeid, "skipped")
    elif report.when == "call":
        _outcomes.setdefault(report.nodeid, "passed")


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("CDC_MUTATION_OUTCOMES")
    if path:
        with open(path, "w") as out:
            json.dump(_outcomes, out)
