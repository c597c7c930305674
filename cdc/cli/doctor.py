"""``cdc doctor``: every precondition as PASS / WARN / FAIL, with the fix. Exit 1 when anything FAILs."""

from __future__ import annotations

import sys

import click

from ..admin.doctor import FAIL, run_checks
from ..settings import Settings
from ._output import emit_json, json_option
from .options import Finite, settings_options, shared_options


@click.command()
@shared_options
@click.option("--timeout", type=Finite(min=1), default=10.0, show_default=True,
              help="Seconds to wait for each server.")
@settings_options("standby_dsns")
@json_option
def doctor(settings: Settings, timeout: float, as_json: bool) -> None:
    """Check every precondition of `cdc run` on both servers; each problem comes with the SQL or setting that
    fixes it. Read-only. Exit 1 when any check FAILs (WARNs alone exit 0). On a PostgreSQL 17+ primary with
    physical standbys it also checks the failover chain (docs/ha.md)."""
    checks = run_checks(settings, timeout=timeout)
    failed = any(c.status == FAIL for c in checks)
    if as_json:
        emit_json({"ok": not failed, "checks": [c.as_dict() for c in checks]})
    else:
        width = max(len(c.check) for c in checks)
        for c in checks:
            click.echo(f"{c.status}  {c.check.ljust(width)}  {c.detail}")
            if c.fix:
                click.echo(f"      {' ' * width}  fix: {c.fix}")
    sys.exit(1 if failed else 0)
