"""AllTime: the all-time metric set, its dimension counter families taken from the window."""

from __future__ import annotations

from collections.abc import Sequence

from attrs import define, field

from twisted_rta.aggregation.batch import BatchSummary
from twisted_rta.aggregation.metricset import MetricSet
from twisted_rta.aggregation.windows import ClosedWindow, Window


@define
class AllTime:
    """The all-time metrics, except that the counter families the rules' dimensions feed
    (page views per page, clicks per element: thousands of values) are counted by the open
    window taking the batches and taken from it when the set is read or the window closes.

    Why: counting those values in the window and again all-time was the main cost of a batch
    (a lookup in each of two 10k-counter families per value, mostly cache misses); counting
    them once takes 0.8 us/event (22%) off at 10k pages (``benchmarks/aggregation.py``).

    Exact, not an approximation: the window's counts are taken in its order of admission,
    which is the order the values arrived in, each at the time of its last increment, so
    the families are what counting every batch here would have made of them, including which
    values a full family admits. That holds while the window counts every value under its own
    name and no other window takes a batch in between. So a batch for another window (a late
    one, the previous minute's within its grace) first takes everything the window holds and
    is counted here; the lag resumes with the window's next batch (not after a batch spread
    over several windows, part of which the window counted). Once the window sends a value
    to its bucket (it is full), it is taken from and the families are counted here until a
    fresh window starts.
    """

    metrics: MetricSet
    # The window whose counts are taken (the one the families lag behind, or the last one),
    # what has been taken from it (base -> value -> count), and its event count then: reads
    # with no batch in between take nothing, without walking thousands of counters (~2 ms).
    _source: Window | None = field(default=None, init=False)
    _taken: dict[str, dict[str, int]] = field(factory=dict, init=False)
    _taken_at: int = field(default=0, init=False)
    _lagging: bool = field(default=False, init=False)

    @property
    def current(self) -> MetricSet:
        """The set with everything counted so far (every read goes through this)."""
        if self._lagging:
            self._take()
        return self.metrics

    @property
    def window_overflow(self) -> int:
        """The dimension overflow of the window counts are taken from (0 when none): read it
        before the windows take a batch, pass it to ``add_summary`` after."""
        return 0 if self._source is None else self._source.metrics.dimension_overflow

    def before(self, start: float | None) -> None:
        """Call before the windows take a batch, with the start of the one window it falls in
        (None: several): a batch for another window ends the lag, before it counts there;
        one spread over several windows also forgets the window, whose part of it is then
        counted here."""
        source = self._source
        if source is None or source.start == start:
            return
        if self._lagging:
            self._take()
            self._lagging = False
        if start is None:
            self._source = None

    def add_summary(
        self, summary: BatchSummary, window: Window | None, overflow_before: int, now: float
    ) -> None:
        """Add a batch that ``window`` (an open window) has just taken whole, or (None) that
        went elsewhere; ``before`` was called for it, and ``overflow_before`` is
        ``window_overflow`` from before the windows took it."""
        if window is not None and window is self._source and overflow_before == 0:
            # Every count of the window is taken or waiting: (still, or again) lag behind it.
            self._lagging = True
        elif (
            window is not None
            and window.metrics.total_events == summary.size
            and not window.metrics.dimension_overflow
        ):
            # A fresh window, every value under its own name: lag behind it.
            self._source, self._taken, self._taken_at = window, {}, 0
            self._lagging = True
        else:
            self.metrics.add_summary(summary, now)
            return
        self.metrics.add_summary(summary, now, families=False)
        if window.metrics.dimension_overflow:
            # The window is full: take what it holds (this batch's admitted values are the
            # last it admitted), then count here what it sent to its bucket, and from now on
            # everything.
            self._take()
            self._source, self._lagging = None, False
            self.metrics.add_unheld_counts(summary, window.metrics, now)

    def closed(self, windows: Sequence[ClosedWindow]) -> None:
        """Take everything from the window counts are taken from if it is among ``windows``
        (just closed, their metrics not yet handed on), and forget it."""
        source = self._source
        if source is not None and any(w.metrics is source.metrics.metrics for w in windows):
            if self._lagging:
                self._take()
            self._source, self._lagging = None, False

    def _take(self) -> None:
        window = self._source
        if window is not None and window.metrics.total_events != self._taken_at:
            self.metrics.take_family_counts(window.metrics, self._taken)
            self._taken_at = window.metrics.total_events
