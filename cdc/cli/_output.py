"""What the commands share on the command line: the errors they refuse with, tables, --json, sizes,
confirmations, name checks."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click
import orjson
import psycopg

from .. import names
from ..admin import AdminError
from ..core.flusher import FlushAborted
from ..core.outbox import OutboxSchemaError
from ..core.transactions import TransactionError
from ..errors import UserError
from ..lsn import LsnError
from ..pg.replication import ReplicationError
from ..pgoutput import PgOutputError
from ..pgoutput.framing import ReplicationProtocolError
from ..sink.base import SinkError

F = TypeVar("F", bound=Callable[..., Any])

# Errors that mean "cannot do what was asked": one line on stderr, exit 1 (cdc verify: 2), no traceback.
USER_ERRORS = (
    UserError, SinkError, FlushAborted, LsnError, OutboxSchemaError,
    ReplicationError, ReplicationProtocolError, TransactionError, PgOutputError, psycopg.Error,
)

json_option = click.option("--json", "as_json", is_flag=True, help="Report as one JSON document on stdout.")
yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed off a terminal).")


def emit_json(data: Any) -> None:
    click.echo(orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS).decode())


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Aligned columns, headers first; None prints empty."""
    text = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]
    for line in [list(headers), *text]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())


def human_bytes(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def human_seconds(s: float | None) -> str:
    if s is None:
        return "unknown"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{s / 60:.1f}min"
    if s < 86400:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def stdin_is_tty() -> bool:
    return sys.stdin.isatty()


def confirm(question: str, *, yes: bool, refusal: str) -> None:
    """Go on if --yes, or the person at the terminal says yes; otherwise AdminError (exit 1, nothing done)."""
    if yes:
        return
    if not stdin_is_tty():
        raise AdminError(f"{refusal}: not a terminal, so nothing can confirm it; pass --yes to go ahead")
    if not click.confirm(question, default=False, err=True):
        raise AdminError("not confirmed: nothing was changed")


def slot_arg(value: str) -> str:
    try:
        return names.slot_name(value)
    except names.NameError_ as exc:
        raise AdminError(str(exc)) from None


def ident_arg(value: str, what: str) -> str:
    try:
        return names.identifier(value, what)
    except names.NameError_ as exc:
        raise AdminError(str(exc)) from None


def table_arg(value: str, default_schema: str) -> tuple[str, str]:
    """``table`` or ``schema.table``, each part a plain identifier."""
    schema, dot, table = value.rpartition(".")
    if not dot:
        schema = default_schema
    return ident_arg(schema, "schema"), ident_arg(table, "table")
