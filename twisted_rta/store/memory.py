"""MemoryWindowStore: the WindowStore contract kept in a dict (``store.url: memory:``).

Nothing survives a restart; useful for throwaway runs and for tests that drive the
daemon on a memory reactor, where a thread pool could never call back. Everything is per
process, the visitor salts too: two daemons on ``memory:`` derive different visitor ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred, fail, succeed

from twisted_rta.aggregation.metrics import Metric
from twisted_rta.store.interface import (
    TOTALS_RESOLUTION,
    FlushBatch,
    Publication,
    StoredMetric,
    checked_salt,
    salt_periods,
)

Key = tuple[str, int, int, str]  # metric, resolution, window_start, node_id


class MemoryWindowStore:
    """Every call answers at once; ``write`` applies a batch whole or (on a bad batch) not at
    all, like the SQL store's transaction."""

    def __init__(
        self,
        *,
        node_id: str,
        rows: dict[Key, Metric] | None = None,
        marks: dict[str, int] | None = None,
        publications: dict[str, Publication] | None = None,
        salts: dict[int, bytes] | None = None,
    ) -> None:
        self.node_id = node_id
        self.available = True  # tests flip it to simulate an unreachable store
        # Passing the same dicts to several stores stands in for nodes sharing one database.
        self._rows: dict[Key, Metric] = {} if rows is None else rows
        self._marks: dict[str, int] = {} if marks is None else marks
        self._publications: dict[str, Publication] = {} if publications is None else publications
        # Visitor salts by period start, in this process only (no other node sees them).
        self._salts: dict[int, bytes] = {} if salts is None else salts

    def open(self) -> Deferred[None]:
        return self._answer(None)

    def load_totals(self) -> Deferred[dict[str, Metric]]:
        totals = {
            key[0]: metric.copy()
            for key, metric in self._rows.items()
            if key[1] == TOTALS_RESOLUTION and key[3] == self.node_id
        }
        return self._answer(totals)

    def write(self, batch: FlushBatch) -> Deferred[int]:
        """The SQL store's ``write``: windows tagged above this node's mark (all without a
        mark), totals overwritten, publication replaced or deleted, the mark never lowered."""
        if not self.available:
            return fail(ConnectionError("memory store marked unavailable"))
        try:
            batch.check()
            for _, window in batch.windows:
                if window.resolution < 1 or window.resolution != int(window.resolution):
                    raise ValueError(
                        f"window resolution must be whole seconds >= 1, got {window.resolution!r}"
                    )
        except ValueError as e:
            return fail(e)
        windows = [window for _, window in batch.windows]
        if batch.mark is not None:
            committed = self._marks.get(self.node_id, 0)
            windows = [window for tag, window in batch.windows if tag > committed]
            self._marks[self.node_id] = max(committed, batch.mark)
        for window in windows:
            resolution, start = int(window.resolution), int(window.start)
            for name, metric in window.metrics.items():
                key = (name, resolution, start, self.node_id)
                stored = self._rows.get(key)
                if stored is None:
                    self._rows[key] = metric.copy()
                elif stored.kind != metric.kind:
                    self._rows[key] = metric.copy()  # the metric changed kind, as in SQL
                else:
                    stored.merge(metric)  # type: ignore[arg-type]
        for name, metric in batch.totals.items():
            self._rows[(name, TOTALS_RESOLUTION, 0, self.node_id)] = metric.copy()
        if batch.publication is None:
            self._publications.pop(self.node_id, None)
        else:
            self._publications[self.node_id] = Publication(
                self.node_id, float(batch.published_at), bytes(batch.publication)
            )
        return succeed(len(windows))

    def read_mark(self) -> Deferred[int]:
        return self._answer(self._marks.get(self.node_id, 0))

    def read_publications(self, *, exclude_node: str) -> Deferred[list[Publication]]:
        return self._answer(
            [
                publication
                for node_id, publication in sorted(self._publications.items())
                if node_id != exclude_node
            ]
        )

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

    def visitor_salts(
        self, period_starts: Sequence[int], new_salt: Callable[[], bytes], now: float
    ) -> Deferred[dict[int, bytes]]:
        """The stored salt of each period; ``new_salt()`` is stored for those without one.
        Only this process (the stores sharing its ``salts`` dict) sees them; the creation
        time is not kept."""
        if not self.available:
            return fail(ConnectionError("memory store marked unavailable"))
        try:
            periods = salt_periods(period_starts, now)
            fresh = {
                period: checked_salt(new_salt()) for period in periods if period not in self._salts
            }
        except Exception:
            return fail()  # nothing stored, as a failed SQL transaction
        self._salts.update(fresh)
        return succeed({period: self._salts[period] for period in periods})

    def delete_visitor_salts(self, before: int) -> Deferred[int]:
        if not self.available:
            return fail(ConnectionError("memory store marked unavailable"))
        expired = [period for period in self._salts if period < before]
        for period in expired:
            del self._salts[period]
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
