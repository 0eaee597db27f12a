"""Event-time tumbling windows: keys per resolution, grace, lateness and closing."""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping

from attrs import define, field, frozen

from twisted_rta.aggregation.metrics import (
    Counter,
    CounterFamily,
    Metric,
    MetricSnapshot,
    Unique,
)
from twisted_rta.events import Event

WINDOW_EVENTS = "events"
WINDOW_ACTIVE_USERS = "active_users"
DEFAULT_WINDOW_LG_K = 12


def window_start(timestamp: float, size: float) -> float:
    """The start of the window holding ``timestamp``: a multiple of ``size`` seconds since
    the epoch (UTC-aligned; Python's ``%`` keeps negative timestamps in the right window)."""
    return timestamp - timestamp % size


def _snapshot_metrics(metrics: Mapping[str, Metric]) -> dict[str, MetricSnapshot]:
    return {name: metrics[name].snapshot(name) for name in sorted(metrics)}


@frozen
class WindowSnapshot:
    """A read-only view of one window for the query layer."""

    resolution: float
    start: float
    end: float
    metrics: dict[str, MetricSnapshot]
    closed: bool = False


@frozen
class ClosedWindow:
    """A window handed to the flush sink; the aggregator keeps no reference to its metrics.

    ``late`` marks a delta of events that arrived after the window was closed (or after its
    close time had passed): the sink must merge it into the stored window (inserting it if
    absent), never report it as a new close.
    """

    resolution: float
    start: float
    end: float
    metrics: Mapping[str, Metric]
    late: bool = False

    @property
    def events_count(self) -> int:
        counter = self.metrics.get(WINDOW_EVENTS)
        return counter.count if isinstance(counter, Counter) else 0

    @property
    def active_users(self) -> int:
        users = self.metrics.get(WINDOW_ACTIVE_USERS)
        return users.estimate if isinstance(users, Unique) else 0

    def snapshot(self) -> WindowSnapshot:
        return WindowSnapshot(
            self.resolution, self.start, self.end, _snapshot_metrics(self.metrics), closed=True
        )


@define
class Window:
    """One open window: ``events``, bounded ``events:<type>`` and ``active_users``."""

    resolution: float
    start: float
    end: float
    metrics: dict[str, Metric]
    types: CounterFamily
    _events: Counter
    _active_users: Unique

    @classmethod
    def create(
        cls, resolution: float, start: float, max_dimension_values: int, lg_k: int
    ) -> Window:
        events = Counter()
        users = Unique.with_lg_k(lg_k)
        metrics: dict[str, Metric] = {WINDOW_EVENTS: events, WINDOW_ACTIVE_USERS: users}
        types = CounterFamily(WINDOW_EVENTS, max_dimension_values, metrics)
        return cls(resolution, start, start + resolution, metrics, types, events, users)

    def add(self, event: Event, now: float) -> None:
        self._events.increment(now)
        self.types.increment(event.type, now)
        if event.user_id:
            self._active_users.add(event.user_id, now)

    def snapshot(self) -> WindowSnapshot:
        metrics = _snapshot_metrics(self.metrics)
        return WindowSnapshot(self.resolution, self.start, self.end, metrics)

    def close(self, late: bool) -> ClosedWindow:
        return ClosedWindow(self.resolution, self.start, self.end, self.metrics, late)


@define
class WindowSeries:
    """All windows of one resolution.

    Lateness without scans or reopening: ``closed_through`` is the ``now - grace`` of the
    latest close, and every window ending at or before it has been closed (or was due with
    no events). An event for such a window goes into a late-delta window instead, emitted
    once by the next close and then forgotten, so each open window is closed exactly once.
    """

    resolution: float
    grace: float
    max_dimension_values: int
    lg_k: int = DEFAULT_WINDOW_LG_K
    closed_through: float = -math.inf
    late_events: int = 0
    # Overflow of windows already handed out, so stats stay cumulative.
    closed_overflow: int = 0
    _open: dict[float, Window] = field(factory=dict)
    # Starts of open windows: the earliest is always at hand, so closing never scans
    # far-future windows.
    _starts: list[float] = field(factory=list)
    _late: dict[float, Window] = field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if not self.resolution > 0:
            raise ValueError(f"window size must be positive, got {self.resolution!r}")
        if not self.grace >= 0:
            raise ValueError(f"grace must be >= 0, got {self.grace!r}")

    @property
    def open_count(self) -> int:
        return len(self._open)

    def add(self, event: Event, now: float) -> bool:
        """Add ``event`` to its window; return True when it was late."""
        ts = event.timestamp
        start = ts - ts % self.resolution  # window_start, inlined on the hot path
        window = self._open.get(start)
        if window is not None:
            window.add(event, now)
            return False
        if start + self.resolution <= self.closed_through:
            window = self._late.get(start)
            if window is None:
                window = self._late[start] = self._new_window(start)
            window.add(event, now)
            self.late_events += 1
            return True
        window = self._open[start] = self._new_window(start)
        heapq.heappush(self._starts, start)
        window.add(event, now)
        return False

    def close_due(self, now: float) -> tuple[list[ClosedWindow], list[ClosedWindow]]:
        """Close every window with ``end + grace <= now``; return (due, late deltas)."""
        watermark = now - self.grace
        due: list[ClosedWindow] = []
        starts = self._starts
        while starts and starts[0] + self.resolution <= watermark:
            due.append(self._close_open(heapq.heappop(starts)))
        self.closed_through = max(self.closed_through, watermark)
        return due, self._drain_late()

    def close_all(self, now: float) -> tuple[list[ClosedWindow], list[ClosedWindow]]:
        """Close every open window and late delta (shutdown); return (open ones, late)."""
        starts = sorted(self._starts)
        self._starts.clear()
        closed = [self._close_open(start) for start in starts]
        # Events arriving afterwards must not reopen what was just reported.
        last_end = starts[-1] + self.resolution if starts else -math.inf
        self.closed_through = max(self.closed_through, now - self.grace, last_end)
        return closed, self._drain_late()

    def open_windows(self) -> list[Window]:
        return [self._open[start] for start in sorted(self._open)]

    def pending_overflow(self) -> int:
        """Dimension overflow counted in windows not yet closed."""
        windows = [*self._open.values(), *self._late.values()]
        return sum(window.types.overflow for window in windows)

    def _new_window(self, start: float) -> Window:
        return Window.create(self.resolution, start, self.max_dimension_values, self.lg_k)

    def _close_open(self, start: float) -> ClosedWindow:
        window = self._open.pop(start)
        self.closed_overflow += window.types.overflow
        return window.close(late=False)

    def _drain_late(self) -> list[ClosedWindow]:
        late = [self._late[start].close(late=True) for start in sorted(self._late)]
        self.closed_overflow += sum(window.types.overflow for window in self._late.values())
        self._late.clear()
        return late
