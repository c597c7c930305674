"""clickhouse-driver's ``Client``, plus a SELECT streamed a block at a time as columns.

``Client.execute_iter`` streams rows only: for every block it transposes the
columns into row tuples, then yields them one at a time. Rebuilding a full
dedup window reads a million ids, and those two steps cost it as much CPU as
everything else the client does (half the rebuild's client CPU). The driver has
no public streaming call that hands out a block's columns, so ``column_blocks``
reads the result packets the way ``execute_iter`` does and keeps each block's
columns as the driver decoded them. It uses the driver's own query steps
(``disconnect_on_error``, ``send_query``, ``packet_generator``): pyproject.toml
bounds the driver's version to the one tested.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from clickhouse_driver import Client as _DriverClient

__all__ = ["Client"]


class Client(_DriverClient):  # type: ignore[misc]
    def column_blocks(
        self, query: str, params: dict[str, Any] | None, settings: dict[str, Any]
    ) -> Generator[list[Any], None, None]:
        """The result of a SELECT, one server block at a time, each as its list of column values.

        ``settings`` as ``execute_iter`` takes them (``max_block_size`` bounds a block;
        ``strings_as_bytes`` leaves String values as the server's bytes).
        """
        with self.disconnect_on_error(query, settings):
            if params is not None:
                query = self.substitute_params(query, params, self.connection.context)
            self.connection.send_query(query)
            self.connection.send_external_tables(None)
        for packet in self.packet_generator():
            block = getattr(packet, "block", None)
            if block is not None and block.num_rows:
                yield block.get_columns()
