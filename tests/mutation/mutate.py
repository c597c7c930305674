"""Apply a catalogued defect to a temporary copy of the package and run the tests that must catch it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from catalogue import Mutant

REPO = Path(__file__).resolve().parents[2]
_PLUGIN_DIR = Path(__file__).resolve().parent
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")


class CatalogueOutOfDate(AssertionError):
    """A defect's snippet is not (exactly once) in the code it names: re-point the catalogue entry."""


def patched(mutant: Mutant, text: str) -> str:
    found = text.count(mutant.old)
    if found != 1:
        raise CatalogueOutOfDate(
            f"mutant {mutant.name}: {mutant.file} holds its snippet {found} times, not once; "
            f"re-point it in tests/mutation/catalogue.py. Snippet:\n{mutant.old}"
        )
    return text.replace(mutant.old, mutant.new)


def mutated_copy(mutant: Mutant, root: Path) -> Path:
    """``root``/cdc: the package with the defect applied, laid out as the wheel installs it."""
    package = root / "cdc"
    shutil.copytree(REPO / "cdc", package, ignore=_IGNORED)
    shutil.copytree(REPO / "sql", package / "_sql", ignore=_IGNORED)
    shutil.copytree(REPO / "migrations", package / "_migrations", ignore=_IGNORED)
    target = root / mutant.file
    if not target.is_file():
        raise CatalogueOutOfDate(f"mutant {mutant.name}: {mutant.file} does not exist; re-point it")
    target.write_text(patched(mutant, target.read_text()))
    return package


def _environment(root: Path, outcomes: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The copy comes first on the path of the test run and of every `python -m cdc` it starts.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), str(_PLUGIN_DIR), env.get("PYTHONPATH")]))
    env["CDC_TEST_PG_KINDS"] = "pg18"
    env["CDC_MUTATION_OUTCOMES"] = str(outcomes)
    # A skip must read as "not caught", not be turned into a failure.
    env["CDC_REQUIRE_SERVERS"] = "0"
    env.pop("CI", None)
    return env


def imported_from(root: Path) -> Path:
    """Where ``import cdc`` resolves in the mutated run (it must be the copy)."""
    out = subprocess.run(
        [sys.executable, "-c", "import cdc; print(cdc.__file__)"], cwd=root, env=_environment(root, root / "x"),
        capture_output=True, text=True, timeout=60, check=True,
    )
    return Path(out.stdout.strip()).resolve()


def run_tests(root: Path, tests: Sequence[str], *, timeout: float) -> tuple[dict[str, str], dict[str, str], str]:
    """Run ``tests`` (ids relative to the repository) against the copy in ``root``.

    Returns {test id: outcome}, {test id: why it failed}, and the tail of the output.
    """
    outcomes = root / "outcomes.json"
    # cwd is the copy's root: `python -m` puts it first on sys.path, ahead of the installed package.
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "_outcomes",
            "-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO), *(str(REPO / test) for test in tests),
        ],
        cwd=root, env=_environment(root, outcomes), capture_output=True, text=True, timeout=timeout,
    )
    found = json.loads(outcomes.read_text()) if outcomes.exists() else {"outcomes": {}, "reasons": {}}
    return found["outcomes"], found["reasons"], result.stdout[-6000:] + result.stderr[-3000:]
