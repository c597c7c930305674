"""Profile a pipeline drain with py-spy and say where its time goes.

``record`` runs ``py-spy record --format speedscope --threads`` around a
command; ``summarize`` reads the speedscope file back and attributes every
on-CPU sample (py-spy drops idle ones: waiting on a socket or a queue) to one
stage of the pipeline, by the innermost frame that belongs to a known module:

    read loop   cdc/pg/replication.py and cdc/pipeline/* (the stream session)
    decode      cdc/pgoutput/* (the frames of a read, and the messages in them)
    transactions, collector, convert (cdc/core/outbox.py), dedup, buffer, tracker
    sink        cdc/sink/* (column conversion before the INSERT)
    clickhouse  clickhouse_driver/* (serialization of the columns and sending)
    flusher, logging, startup (imports, connection set-up)
    waiting     a leaf blocked in select/wait/sleep (py-spy's idle detection misses some)

Frames of the standard library or of C extensions count towards the stage that
called them (``datetime.fromisoformat`` towards convert, ``hashlib`` towards
dedup). Also lists the top functions by own (self) and inclusive samples.

    python -m bench.profiling summarize profile.speedscope.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# (stage, path fragment): the first fragment found in a frame's file names its stage.
_STAGES: tuple[tuple[str, str], ...] = (
    ("decode", "/cdc/pgoutput/"),
    ("read loop", "/cdc/pg/replication.py"),
    ("read loop", "/cdc/replication/"),
    ("transactions", "/cdc/core/transactions.py"),
    ("transactions", "/cdc/transactions.py"),
    ("collector", "/cdc/core/collector.py"),
    ("collector", "/cdc/collector.py"),
    ("convert", "/cdc/core/outbox.py"),
    ("convert", "/cdc/outbox.py"),
    ("dedup", "/cdc/core/dedup.py"),
    ("dedup", "/cdc/core/_dedup_table.py"),
    ("dedup", "/cdc/dedup.py"),
    ("dedup", "/cdc/_dedup_table.py"),
    ("buffer", "/cdc/core/buffer.py"),
    ("buffer", "/cdc/buffer.py"),
    ("tracker", "/cdc/core/tracker.py"),
    ("tracker", "/cdc/tracker.py"),
    ("sink", "/cdc/sink/"),
    ("clickhouse", "/clickhouse_driver/"),
    ("flusher", "/cdc/core/flusher.py"),
    ("flusher", "/cdc/flusher.py"),
    ("logging", "/structlog/"),
    ("logging", "/cdc/logs.py"),
    ("read loop", "/cdc/pipeline/"),
    ("read loop", "/cdc/pipeline.py"),
    ("read loop", "/cdc/reader.py"),
    ("cli", "/cdc/cli/"),
    ("cli", "/click/"),
)
# Fragments of both layouts: before and after cdc/core/, cdc/pg/ and cdc/pipeline/ (--cdc-ref measures either).
_STARTUP_MARKERS = (
    "<frozen importlib._bootstrap", "/cdc/pg/preflight.py", "/cdc/pg/migrate.py", "/cdc/replication/preflight.py",
    "/cdc/migrate.py",
)


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise RuntimeError("py-spy is not installed: pip install py-spy (or the [bench] extra)")
    return found


def record_argv(out: Path, command: Sequence[str], *, rate: int = 100) -> list[str]:
    # --nonblocking: sampling without pausing the process keeps py-spy from slowing the drain it measures.
    return [py_spy(), "record", "--format", "speedscope", "--threads", "--nonblocking", "--rate", str(rate), "-o", str(out),
            "--", *command]


# A leaf on one of these source lines is blocked in a system call (py-spy does not always
# tell idle from busy there): waiting for the server or for the other thread, not working.
_WAIT_CALLS = ("select.select(", ".wait(", "time.sleep(", "_queue.get(", ".get(timeout", ".put(batch, timeout")


def _blocked(frame: dict[str, Any]) -> bool:
    import linecache

    file, line = frame.get("file") or "", frame.get("line") or 0
    if file.endswith(("/threading.py", "/queue.py", "/selectors.py")):
        return True
    text = linecache.getline(file, int(line)) if line else ""
    return any(call in text for call in _WAIT_CALLS)


def _stage(stack: list[dict[str, Any]]) -> str:
    files = [frame.get("file") or "" for frame in stack]
    if any(marker in f for f in files for marker in _STARTUP_MARKERS):
        return "startup"
    if _blocked(stack[-1]):
        return "waiting"
    for f in reversed(files):  # leaf first
        for stage, fragment in _STAGES:
            if fragment in f:
                return stage
    return "other"


def _short(frame: dict[str, Any]) -> str:
    file = str(frame.get("file") or "?")
    for anchor in ("/cdc/", "/clickhouse_driver/", "/site-packages/", "/lib/python3"):
        if anchor in file:
            file = file[file.index(anchor) + 1:]
            break
    return f"{frame.get('name')} ({file})"


def summarize(path: Path, *, top: int = 15, events: int | None = None, rate: int = 100) -> dict[str, Any]:
    """Stages and top functions of a speedscope profile; with ``events``, also µs of CPU per event."""
    data = json.loads(Path(path).read_text())
    frames: list[dict[str, Any]] = data["shared"]["frames"]
    stages: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    threads: dict[str, Counter[str]] = {}
    total = 0
    for profile in data["profiles"]:
        name = str(profile.get("name", "?"))  # py-spy: Thread 123 "cdc-flusher" (the main thread's name is "")
        label = _thread_label(name)
        per_thread: Counter[str] = Counter()
        for sample in profile["samples"]:  # weights are seconds: every sample counts one
            weight = 1
            stack = [frames[i] for i in sample]  # root first
            # --threads adds a pseudo-frame "thread (tid): name" at the root.
            while stack and str(stack[0].get("name", "")).startswith("thread ("):
                pseudo = str(stack[0]["name"])
                if not label and ": " in pseudo:
                    label = pseudo.split(": ", 1)[1]
                stack = stack[1:]
            if not stack:
                continue
            stage = _stage(stack)
            stages[stage] += weight
            per_thread[stage] += weight
            self_fn[_short(stack[-1])] += weight
            for fn in {_short(f) for f in stack}:
                incl_fn[fn] += weight
            total += weight
        if per_thread:
            threads[label or name] = per_thread

    def pct(counter: Counter[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, samples in counter.most_common():
            entry: dict[str, Any] = {"name": name, "samples": samples, "pct": round(100 * samples / total, 1)}
            if events:
                entry["us_per_event"] = round(samples / rate / events * 1e6, 2)
            out.append(entry)
        return out

    return {
        "file": str(path),
        "samples": total,
        "stages": pct(stages),
        "threads": {t: {"samples": sum(c.values()), "stages": pct(c)} for t, c in threads.items()},
        "top_self": pct(self_fn)[:top],
        "top_inclusive": pct(incl_fn)[:top],
    }


def _thread_label(name: str) -> str:
    return name.split('"')[1] if name.count('"') >= 2 else ""


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"py-spy on-CPU samples: {summary['samples']} ({summary['file']})", "", "stage            % of samples"]
    lines += [f"  {s['name']:<16} {s['pct']:5.1f}%" + (f"  {s['us_per_event']:5.2f} us/event" if "us_per_event" in s else "")
              for s in summary["stages"]]
    for thread, info in summary["threads"].items():
        parts = ", ".join(f"{s['name']} {s['pct']:.1f}%" for s in info["stages"][:8])
        lines.append(f"thread {thread}: {info['samples']} samples (% of all): {parts}")
    lines += ["", "top functions, self:"]
    lines += [f"  {s['pct']:5.1f}%  {s['name']}" for s in summary["top_self"]]
    lines += ["", "top functions, inclusive:"]
    lines += [f"  {s['pct']:5.1f}%  {s['name']}" for s in summary["top_inclusive"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="summarize a py-spy speedscope profile of cdc")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summarize")
    s.add_argument("path", type=Path)
    s.add_argument("--top", type=int, default=15)
    s.add_argument("--json", action="store_true")
    s.add_argument("--events", type=int, help="events the profiled run handled: adds us/event")
    s.add_argument("--rate", type=int, default=100, help="py-spy samples per second of that run")
    args = parser.parse_args(argv)
    summary = summarize(args.path, top=args.top, events=args.events, rate=args.rate)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
