"""The ``cdc`` command line: one group, one module per command family."""

from __future__ import annotations

import sys
from typing import Any

import click
import psycopg

from .. import __version__
from ..flusher import FlushAborted
from ..lsn import LsnError
from ..outbox import OutboxSchemaError
from ..pgoutput import PgOutputError
from ..pipeline import PipelineError
from ..replication.connection import ReplicationError
from ..replication.preflight import PreflightError
from ..replication.protocol import ReplicationProtocolError
from ..sink.base import SinkConfigError, SinkError
from ..transactions import TransactionError

# Errors that mean "cannot do what was asked": one line on stderr, exit 1, no traceback.
_USER_ERRORS = (
    PreflightError, PipelineError, SinkConfigError, SinkError, FlushAborted, LsnError, OutboxSchemaError,
    ReplicationError, ReplicationProtocolError, TransactionError, PgOutputError, psycopg.Error,
)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _USER_ERRORS as exc:
            click.echo(f"cdc: error: {' '.join(str(exc).split())}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"auto_envvar_prefix": "CDC", "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cdc")
def cli() -> None:
    """Stream outbox rows from PostgreSQL into ClickHouse through a pgoutput slot.

    Every option can also be set with a CDC_* environment variable (shown in each --help).
    """


def _register() -> None:
    from . import backfill, checkpoint, doctor, migrate, outbox, publication, run, shards, slot, status

    cli.add_command(run.run)
    cli.add_command(migrate.migrate)
    for command in (slot.slot, publication.publication, status.status, doctor.doctor, outbox.outbox,
                    checkpoint.checkpoint, backfill.backfill, shards.shards):
        cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="cdc")
