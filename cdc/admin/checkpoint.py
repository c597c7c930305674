"""Checkpoints: where the slot and ClickHouse stood, saved to a file ``cdc run --from-checkpoint`` can resume from.

The file is JSON, UTF-8, one object (``cdc checkpoint save FILE`` writes it
atomically; nothing in it is secret: no password, no full DSN)::

    {
      "format": "cdc-checkpoint",          # always this
      "version": 1,                        # this layout; readers refuse newer ones
      "created_at": "2026-11-24T21:58:27.123456+00:00",
      "server": {                          # which PostgreSQL cluster the LSNs belong to
        "system_identifier": "7441...",    # IDENTIFY_SYSTEM systemid (a string: it is a uint64)
        "timeline": 1,
        "database": "app",
        "host": "db1", "port": 5432, "user": "cdc",
        "version": "18.1"
      },
      "slot": {                            # null when the slot does not exist
        "name": "cdc_outbox",
        "plugin": "pgoutput",
        "confirmed_flush_lsn": "0/1A2B3C8",  # null when invalidated
        "restart_lsn": "0/1A2B000",
        "wal_status": "reserved"
      },
      "clickhouse": {                      # null when no ClickHouse URL was given
        "database": "analytics", "table": "events",
        "high_water_mark": {               # null when the table is empty
          "commit_lsn": "0/1A2B390",       # LSN of the newest stored event's commit record
          "commit_seq": 41,                # its position in that transaction
          "committed_at": "2026-11-24T21:58:26.998001+00:00",
          "origin": "stream"               # or "initial copy" / "backfill": not a WAL position
        }
      },
      "replay_from_lsn": "0/1A2B390"       # what load_checkpoint() returns, as text
    }

``replay_from_lsn`` is the higher of the slot's confirmed_flush_lsn and the
high-water mark's commit_lsn (a synthetic position, see cdc/core/positions.py,
does not count). Every transaction committed before it is in ClickHouse: the slot
acknowledges only what ClickHouse holds, and ClickHouse holds every transaction up
to its high-water mark (the pipeline stores them in commit order). Starting there
re-sends the high-water mark's own transaction whole (its commit record is at that
LSN, and decoding skips only commits before the start), which collapses with what
is stored. It is never below the slot's confirmed position, the oldest a slot can
replay (``cdc run --from-lsn`` refuses older ones); with ``cdc run --retain`` the
slot keeps older WAL, and the high-water mark is the tighter bound.
Readers must ignore keys they do not know; adding keys does not change ``version``.

A sharded outbox's checkpoint has ``"slot": null`` and a ``"shards"`` list, one
object per slot of the generation being streamed: ``slot``, ``shard`` ("2/4"),
``stream``, the slot's ``confirmed_flush_lsn``, ``restart_lsn`` and
``wal_status``, its stream's ``high_water_mark`` (as above) and its own
``replay_from_lsn``; ``cdc run --from-checkpoint`` replays every shard from its
own. The top-level ``replay_from_lsn`` is the lowest of them (a reader that knows
nothing of shards replays every shard from there: more, never less).
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..core import positions
from ..errors import CheckpointError
from ..lsn import LsnError, format_lsn, parse_lsn
from ..pg.identity import ServerIdentity, identify

__all__ = [
    "FORMAT", "VERSION", "CheckpointError", "ServerIdentity", "build", "check_same_server", "identify", "load_checkpoint",
    "load_shard_positions", "read_checkpoint", "replay_from", "save",
]

FORMAT = "cdc-checkpoint"
VERSION = 1


def replay_from(confirmed_flush_lsn: int | None, high_water_lsn: int | None) -> int | None:
    """The LSN to replay from: the higher of the slot's and ClickHouse's positions (synthetic ones ignored)."""
    candidates = [lsn for lsn in (confirmed_flush_lsn, high_water_lsn)
                  if lsn is not None and not positions.is_synthetic(lsn)]
    return max(candidates) if candidates else None


def _replay_of(slot: dict[str, Any] | None, hwm: dict[str, Any] | None) -> int | None:
    confirmed = slot.get("confirmed_flush_lsn") if slot else None
    return replay_from(parse_lsn(confirmed) if confirmed else None, parse_lsn(hwm["commit_lsn"]) if hwm else None)


def build(
    server: ServerIdentity, slot: dict[str, Any] | None, clickhouse: dict[str, Any] | None,
    *, now: datetime | None = None, shards: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``shards``: a sharded outbox's slots (each as ``slot`` is, with ``slot``, ``shard``, ``stream`` and its
    stream's ``high_water_mark``); each gets its own ``replay_from_lsn``."""
    replay = _replay_of(slot, (clickhouse or {}).get("high_water_mark"))
    extra: dict[str, Any] = {}
    if shards is not None:
        own = [_replay_of(s, s.get("high_water_mark")) for s in shards]
        known = [lsn for lsn in own if lsn is not None]
        replay = min(known) if known else None
        extra["shards"] = [dict(s, replay_from_lsn=None if lsn is None else format_lsn(lsn))
                           for s, lsn in zip(shards, own)]
    return {
        "format": FORMAT,
        "version": VERSION,
        "created_at": (now or datetime.now(timezone.utc)).isoformat(),
        "server": {
            "system_identifier": server.system_identifier, "timeline": server.timeline, "database": server.database,
            "host": server.host, "port": server.port, "user": server.user, "version": server.version,
        },
        "slot": slot,
        "clickhouse": clickhouse,
        "replay_from_lsn": format_lsn(replay) if replay is not None else None,
        **extra,
    }


def save(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write atomically (temporary file, fsync, rename): a crash leaves the old file or the new one."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    data = json.dumps(checkpoint, indent=2, sort_keys=False).encode() + b"\n"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror}") from None


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint object, validated; CheckpointError (one line) when it is not a usable checkpoint."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path} is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cdc checkpoint (no \"format\": \"{FORMAT}\")")
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION or version < 1:
        raise CheckpointError(f"checkpoint {path} has version {version!r}; this cdc reads version {VERSION}: upgrade cdc")
    return data


def load_checkpoint(path: str | os.PathLike[str]) -> int:
    """The LSN to replay from (``replay_from_lsn``) as an int; CheckpointError when the file has none."""
    data = read_checkpoint(path)
    text = data.get("replay_from_lsn")
    if not text:
        raise CheckpointError(
            f"checkpoint {path} has no position to replay from (neither a slot nor a streamed event was recorded)"
        )
    try:
        return parse_lsn(str(text))
    except LsnError:
        raise CheckpointError(f"checkpoint {path}: replay_from_lsn {text!r} is not an LSN") from None


def load_shard_positions(path: str | os.PathLike[str]) -> dict[str, int] | None:
    """slot -> LSN to replay each shard from; None for a checkpoint of an unsharded outbox."""
    data = read_checkpoint(path)
    shards = data.get("shards")
    if shards is None:
        return None
    out = {}
    for shard in shards:
        text = shard.get("replay_from_lsn")
        if text:
            try:
                out[str(shard["slot"])] = parse_lsn(str(text))
            except (LsnError, KeyError):
                raise CheckpointError(f"checkpoint {path}: a shard's position {text!r} is not an LSN") from None
    return out


def check_same_server(data: dict[str, Any], system_identifier: str, path: str = "checkpoint") -> None:
    """Refuse a checkpoint taken on another cluster: its LSNs mean nothing here."""
    saved = str((data.get("server") or {}).get("system_identifier") or "")
    if saved and saved != system_identifier:
        raise CheckpointError(
            f"{path} was saved on PostgreSQL cluster {saved}, this is {system_identifier}: its LSNs do not apply here"
        )
