"""A live `cdc run --metrics-addr` for the metrics tests, and reading its endpoint."""

from __future__ import annotations

import subprocess
import threading
import urllib.request

import orjson
from prometheus_client.parser import text_string_to_metric_families
from support import CDC, Target, wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample the endpoint serves now: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


class LiveRun:
    """`cdc run` with its metrics on a port the system picks, read from its log."""

    def __init__(self, t: Target, *args: str, **env: str) -> None:
        self.proc = subprocess.Popen(
            [*CDC, "run", "--metrics-addr", "127.0.0.1:0", *args], env=t.env(**env), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        wait_until(lambda: self._served() is not None, 60, "cdc to serve its metrics")
        url = self._served()
        assert url is not None
        self.url = url
        self.address = url.removeprefix("http://").removesuffix("/metrics")

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def records(self, event: str | None = None) -> list[dict[str, object]]:
        found = []
        for line in list(self.lines):
            if line.startswith("{"):
                record = orjson.loads(line)
                if event is None or record.get("event") == event:
                    found.append(record)
        return found

    def _served(self) -> str | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"cdc exited {self.proc.returncode}:\n{self.tail()}")
        served = self.records("serving metrics")
        return str(served[0]["url"]) if served else None

    def samples(self) -> Samples:
        return scrape(self.url)

    def stop(self, timeout: float = 60) -> int:
        self.proc.terminate()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"cdc did not stop within {timeout}s:\n{self.tail()}") from None
        self._reader.join(10)
        return code

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.lines[-lines:])
