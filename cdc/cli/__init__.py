"""The ``cdc`` command line: one group, one module per command family."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from .. import __version__
from ._output import USER_ERRORS as _USER_ERRORS


def _refuse(message: str, code: int) -> NoReturn:
    click.echo(f"cdc: error: {' '.join(message.split())}", err=True)
    sys.exit(code)


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        # Each family's module is named after its command, and so is the command in it.
        command = getattr(importlib.import_module(f"{__name__}.{cmd_name}"), cmd_name)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _USER_ERRORS as exc:
            _refuse(str(exc), 1)

    def main(
        self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
        standalone_mode: bool = True, **extra: Any,
    ) -> Any:
        """Usage errors as the one line every refusal is (exit 2), not click's Usage block."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            # Not standalone: click hands us its errors instead of printing them;
            # --help and --version come back as their exit code.
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            if exc.ctx is not None and isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):
                click.echo(exc.ctx.get_help())  # `cdc` or `cdc slot` alone: the help, as before
                sys.exit(0)
            where = exc.ctx.command_path if exc.ctx is not None else "cdc"
            _refuse(f"{exc.format_message().rstrip('.')}; see `{where} --help`", 2)
        except click.ClickException as exc:
            _refuse(exc.format_message(), exc.exit_code)
        except click.Abort:
            _refuse("aborted: nothing was changed", 1)
        sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


@click.group(cls=_Group, context_settings={"auto_envvar_prefix": "CDC", "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cdc")
def cli() -> None:
    """Stream outbox rows from PostgreSQL into ClickHouse through a pgoutput slot.

    Every option can also be set with a CDC_* environment variable (shown in each --help).
    """


# Each command family's module, imported only when that command runs (or when --help lists them all):
# a `cdc run` then pays for the pipeline's imports, not for verify's, demo's or top's.
_COMMANDS = frozenset({
    "run", "migrate", "slot", "publication", "status", "doctor", "outbox", "checkpoint", "backfill", "shards",
    "verify", "top", "demo",
})


def main() -> None:
    cli(prog_name="cdc")
