"""The few daemon endpoints the harness reads: counts, queue depth, readiness, /metrics."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from typing import Any


class DaemonApi:
    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get_json(self, path: str) -> Any:
        status, body = self.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body[:300]!r}")
        return json.loads(body)["data"]

    def ready(self) -> bool:
        try:
            return self.get("/ready", timeout=5.0)[0] == 200
        except OSError:
            return False

    def total_events(self) -> int:
        """The daemon's own count of aggregated events (0 before the first one)."""
        status, body = self.get("/api/v1/metrics/total_events")
        if status == 404:
            return 0
        if status != 200:
            raise RuntimeError(f"GET total_events: HTTP {status}: {body[:300]!r}")
        return int(json.loads(body)["data"]["value"])

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.get_json("/api/v1/stats")
        return data

    def drain(self, timeout: float = 180.0) -> int:
        """Wait until everything accepted is aggregated; return ``total_events`` then.

        An empty queue is not enough: a worker aggregates the batch it took in cooperative
        slices after the queue shrank. So also wait for the count to hold still.
        """
        deadline = time.monotonic() + timeout
        previous = -1
        while True:
            depth = int(self.stats()["queue_depth"])
            total = self.total_events()
            if depth == 0 and total == previous:
                return total
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"queue not drained within {timeout:.0f}s "
                    f"(queue_depth {depth}, total_events {total})"
                )
            previous = total if depth == 0 else -1
            time.sleep(0.1)

    def prometheus_samples(self, *names: str) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Samples of the named series from GET /metrics (text format): labels and value."""
        status, body = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"GET /metrics: HTTP {status}")
        wanted = set(names)
        samples: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in names}
        for line in body.decode().splitlines():
            match = _SAMPLE.match(line)
            if match and match["name"] in wanted:
                labels = dict(_LABEL.findall(match["labels"] or ""))
                samples[match["name"]].append((labels, float(match["value"])))
        return samples


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
