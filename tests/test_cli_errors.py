"""A mistake on the command line: one line ``cdc: error: ...`` saying what to do, exit 2, no server touched."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator

import pytest
from support import CDC


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port given as both servers: any connection attempt shows in its backlog."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def _cdc(listener: socket.socket, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    port = listener.getsockname()[1]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CDC_")}
    environment.update(
        CDC_PG_DSN=f"postgresql://cdc@127.0.0.1:{port}/app", CDC_CLICKHOUSE_URL=f"clickhouse://cdc@127.0.0.1:{port}/a",
        CDC_LOG_FORMAT="json", **env,
    )
    return subprocess.run([*CDC, *args], env=environment, capture_output=True, text=True, timeout=60)


def _one_line_refusal(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cdc: error: "), result.stderr
    assert "Usage:" not in result.stderr and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _untouched(listener: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        listener.accept()


@pytest.mark.parametrize(
    ("args", "env", "needles"),
    [
        pytest.param(("run", "--until-lsn", "0/ZZZ"), {}, ("--until-lsn", "'0/ZZZ' is not an LSN"), id="until-lsn"),
        pytest.param(("run", "--from-lsn", "16-B374"), {}, ("--from-lsn", "is not an LSN"), id="from-lsn"),
        pytest.param(("run",), {"CDC_UNTIL_LSN": "soon"}, ("CDC_UNTIL_LSN", "is not an LSN"), id="until-lsn-env"),
        pytest.param(("slot", "advance", "--to-lsn", "x", "--yes"), {}, ("--to-lsn", "is not an LSN"), id="to-lsn"),
        pytest.param(("outbox", "prune", "--older-than", "a week"), {}, ("is not an age",), id="older-than"),
        pytest.param(("run", "--batch-rows", "many"), {}, ("--batch-rows", "'many'"), id="not-a-number"),
        pytest.param(("run", "--retry-max", "nan"), {}, ("--retry-max", "not a finite"), id="nan"),
        pytest.param(("run", "--dedup-window", "99999999999"), {}, ("--dedup-window",), id="too-big"),
        pytest.param(("run", "--batch-row", "5"), {}, ("No such option", "--batch-rows"), id="misspelt-flag"),
        pytest.param(("runn",), {}, ("No such command 'runn'",), id="misspelt-command"),
        pytest.param(("run", "--slot", "Bad-Slot"), {}, ("invalid slot name",), id="bad-name"),
    ],
)
def test_malformed_flags_are_one_line_and_exit_2_before_any_server_is_touched(
    listener: socket.socket, args: tuple[str, ...], env: dict[str, str], needles: tuple[str, ...]
) -> None:
    line = _one_line_refusal(_cdc(listener, *args, **env), *needles)
    # Each says where to look next.
    assert "--help`" in line, line
    _untouched(listener)


def test_help_still_prints_the_usage() -> None:
    result = subprocess.run([*CDC, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("Usage: cdc run [OPTIONS]"), result.stderr
    alone = subprocess.run([*CDC], capture_output=True, text=True, timeout=60)
    assert alone.returncode == 0 and "Commands:" in alone.stdout, alone.stderr
