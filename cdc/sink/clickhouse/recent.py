"""The dedup window's ids read back from the sink a block at a time, oldest first (``recent_unique_id_blocks``).

A full window holds a million ids: read as one result, they would sit in memory
as a list, row tuples and strings beside the window being rebuilt. Streamed,
memory holds one block; the query (cdc/sink/clickhouse/streams.py) sorts the
newest rows oldest first on the server so that the client can feed them
straight into the window. They come as the server's bytes, in the server's
columns: the window fingerprints bytes, and neither decoding them to text nor
turning blocks into rows would leave anything it uses.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from contextlib import closing
from typing import Final

from .connection import Connection

__all__ = ["ID_BLOCK", "recent_id_blocks"]

# Rows per block: ~4 MB of ids at a time.
ID_BLOCK: Final = 65536


def recent_id_blocks(
    conn: Connection, query: str, max_count: int, max_age_seconds: float
) -> Generator[Sequence[bytes], None, None]:
    """The ids ``query`` selects (the newest ``max_count`` inserted in the last ``max_age_seconds``), in blocks,
    each id as its UTF-8 bytes."""
    since = int(time.time() - max_age_seconds)
    params = {"since": max(since, 0), "limit": int(max_count)}
    # closing(): a caller that stops early must free the connection now, not when
    # the inner generator happens to be collected.
    with closing(conn.column_blocks(query, params, block_rows=ID_BLOCK)) as blocks:
        for columns in blocks:
            yield columns[0]
