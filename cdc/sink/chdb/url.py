"""Where the chDB sink keeps its data: ``chdb:///absolute/dir`` or ``chdb:relative/dir``, ``?database=name``.

chDB is ClickHouse inside this process, so the URL names a directory, not a
server: no host, no user, no password. The directory is created when missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from ..base import SinkConfigError

DEFAULT_DATABASE: Final = "default"
_EXAMPLE: Final = "use chdb:///absolute/directory or chdb:relative/directory (optionally ?database=name)"


@dataclass(frozen=True, slots=True)
class ChdbTarget:
    path: Path  # absolute
    database: str
    url: str  # as given, normalised: safe for messages (there is no secret in it)

    @property
    def address(self) -> str:
        return str(self.path)


def parse_chdb_url(url: str) -> ChdbTarget:
    """The directory and database of a ``chdb:`` URL; SinkConfigError says how to write one."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        raise SinkConfigError(f"cannot read the chDB URL: {_EXAMPLE}") from None
    if parts.scheme.lower() != "chdb":
        raise SinkConfigError(f"a chDB URL starts with chdb: ({_EXAMPLE})")
    if parts.netloc not in ("", "localhost"):
        raise SinkConfigError(
            f"chDB URL {url.strip()!r} names a host ({parts.netloc}); chDB runs inside cdc: {_EXAMPLE}"
        )
    raw = unquote(parts.path)
    if not raw or raw == "/":
        raise SinkConfigError(f"chDB URL {url.strip()!r} names no directory: {_EXAMPLE}")
    database = DEFAULT_DATABASE
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key != "database" or not value:
            raise SinkConfigError(f"chDB URL parameter {key!r} is not understood: {_EXAMPLE}")
        database = value
    path = Path(raw).expanduser().absolute()
    text = f"chdb://{path}" + ("" if database == DEFAULT_DATABASE else f"?database={database}")
    return ChdbTarget(path=path, database=database, url=text)
