"""The messages capture.py recorded from real servers, ready for the tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

from cdc.pgoutput import Message, decode

from .capture import DATA_DIR, read_frames


@dataclass(frozen=True)
class Capture:
    file: str
    scenario: str
    server_major: int
    proto_version: int
    binary: bool
    raw: tuple[bytes, ...]
    in_stream: tuple[bool, ...]  # per message: between Stream Start and Stream Stop

    def decoded(self) -> list[Message]:
        return [decode(raw, in_stream=flag) for raw, flag in zip(self.raw, self.in_stream)]


def _stream_context(raw: list[bytes]) -> tuple[bool, ...]:
    """Where each message sits, from the type bytes alone, as a consumer tracks it."""
    flags, inside = [], False
    for message in raw:
        if message[:1] == b"E":
            inside = False
        flags.append(inside and message[:1] != b"E")
        if message[:1] == b"S":
            inside = True
    return tuple(flags)


@cache
def captures() -> tuple[Capture, ...]:
    manifest = json.loads((DATA_DIR / "manifest.json").read_text())
    loaded = []
    for file, entry in sorted(manifest.items()):
        raw = read_frames(DATA_DIR / file)
        loaded.append(Capture(
            file=file,
            scenario=entry["scenario"],
            server_major=int(entry["server_version"].split(".")[0]),
            proto_version=entry["proto_version"],
            binary=entry["options"].get("binary") == "true",
            raw=tuple(raw),
            in_stream=_stream_context(raw),
        ))
    return tuple(loaded)


def of_scenario(scenario: str) -> list[Capture]:
    return [c for c in captures() if c.scenario == scenario]


def all_messages() -> list[tuple[bytes, bool, bool]]:
    """Every distinct captured message: (bytes, in_stream, binary)."""
    seen = {(raw, flag, c.binary) for c in captures() for raw, flag in zip(c.raw, c.in_stream)}
    return sorted(seen)
