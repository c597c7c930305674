"""``cdc verify``: reconcile the outbox with ClickHouse; ``--repair`` delivers what ClickHouse lacks.

Exit 0: they agree (rows in flight aside); 1: they differ; 2: it cannot tell,
or cannot compare at all (one ``cdc: error:`` line says why).
"""

from __future__ import annotations

import sys

import click

from ..admin.repair import repair as repair_rows
from ..admin.verify import Verification, VerifyOptions
from ..admin.verify_report import UNKNOWN
from ..errors import ReconcileError
from ..logs import get_logger
from ..lsn import LsnError, parse_lsn
from ..settings import Settings
from ._output import USER_ERRORS, confirm, emit_json, json_option, yes_option
from ._progress import Progress
from .options import require_pg, require_sink, settings_options, shared_options


@click.command()
@shared_options
@click.option("--since", metavar="TIMESTAMP", help="Check the outbox rows created from then on (as PostgreSQL "
              "reads a timestamptz; without a zone, UTC). Default: everything the outbox still holds.")
@click.option("--from-lsn", metavar="LSN", help="Check the rows committed at or after LSN (the slot must still "
              "hold it).")
@click.option("--wait", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to wait for `cdc run` to deliver what was committed before the check began, "
                   "and to read what the slot still holds.")
@click.option("--samples", type=click.IntRange(min=0), default=10, show_default=True,
              help="How many missing, unexpected and in-flight unique_ids to name.")
@click.option("--repair", is_flag=True, help="Deliver the missing rows (from the same snapshot, through the same "
              "path as cdc run), never a second copy of a stored one.")
@click.option("--delete-unexpected", is_flag=True, help="With --repair: also delete from ClickHouse the rows in "
              "scope that no outbox row explains (asks first on a terminal).")
@settings_options("batch_rows", help={"batch_rows": "Rows per ClickHouse INSERT when repairing."})
@yes_option
@json_option
def verify(settings: Settings, since: str | None, from_lsn: str | None, wait: float, samples: int, repair: bool,
           delete_unexpected: bool, yes: bool, as_json: bool) -> None:
    """Prove delivery: compare the distinct unique_ids of the outbox (what it still holds, or from --since /
    --from-lsn) with those in ClickHouse's events and dead-letter tables, by buckets of counts and checksums
    that each server computes, then name the missing and unexpected ids. Rows not yet delivered are in flight,
    not missing. Exit 0 agree, 1 differ, 2 cannot tell."""
    require_pg(settings)
    require_sink(settings)
    log = get_logger(command="verify")
    try:
        if delete_unexpected and not repair:
            raise ReconcileError("--delete-unexpected goes with --repair")
        options = VerifyOptions(since=since, from_lsn=_lsn(since, from_lsn), wait=wait, samples=samples,
                                keep_missing=repair)
        with Progress("verify", log=log) as progress, Verification(settings, options, log=log,
                                                                   progress=progress) as job:
            report = job.run()
            if repair:
                if delete_unexpected and job.unexpected:
                    if len(job.unexpected) > job.stored.max_delete:
                        raise ReconcileError(
                            f"{len(job.unexpected)} unexpected ids are more than --delete-unexpected removes at once "
                            f"({job.stored.max_delete}): look at them first (cdc verify --json --samples N)")
                    confirm(f"delete {len(job.unexpected)} unexpected unique_ids from {report.clickhouse}?", yes=yes,
                            refusal="--delete-unexpected deletes rows from ClickHouse")
                report.repair = repair_rows(job, delete_unexpected=delete_unexpected, log=log,
                                            progress=progress).as_dict()
    except USER_ERRORS as exc:
        click.echo(f"cdc: error: {' '.join(str(exc).split())}", err=True)
        sys.exit(UNKNOWN)
    if as_json:
        emit_json(report.as_dict())
    else:
        for line in report.lines():
            click.echo(line)
    sys.stdout.flush()
    sys.exit(report.exit_code)


def _lsn(since: str | None, from_lsn: str | None) -> int | None:
    if since is not None and from_lsn is not None:
        raise ReconcileError("give --since or --from-lsn, not both")
    if from_lsn is None:
        return None
    try:
        return parse_lsn(from_lsn)
    except LsnError as exc:
        raise ReconcileError(f"--from-lsn: {exc}") from None
