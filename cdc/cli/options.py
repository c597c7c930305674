"""Options of the commands, each defined once: a Settings field's option comes from the field (cdc/settings.py).

Every option also reads a CDC_* environment variable, shown in --help. Each
names its own: the group's auto_envvar_prefix would give a subcommand's
options CDC_RUN_..., CDC_SLOT_DROP_... and so on.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

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


class Lines(click.ParamType[str, Any]):
    """Text that repeats; its environment variable holds one value per line, since a key=value DSN
    (``host=a port=5432``) has spaces in it. Blank lines are skipped."""

    name = "text"

    def split_envvar_value(self, rv: str) -> list[str]:
        return [line.strip() for line in rv.splitlines() if line.strip()]


_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Settings)}


def cdc_option(*flags: str, **attrs: Any) -> Callable[[F], F]:
    """``click.option`` that also reads CDC_<FIRST FLAG>, shown in --help."""
    name = flags[0].split("/")[0].lstrip("-").replace("-", "_").upper()
    attrs.setdefault("envvar", f"CDC_{name}")
    attrs.setdefault("show_envvar", True)
    return click.option(*flags, **attrs)


def settings_option(name: str, *, help: str | None = None) -> Callable[[F], F]:
    """The option of Settings field ``name``, as the field defines it (``help`` may say it for one command)."""
    f = _FIELDS[name]
    meta = f.metadata
    attrs: dict[str, Any] = {"default": f.default}
    minimum, maximum = meta["minimum"], meta["maximum"]
    if minimum is not None:
        attrs["type"] = (click.IntRange(min=int(minimum), max=maximum) if type(f.default) is int
                         else Finite(min=minimum, max=maximum))
    if meta["multiple"]:
        attrs.update(multiple=True, type=Lines(), metavar="DSN" if name.endswith("dsns") else "TEXT")
    if meta["show_default"]:
        attrs["show_default"] = True
    flags = meta["flags"] or (f"--{name.replace('_', '-')}",)
    return cdc_option(*flags, name, envvar=list(meta["envvars"]) or f"CDC_{name.upper()}",
                      help=help or meta["help"], **attrs)


def settings_options(*names: str, help: dict[str, str] | None = None) -> Callable[[F], F]:
    """``settings_option`` for each of ``names``, in that order in --help."""

    def decorate(command: F) -> F:
        for name in reversed(names):
            command = settings_option(name, help=(help or {}).get(name))(command)
        return command

    return decorate


_SHARED: tuple[Callable[[F], F], ...] = (
    settings_option("pg_dsn"),
    settings_option("sink_url"),
    cdc_option("--clickhouse-password-file", type=click.Path(dir_okay=False, path_type=Path),
               help="Read the ClickHouse password from this file. CDC_CLICKHOUSE_PASSWORD also works."),
    settings_options("slot", "publication", "outbox_schema", "outbox_table", "sink_table", "sink_cluster"),
    cdc_option("--log-format", type=click.Choice(["auto", "json", "console"]), default="auto", show_default=True,
               help="auto: JSON unless stderr is a terminal."),
    cdc_option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
               show_default=True, help="Least severe log level shown."),
)


def shared_options(command: F) -> F:
    """Add the options every command shares; the command receives the frozen Settings as ``settings`` (also in
    ctx.obj), made from them and from any Settings-field option of its own (``settings_options``)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        fields = {name: kwargs.pop(name) for name in list(kwargs) if name in _FIELDS}
        settings = build_settings(
            fields, password_file=kwargs.pop("clickhouse_password_file"), log_format=kwargs.pop("log_format"),
            log_level=kwargs.pop("log_level"),
        )
        click.get_current_context().obj = settings
        return command(*args, settings=settings, **kwargs)

    for decorate in reversed(_SHARED):
        wrapper = decorate(wrapper)
    return wrapper  # type: ignore[return-value]


def build_settings(fields: dict[str, Any], *, password_file: Path | None, log_format: str, log_level: str) -> Settings:
    password = os.environ.get("CDC_CLICKHOUSE_PASSWORD")
    if password_file is not None:
        try:
            password = password_file.read_text().strip()
        except OSError as exc:
            raise click.UsageError(f"cannot read the ClickHouse password file: {exc.strerror}") from None
    fields["pg_dsn"] = fields.get("pg_dsn") or ""
    fields["sink_url"] = fields.get("sink_url") or ""
    standby_passwords = tuple(dsn_password(dsn) for dsn in fields.get("standby_dsns", ()))
    configure(fmt=log_format, level=log_level,
              secrets=(dsn_password(fields["pg_dsn"]), password, _url_password(fields["sink_url"]),
                       *standby_passwords))
    try:
        return Settings(**fields, sink_password=password)
    except (NameError_, ValueError) as exc:
        raise click.UsageError(str(exc)) from None


def _url_password(url: str | None) -> str | None:
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


def require_sink(settings: Settings) -> str:
    if not settings.sink_url:
        raise click.UsageError("no ClickHouse URL: pass --clickhouse-url or set CDC_CLICKHOUSE_URL")
    return settings.sink_url


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
