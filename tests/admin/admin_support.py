"""Helpers for the DBA command tests: the CLI run in-process (fast), and the shape of a refusal."""

from __future__ import annotations

import os
from typing import Any

from click.testing import CliRunner, Result
from support import Target

from cdc.cli import cli


class Cli:
    """Runs ``cdc`` in this process with the target's environment (like Target.cdc, without the start-up cost)."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def __call__(self, *args: str, input: str | None = None, **env: str) -> Result:
        environment: dict[str, Any] = {k: None for k in os.environ if k.startswith("CDC_")}
        environment.update(self.target.env(**env))
        return CliRunner().invoke(cli, list(args), env=environment, input=input, catch_exceptions=False)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def refused(result: Result, *needles: str, code: int = 1) -> str:
    """The one-line refusal: exit ``code``, last stderr line ``cdc: error: ...`` containing every needle."""
    assert result.exit_code == code, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert lines, result.stdout
    line = lines[-1]
    assert line.startswith("cdc: error: "), result.stderr
    for needle in needles:
        assert needle in line, line
    return line
