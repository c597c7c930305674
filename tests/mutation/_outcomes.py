"""pytest plugin for the mutation check's inner runs: each test's outcome, written as JSON at the end."""

from __future__ import annotations

import json
import os

import pytest

_outcomes: dict[str, str] = {}
_reasons: dict[str, str] = {}


def _reason(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = str(getattr(crash, "message", None) or report.longreprtext or "")
    return " ".join(text.split())[:240]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        _outcomes[report.nodeid] = "failed" if report.when == "call" else "error"
        _reasons.setdefault(report.nodeid, _reason(report))
    elif report.skipped:
        _outcomes.setdefault(report.nodeid, "skipped")
    elif report.when == "call":
        _outcomes.setdefault(report.nodeid, "passed")


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("CDC_MUTATION_OUTCOMES")
    if path:
        with open(path, "w") as out:
            json.dump({"outcomes": _outcomes, "reasons": _reasons}, out)
