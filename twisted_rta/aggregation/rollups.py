"""Rollups: window series of growing resolutions, coarser windows built from closed finer ones."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise

from attrs import define, field

from twisted_rta.aggregation.batch import BatchSummary
from twisted_rta.aggregation.metrics import Metric
from twisted_rta.aggregation.metricset import MetricSet
from twisted_rta.aggregation.rules import Rules
from twisted_rta.aggregation.windows import (
    DEFAULT_WINDOW_LG_K,
    ClosedWindow,
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

    def add_many(
        self, events: Sequence[Event], now: float, summary: BatchSummary | None = None
    ) -> None:
        """Add ``events`` to the finest windows; ``summary``, if given, summarises them all
        and spares a second pass when they fall in one window (the usual case)."""
        if not self._levels:
            return
        finest = self._levels[0]
        size = finest.resolution
        n = len(events)
        i = 0
        # Runs of consecutive events in one window go in with one call: a batch usually
        # falls in one or two windows, and the per-call setup then costs nothing per event.
        while i < n:
            ts = events[i].timestamp
            start = ts - ts % size  # window_start, inlined on the hot path
            j = i + 1
            while j < n:
                ts = events[j].timestamp
                if ts - ts % size != start:
                    break
                j += 1
            window, late = finest.window_for(start)
            if j - i == n and summary is not None:
                window.metrics.add_summary(summary, now)
            else:
                window.metrics.add_many(events if j - i == n else events[i:j], now)
            if late:
                self.late_events += j - i
            i = j

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
        self, resolution: float, start_from: float, start_to: float
    ) -> dict[float, dict[str, Metric]]:
        """Data of ``resolution`` windows starting in [start_from, start_to) that is in no
        emitted row of that resolution yet: its open window plus every open window and
        pending late delta of this or a finer resolution inside it. Fresh copies, by start.
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
                target.merge(window.metrics.metrics)
        return {start: merged[start].metrics for start in sorted(merged)}
