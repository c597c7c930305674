"""Options shared by every command, defined once. Each also reads a CDC_* environment variable."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..logs import configure
from ..lsn import LsnError, parse_lsn
from ..names import NameError_
from ..redact import dsn_password
from ..settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


class Finite(click.FloatRange):
    """A FloatRange that also refuses nan and inf (which pass its bounds, then break timers and windows)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return number


_SHARED: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--pg-dsn",), dict(envvar="CDC_PG_DSN", help="PostgreSQL connection string (libpq URI or key=value). "
                         "Put the password in PGPASSWORD or ~/.pgpass rather than here.")),
    (("--clickhouse-url",), dict(envvar="CDC_CLICKHOUSE_URL",
                                 help="clickhouse://user@host:9000/database (?secure=1 for TLS).")),
    (("--clickhouse-password-file",), dict(envvar="CDC_CLICKHOUSE_PASSWORD_FILE",
                                           type=click.Path(dir_okay=False, path_type=Path),
                                           help="Read the ClickHouse password from this file. "
                                                "CDC_CLICKHOUSE_PASSWORD also works.")),
    (("--slot",), dict(envvar="CDC_SLOT", default="cdc_outbox", show_default=True, help="Replication slot.")),
    (("--publication",), dict(envvar="CDC_PUBLICATION", default="cdc_outbox", show_default=True,
                              help="Publication of the outbox table.")),
    (("--outbox-schema",), dict(envvar="CDC_OUTBOX_SCHEMA", default="public", show_default=True,
                                help="Schema of the outbox table.")),
    (("--outbox-table",), dict(envvar="CDC_OUTBOX_TABLE", default="outbox", show_default=True,
                               help="Outbox table.")),
    (("--clickhouse-table",), dict(envvar="CDC_CLICKHOUSE_TABLE", default="events", show_default=True,
                                   help="Events table in the URL's database.")),
    (("--log-format",), dict(envvar="CDC_LOG_FORMAT", type=click.Choice(["auto", "json", "console"]),
                             default="auto", show_default=True, help="auto: JSON unless stderr is a terminal.")),
    (("--log-level",), dict(envvar="CDC_LOG_LEVEL", type=click.Choice(["debug", "info", "warning", "error"]),
                            default="info", show_default=True, help="Least severe log level shown.")),
]
_SHARED_NAMES = [names[0].lstrip("-").replace("-", "_") for names, _ in _SHARED]


def shared_options(command: F) -> F:
    """Add the shared options; the command receives the frozen Settings as ``settings`` (also in ctx.obj)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        shared = {name: kwargs.pop(name) for name in _SHARED_NAMES}
        settings = build_settings(**shared)
        click.get_current_context().obj = settings
        return command(*args, settings=settings, **kwargs)

    for names, attrs in reversed(_SHARED):
        wrapper = click.option(*names, show_envvar=True, **attrs)(wrapper)
    return wrapper  # type: ignore[return-value]


def build_settings(
    *, pg_dsn: str | None, clickhouse_url: str | None, clickhouse_password_file: Path | None, slot: str,
    publication: str, outbox_schema: str, outbox_table: str, clickhouse_table: str, log_format: str, log_level: str,
) -> Settings:
    import os

    password = os.environ.get("CDC_CLICKHOUSE_PASSWORD")
    if clickhouse_password_file is not None:
        try:
            password = clickhouse_password_file.read_text().strip()
        except OSError as exc:
            raise click.UsageError(f"cannot read the ClickHouse password file: {exc.strerror}") from None
    configure(fmt=log_format, level=log_level, secrets=(dsn_password(pg_dsn or ""), password, _url_password(clickhouse_url)))
    try:
        return Settings(
            pg_dsn=pg_dsn or "", clickhouse_url=clickhouse_url or "", slot=slot, publication=publication,
            outbox_schema=outbox_schema, outbox_table=outbox_table, clickhouse_table=clickhouse_table,
            clickhouse_password=password,
        )
    except (NameError_, ValueError) as exc:
        raise click.UsageError(str(exc)) from None


def _url_password(url: str | None) -> str | None:
    from urllib.parse import unquote, urlsplit

    if not url:
        return None
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def require_pg(settings: Settings) -> str:
    if not settings.pg_dsn:
        raise click.UsageError("no PostgreSQL DSN: pass --pg-dsn or set CDC_PG_DSN")
    return settings.pg_dsn


def require_clickhouse(settings: Settings) -> str:
    if not settings.clickhouse_url:
        raise click.UsageError("no ClickHouse URL: pass --clickhouse-url or set CDC_CLICKHOUSE_URL")
    return settings.clickhouse_url


def with_changes(settings: Settings, **changes: Any) -> Settings:
    try:
        return dataclasses.replace(settings, **changes)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def lsn_value(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Option callback: refuse a malformed LSN while parsing flags, before any server is touched."""
    if value is None:
        return value
    try:
        parse_lsn(value)
    except LsnError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value.strip()


def lsn_or_current_value(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``lsn_value`` that also takes ``current`` (resolved once connected)."""
    return value if value == "current" else lsn_value(ctx, param, value)
