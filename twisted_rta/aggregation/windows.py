"""Event-time tumbling windows of one resolution: keys, grace, lateness and closing."""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Mapping

from attrs import define, field, frozen

from twisted_rta.aggregation.metrics import Counter, Metric, MetricSnapshot, Unique
from twisted_rta.aggregation.metricset import MetricSet
from twisted_rta.aggregation.rules import TOTAL_EVENTS, UNIQUE_USERS, Rules

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

    ``metrics`` has the global metric names (``total_events``, ``unique_users``, ...).
    ``late`` marks a delta of events that reached the window after it was closed: the sink
    must merge it into the stored window (inserting it if absent), never report it as a
    new close.
    """

    resolution: float
    start: float
    end: float
    metrics: Mapping[str, Metric]
    late: bool = False

    @property
    def events_count(self) -> int:
        counter = self.metrics.get(TOTAL_EVENTS)
        return counter.count if isinstance(counter, Counter) else 0

    @property
    def active_users(self) -> int:
        users = self.metrics.get(UNIQUE_USERS)
        return users.estimate if isinstance(users, Unique) else 0

    def snapshot(self) -> WindowSnapshot:
        return WindowSnapshot(
            self.resolution, self.start, self.end, _snapshot_metrics(self.metrics), closed=True
        )


@define
class Window:
    """One window still held by the aggregator (open, or a pending late delta)."""

    resolution: float
    start: float
    end: float
    metrics: MetricSet

    def snapshot(self) -> WindowSnapshot:
        return WindowSnapshot(self.resolution, self.start, self.end, self.metrics.snapshot())

    def close(self, late: bool) -> ClosedWindow:
        return ClosedWindow(self.resolution, self.start, self.end, self.metrics.metrics, late)


@define
class WindowSeries:
    """All windows of one resolution.

    Lateness without scans or reopening: ``closed_through`` is the highest ``now - grace``
    of any close (or the end of the last window ``close_all`` closed), and every window
    ending at or before it has been closed (or was due with no data). Data for such a
    window goes into a late-delta window instead, emitted once by the next close and then
    forgotten, so each (resolution, start) is closed exactly once.
    """

    resolution: float
    grace: float
    rules: Rules
    max_dimension_values: int
    lg_k: int = DEFAULT_WINDOW_LG_K
    closed_through: float = -math.inf
    # Overflow of windows already handed out, so stats stay cumulative.
    closed_overflow: int = 0
    _open: dict[float, Window] = field(factory=dict)
    # Starts of open windows: the earliest is always at hand, so closing never scans
    # far-future windows.
    _starts: list[float] = field(factory=list)
    _late: dict[float, Window] = field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if not (self.resolution > 0 and math.isfinite(self.resolution)):
            raise ValueError(f"window size must be positive and finite, got {self.resolution!r}")
        if not self.grace >= 0:
            raise ValueError(f"grace must be >= 0, got {self.grace!r}")

    @property
    def open_count(self) -> int:
        return len(self._open)

    def window_for(self, start: float) -> tuple[Window, bool]:
        """The window that takes data for ``start`` now, and whether it is a late delta."""
        window = self._open.get(start)
        if window is not None:
            return window, False
        if start + self.resolution <= self.closed_through:
            window = self._late.get(start)
            if window is None:
                window = self._late[start] = self._new_window(start)
            return window, True
        window = self._open[start] = self._new_window(start)
        heapq.heappush(self._starts, start)
        return window, False

    def absorb(self, finer: ClosedWindow) -> bool:
        """Merge a closed finer window (or finer late delta) into the window of this
        resolution holding it; return True when that window was closed (a late delta)."""
        window, late = self.window_for(window_start(finer.start, self.resolution))
        window.metrics.merge(finer.metrics)
        return late

    def close_due(self, now: float) -> list[ClosedWindow]:
        """Close every window with ``end + grace <= now`` and drain the late deltas; the
        result is in start order."""
        watermark = now - self.grace
        due: list[ClosedWindow] = []
        starts = self._starts
        while starts and starts[0] + self.resolution <= watermark:
            due.append(self._close_open(heapq.heappop(starts)))
        self.closed_through = max(self.closed_through, watermark)
        return self._with_late(due)

    def close_all(self, now: float) -> list[ClosedWindow]:
        """Close every open window and late delta (shutdown); the result is in start order."""
        starts = sorted(self._starts)
        self._starts.clear()
        closed = [self._close_open(start) for start in starts]
        # Data arriving afterwards must not reopen what was just reported.
        last_end = starts[-1] + self.resolution if starts else -math.inf
        self.closed_through = max(self.closed_through, now - self.grace, last_end)
        return self._with_late(closed)

    def open_windows(self) -> list[Window]:
        return [self._open[start] for start in sorted(self._open)]

    def pending(self) -> Iterator[Window]:
        """Every window not yet emitted: open ones and late deltas, in no particular order."""
        yield from self._open.values()
        yield from self._late.values()

    def held(self) -> tuple[list[Window], list[Window]]:
        """The open windows and the late deltas, each in the order they were made (the order
        ``pending`` yields them in), for checkpoints."""
        return list(self._open.values()), list(self._late.values())

    def hold(self, start: float, *, late: bool) -> Window:
        """A new empty window at ``start``, held open or as a late delta, for a checkpoint's
        window to be loaded into (in the order ``held`` gave them). ``start`` must not be
        held yet."""
        if start in self._open or start in self._late:
            raise ValueError(f"window {start!r} of size {self.resolution!r} is already held")
        window = self._new_window(start)
        if late:
            self._late[start] = window
        else:
            self._open[start] = window
            heapq.heappush(self._starts, start)
        return window

    def pending_overflow(self) -> int:
        """Dimension overflow counted in windows not yet emitted."""
        return sum(window.metrics.overflow for window in self.pending())

    def _new_window(self, start: float) -> Window:
        metrics = MetricSet(self.rules, self.max_dimension_values, self.lg_k)
        return Window(self.resolution, start, start + self.resolution, metrics)

    def _close_open(self, start: float) -> ClosedWindow:
        window = self._open.pop(start)
        self.closed_overflow += window.metrics.overflow
        return window.close(late=False)

    def _with_late(self, closed: list[ClosedWindow]) -> list[ClosedWindow]:
        """``closed`` (start order) merged with the drained late deltas, by start."""
        if not self._late:
            return closed
        late = [self._late[start].close(late=True) for start in sorted(self._late)]
        self.closed_overflow += sum(window.metrics.overflow for window in self._late.values())
        self._late.clear()
        return sorted([*closed, *late], key=lambda window: window.start)
