"""The query layer: JSON-ready views of live aggregator state and recent closed windows."""

from __future__ import annotations

from typing import Any

from attrs import frozen

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.metrics import MetricSnapshot
from twisted_rta.aggregation.windows import WindowSnapshot
from twisted_rta.logs import iso_utc
from twisted_rta.queue import IntakeQueue
from twisted_rta.store.interface import WindowStore


def tidy_number(value: Any) -> Any:
    """Integral floats print as integers (``1010``, not ``1010.0``) like the Go service did."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def metric_view(snapshot: MetricSnapshot) -> dict[str, Any]:
    view = snapshot.as_dict(iso_utc)
    for key in ("value", "sum", "min", "max"):
        if key in view:
            view[key] = tidy_number(view[key])
    return view


def window_view(window: WindowSnapshot) -> dict[str, Any]:
    return {
        "resolution_seconds": tidy_number(window.resolution),
        "start": iso_utc(window.start),
        "end": iso_utc(window.end),
        "closed": window.closed,
        "metrics": {name: metric_view(snapshot) for name, snapshot in window.metrics.items()},
    }


@frozen
class QueryService:
    """Reads only; every view is built synchronously on the reactor thread, so it is a
    consistent snapshot (no worker can interleave an update half-way)."""

    aggregator: Aggregator
    store: WindowStore
    queue: IntakeQueue

    def metrics(self, prefix: str | None = None) -> dict[str, dict[str, Any]]:
        return {
            name: metric_view(snapshot)
            for name, snapshot in self.aggregator.metrics(prefix).items()
        }

    def metric(self, name: str) -> dict[str, Any] | None:
        snapshot = self.aggregator.metric(name)
        return None if snapshot is None else metric_view(snapshot)

    def stats(self, now: float) -> dict[str, Any]:
        stats = self.aggregator.stats(now)
        return {
            "total_events": stats.total_events,
            "unique_users": stats.unique_users,
            "unique_sessions": stats.unique_sessions,
            "metrics_count": stats.metrics_count,
            "active_windows": stats.active_windows,
            "late_events": stats.late_events,
            "dimension_overflow": stats.dimension_overflow,
            "queue_depth": self.queue.depth,
            "queue_capacity": self.queue.capacity,
            "uptime_seconds": round(stats.uptime_seconds, 3),
        }

    def windows(self) -> list[dict[str, Any]]:
        closed = [window.snapshot() for window in self.store.recent()]
        open_ = self.aggregator.open_windows()
        return [window_view(window) for window in [*closed, *open_]]
