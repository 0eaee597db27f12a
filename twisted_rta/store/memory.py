"""MemoryWindowStore: the WindowStore contract kept in a dict (``store.url: memory:``).

Nothing survives a restart; useful for throwaway runs and for tests that drive the
daemon on a memory reactor, where a thread pool could never call back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twisted.internet.defer import Deferred, fail, succeed

from twisted_rta.aggregation.metrics import Metric
from twisted_rta.aggregation.windows import ClosedWindow
from twisted_rta.store.interface import TOTALS_RESOLUTION, StoredMetric

Key = tuple[str, int, int, str]  # metric, resolution, window_start, node_id


class MemoryWindowStore:
    def __init__(self, *, node_id: str, rows: dict[Key, Metric] | None = None) -> None:
        self.node_id = node_id
        self.available = True  # tests flip it to simulate an unreachable store
        # Passing one dict to several stores stands in for nodes sharing one database.
        self._rows: dict[Key, Metric] = {} if rows is None else rows

    def open(self) -> Deferred[None]:
        return self._answer(None)

    def load_totals(self) -> Deferred[dict[str, Metric]]:
        totals = {
            key[0]: metric.copy()
            for key, metric in self._rows.items()
            if key[1] == TOTALS_RESOLUTION and key[3] == self.node_id
        }
        return self._answer(totals)

    def write(
        self, windows: Sequence[ClosedWindow], totals: Mapping[str, Metric]
    ) -> Deferred[None]:
        if not self.available:
            return fail(ConnectionError("memory store marked unavailable"))
        for window in windows:
            resolution, start = int(window.resolution), int(window.start)
            for name, metric in window.metrics.items():
                key = (name, resolution, start, self.node_id)
                stored = self._rows.get(key)
                if stored is None:
                    self._rows[key] = metric.copy()
                else:
                    stored.merge(metric)  # type: ignore[arg-type]
        for name, metric in totals.items():
            self._rows[(name, TOTALS_RESOLUTION, 0, self.node_id)] = metric.copy()
        return succeed(None)

    def read_windows(
        self,
        resolution: int,
        start_from: float,
        start_to: float,
        *,
        names: Sequence[str] | None = None,
        prefix: str | None = None,
    ) -> Deferred[list[StoredMetric]]:
        rows = [
            StoredMetric(key[0], key[1], key[2], key[3], metric.copy())
            for key, metric in self._rows.items()
            if key[1] == resolution
            and start_from <= key[2] < start_to
            and _wanted(key[0], names, prefix)
        ]
        return self._answer(rows)

    def read_totals(
        self,
        *,
        exclude_node: str | None,
        names: Sequence[str] | None = None,
        prefix: str | None = None,
    ) -> Deferred[list[StoredMetric]]:
        rows = [
            StoredMetric(key[0], key[1], key[2], key[3], metric.copy())
            for key, metric in self._rows.items()
            if key[1] == TOTALS_RESOLUTION
            and key[3] != exclude_node
            and _wanted(key[0], names, prefix)
        ]
        return self._answer(rows)

    def delete_expired(self, resolution: int, before: float, batch_size: int) -> Deferred[int]:
        expired = [key for key in self._rows if key[1] == resolution and key[2] < before]
        for key in expired:
            del self._rows[key]
        return self._answer(len(expired))

    def check(self) -> Deferred[None]:
        return self._answer(None)

    def close(self) -> Deferred[None]:
        return succeed(None)

    def _answer(self, value: object) -> Deferred:
        if not self.available:
            return fail(ConnectionError("memory store marked unavailable"))
        return succeed(value)


def _wanted(name: str, names: Sequence[str] | None, prefix: str | None) -> bool:
    if names is not None and name not in names:
        return False
    return prefix is None or name.startswith(prefix)
