"""Rollups: window series of growing resolutions, coarser windows built from closed finer ones."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from itertools import pairwise

from attrs import define, field

from twisted_rta.aggregation.batch import BatchSummary
from twisted_rta.aggregation.metrics import Metric
from twisted_rta.aggregation.metricset import MetricSet
from twisted_rta.aggregation.rules import Rules
from twisted_rta.aggregation.windows import (
    DEFAULT_WINDOW_LG_K,
    ClosedWindow,
    Window,
    WindowSeries,
    WindowSnapshot,
    window_start,
)
from twisted_rta.events.model import Event


def as_sizes(sizes: Iterable[float]) -> tuple[float, ...]:
    """Window sizes as a tuple (a typed attrs converter: plain ``tuple`` loses the type)."""
    return tuple(sizes)


def _check_sizes(_: object, __: object, sizes: tuple[float, ...]) -> None:
    for finer, coarser in pairwise(sizes):
        if not coarser > finer:
            raise ValueError(f"window sizes must be strictly increasing, got {sizes}")
        # Exact, not approximate: a parent's start is computed from its child's start, so
        # a size that only nearly divides would put children across two parents.
        if finer > 0 and coarser % finer != 0:
            raise ValueError(f"window size {coarser} is not a whole multiple of {finer}")


@define
class Rollups:
    """Tumbling windows for each size in ``sizes`` (finest first).

    Events go live only into the finest series. When a finer window is emitted (closed, or
    as a late delta) it is merged into its parent at the next resolution: into the open
    parent (created if need be), or into that level's late delta when the parent has
    already been closed. Each close runs finest to coarsest, so a parent due in the same
    pass as its last child includes it, and every event lands in exactly one emitted row
    per resolution.
    """

    sizes: tuple[float, ...] = field(converter=as_sizes, validator=_check_sizes)
    grace: float
    rules: Rules
    max_dimension_values: int
    lg_k: int = DEFAULT_WINDOW_LG_K
    # Events that reached some resolution after its window closed, each counted once.
    late_events: int = field(init=False, default=0)
    _levels: tuple[WindowSeries, ...] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._levels = tuple(
            WindowSeries(size, self.grace, self.rules, self.max_dimension_values, self.lg_k)
            for size in self.sizes
        )

    @property
    def open_count(self) -> int:
        return sum(level.open_count for level in self._levels)

    @property
    def levels(self) -> tuple[WindowSeries, ...]:
        """The series of each size, finest first (for checkpoints)."""
        return self._levels

    @property
    def overflow(self) -> int:
        """Dimension overflow of every window so far, emitted or not, all resolutions."""
        return sum(level.closed_overflow + level.pending_overflow() for level in self._levels)

    # -- ingest -------------------------------------------------------------------------

    def window_start(self, events: Sequence[Event]) -> float | None:
        """The start of the finest window holding every one of ``events`` (at least one), or
        None when they fall in several (or there are no windows)."""
        if not self._levels:
            return None
        size = self._levels[0].resolution
        stamps = [event.timestamp for event in events]
        # Window starts grow with the timestamp, so the earliest and the latest event decide:
        # two C calls instead of a Python loop over the events (-0.1 us/event).
        low, high = min(stamps), max(stamps)
        start = low - low % size  # window_start, inlined on the hot path
        return start if high - high % size == start else None

    def add_many(
        self,
        events: Sequence[Event],
        now: float,
        summary: BatchSummary | None = None,
        *,
        start: float | None = None,
    ) -> Window | None:
        """Add ``events`` to the finest windows. ``start``, if given, is their
        ``window_start``, and ``summary`` summarises them all: it spares a second pass when
        they fall in one window (the usual case). Returns the window that took them all when
        it is an open one, else None."""
        if not self._levels or not events:
            return None
        finest = self._levels[0]
        if start is None:
            start = self.window_start(events)
        if start is not None:
            window, late = self._add_run(finest, start, events, now, summary)
            return None if late else window
        size = finest.resolution
        n = len(events)
        i = 0
        # Runs of consecutive events in one window go in with one call: a batch usually
        # falls in one or two windows, and the per-call setup then costs nothing per event.
        while i < n:
            ts = events[i].timestamp
            run_start = ts - ts % size
            j = i + 1
            while j < n:
                ts = events[j].timestamp
                if ts - ts % size != run_start:
                    break
                j += 1
            self._add_run(finest, run_start, events[i:j], now, None)
            i = j
        return None

    def _add_run(
        self,
        level: WindowSeries,
        start: float,
        events: Sequence[Event],
        now: float,
        summary: BatchSummary | None,
    ) -> tuple[Window, bool]:
        window, late = level.window_for(start)
        if summary is not None:
            window.metrics.add_summary(summary, now)
        else:
            window.metrics.add_many(events, now)
        if late:
            self.late_events += len(events)
        return window, late

    # -- closing ------------------------------------------------------------------------

    def close_due(self, now: float) -> list[ClosedWindow]:
        """Windows with ``end + grace <= now`` and pending late deltas, every resolution:
        finest first, start order within a resolution."""
        return self._cascade(lambda level: level.close_due(now))

    def close_all(self, now: float) -> list[ClosedWindow]:
        """Every open window and late delta of every resolution (shutdown), same order."""
        return self._cascade(lambda level: level.close_all(now))

    def _cascade(self, close: Callable[[WindowSeries], list[ClosedWindow]]) -> list[ClosedWindow]:
        emitted: list[ClosedWindow] = []
        finer: list[ClosedWindow] = []
        for level in self._levels:
            for child in finer:
                # A late delta's events were counted late when they arrived.
                if level.absorb(child) and not child.late:
                    self.late_events += child.events_count
            finer = close(level)
            emitted.extend(finer)
        return emitted

    # -- reading ------------------------------------------------------------------------

    def open_windows(self) -> list[WindowSnapshot]:
        """Open windows (late deltas are not open), finest resolution first, then by start."""
        return [window.snapshot() for level in self._levels for window in level.open_windows()]

    def live_windows(
        self,
        resolution: float,
        start_from: float,
        start_to: float,
        *,
        names: Collection[str] | None = None,
    ) -> dict[float, dict[str, Metric]]:
        """Data of ``resolution`` windows starting in [start_from, start_to) that is in no
        emitted row of that resolution yet: its open window plus every open window and
        pending late delta of this or a finer resolution inside it. Fresh copies, by start.

        With ``names`` only those metrics are copied and merged (a series reads one metric
        of windows holding thousands); a dimension value asked for by name is then bounded
        only by the values asked for with it, not by the whole window's.
        """
        if resolution not in self.sizes:
            raise ValueError(f"no window resolution {resolution!r}; have {self.sizes}")
        merged: dict[float, MetricSet] = {}
        for level in self._levels[: self.sizes.index(resolution) + 1]:
            for window in level.pending():
                start = window_start(window.start, resolution)
                if not start_from <= start < start_to:
                    continue
                target = merged.get(start)
                if target is None:
                    target = merged[start] = MetricSet(
                        self.rules, self.max_dimension_values, self.lg_k
                    )
                metrics = window.metrics.metrics
                if names is not None:
                    metrics = {name: metrics[name] for name in names if name in metrics}
                target.merge(metrics)
        return {start: merged[start].metrics for start in sorted(merged)}
