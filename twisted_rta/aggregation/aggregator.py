"""Aggregator: feeds the all-time metrics and the rolled-up windows, closes due windows."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from attrs import define, field, frozen

from twisted_rta.aggregation.alltime import AllTime
from twisted_rta.aggregation.batch import BatchPlan, BatchSummary, Skips, plan_for
from twisted_rta.aggregation.metrics import Metric, MetricSnapshot
from twisted_rta.aggregation.metricset import MetricSet
from twisted_rta.aggregation.rollups import Rollups, as_sizes
from twisted_rta.aggregation.rules import DEFAULT_RULES, Rules
from twisted_rta.aggregation.windows import DEFAULT_WINDOW_LG_K, ClosedWindow, WindowSnapshot
from twisted_rta.events.model import Event

DEFAULT_GLOBAL_LG_K = 14


@frozen
class AggregatorStats:
    """Operational counters for /stats; ``metrics_count`` counts global metrics only and
    ``active_windows`` open windows of every resolution (not pending late deltas).

    ``dimension_overflow_by_base`` is the global metrics' overflow per series family
    (``events_by_type`` and every labelled rule metric);
    ``window_dimension_overflow`` the windows' (every resolution, cumulative); and
    ``dimension_overflow`` the sum of both.
    """

    total_events: int
    unique_users: int
    unique_sessions: int
    metrics_count: int
    active_windows: int
    late_events: int
    dimension_overflow: int
    dimension_overflow_by_base: Mapping[str, int]
    window_dimension_overflow: int
    uptime_seconds: float
    rule_skips: Mapping[tuple[str, str], int]  # (rule, reason) -> events skipped
    events_dropped: int  # by drop rules


@define(kw_only=True)
class Aggregator:
    """All-time metrics plus tumbling windows for each size in ``window_sizes``.

    Sizes are strictly increasing, each a whole multiple of the previous one: events go live
    into the finest windows only, and coarser windows are rolled up from closed finer ones
    (see ``Rollups``). Windows carry the same metric names as the all-time set.
    """

    window_sizes: Sequence[float] = field(converter=as_sizes)
    grace: float
    max_dimension_values: int
    started_at: float
    rules: Rules = DEFAULT_RULES
    global_lg_k: int = DEFAULT_GLOBAL_LG_K
    window_lg_k: int = DEFAULT_WINDOW_LG_K

    _all_time: AllTime = field(init=False)
    _plan: BatchPlan = field(init=False)
    # Operational counts since the start (not checkpointed: Prometheus counters may reset).
    _skips: Skips = field(init=False, factory=dict)
    _dropped: int = field(init=False, default=0)
    _windows: Rollups = field(init=False)

    def __attrs_post_init__(self) -> None:
        if not self.grace >= 0:
            raise ValueError(f"grace must be >= 0, got {self.grace!r}")
        if self.max_dimension_values < 0:
            raise ValueError("max_dimension_values must be >= 0")
        self._all_time = AllTime(MetricSet(self.rules, self.max_dimension_values, self.global_lg_k))
        self._plan = plan_for(self.rules)
        self._windows = Rollups(
            self.window_sizes, self.grace, self.rules, self.max_dimension_values, self.window_lg_k
        )

    # -- ingest -------------------------------------------------------------------------

    def add(self, event: Event, now: float) -> None:
        self.add_many((event,), now)

    def add_many(self, events: Iterable[Event], now: float) -> None:
        batch = events if isinstance(events, list | tuple) else list(events)
        if self._plan.drops:
            batch, dropped = self._plan.kept(batch)
            self._dropped += dropped
        # Summarised once for both the all-time set and (usually) the one window it falls in.
        summary = BatchSummary.of(batch, self._plan)
        if summary.skips:
            skips = self._skips
            for skip, n in summary.skips.items():
                skips[skip] = skips.get(skip, 0) + n
        start = self._windows.window_start(batch) if batch else None
        self._all_time.before(start)
        overflow = self._all_time.window_overflow
        window = self._windows.add_many(batch, now, summary, start=start)
        self._all_time.add_summary(summary, window, overflow, now)

    # -- closing ------------------------------------------------------------------------

    def close_due(self, now: float) -> list[ClosedWindow]:
        """Windows with ``end + grace <= now`` and pending late deltas (``late=True``) of
        every resolution, finest first, start order within a resolution. A coarser window
        includes the finer windows closed in the same call."""
        closed = self._windows.close_due(now)
        self._all_time.closed(closed)
        return closed

    def close_all(self, now: float) -> list[ClosedWindow]:
        """Every open window and late delta of every resolution (shutdown), same order;
        nothing stays open, and every event is in exactly one row per resolution."""
        closed = self._windows.close_all(now)
        self._all_time.closed(closed)
        return closed

    # -- reading ------------------------------------------------------------------------

    def metrics(self, prefix: str | None = None) -> dict[str, MetricSnapshot]:
        """Snapshots of global metrics sorted by name, optionally only names with ``prefix``."""
        return self._all_time.current.snapshot(prefix)

    def metric(self, name: str) -> MetricSnapshot | None:
        metric = self._all_time.current.metrics.get(name)
        return None if metric is None else metric.snapshot(name)

    def open_windows(self) -> list[WindowSnapshot]:
        """Open windows ordered by resolution, then start (late deltas are not open)."""
        return self._windows.open_windows()

    def live_windows(
        self,
        resolution: float,
        start_from: float,
        start_to: float,
        *,
        names: Collection[str] | None = None,
    ) -> dict[float, dict[str, Metric]]:
        """Per window start of ``resolution`` in [start_from, start_to), the data not yet in
        any emitted row of that resolution (open windows of it and of finer resolutions,
        pending late deltas), merged into fresh metrics the caller may mutate; only the
        metrics named in ``names`` when given (see ``Rollups.live_windows``). Raises
        ValueError for a resolution that is not configured."""
        return self._windows.live_windows(resolution, start_from, start_to, names=names)

    def stats(self, now: float) -> AggregatorStats:
        all_time = self._all_time.current
        by_base = all_time.overflow_by_base()
        window_overflow = self._windows.overflow
        return AggregatorStats(
            total_events=all_time.total_events,
            unique_users=all_time.unique_users,
            unique_sessions=all_time.unique_sessions,
            metrics_count=len(all_time.metrics),
            active_windows=self._windows.open_count,
            late_events=self._windows.late_events,
            dimension_overflow=sum(by_base.values()) + window_overflow,
            dimension_overflow_by_base=by_base,
            window_dimension_overflow=window_overflow,
            uptime_seconds=now - self.started_at,
            rule_skips=dict(self._skips),
            events_dropped=self._dropped,
        )

    # -- checkpoints (aggregation/state.py) ----------------------------------------------

    @property
    def global_set(self) -> MetricSet:
        """The all-time metric set itself, everything counted (checkpoints read and load it;
        nothing else may)."""
        return self._all_time.current

    @property
    def rollups(self) -> Rollups:
        """The windows of every resolution themselves (checkpoints read and load them)."""
        return self._windows

    # -- persistence of all-time totals -------------------------------------------------

    def global_metrics(self) -> Mapping[str, Metric]:
        """The live all-time metrics by name, to read on the reactor thread and never to
        mutate or keep: names are only ever added, values change with every batch (the
        query layer reads them a slice at a time, listing its names first)."""
        return self._all_time.current.metrics

    def global_metric_states(self) -> dict[str, Metric]:
        """Independent copies of every global metric, by name, for storage."""
        return self._all_time.current.changed_since(float("-inf"))

    def global_metric_copies(
        self, *, names: Sequence[str] | None = None, prefix: str | None = None
    ) -> dict[str, Metric]:
        """Independent copies of the global metrics with one of ``names`` and/or ``prefix``
        (the query layer merges other nodes' totals into them)."""
        metrics = self._all_time.current.metrics
        chosen = (name for name in names if name in metrics) if names is not None else iter(metrics)
        return {
            name: metrics[name].copy()
            for name in chosen
            if prefix is None or name.startswith(prefix)
        }

    def global_changes(self, since: float) -> dict[str, Metric]:
        """The global metrics whose ``updated_at`` (the ``now`` of their latest add; a
        restore keeps the later of the two times) is at or after ``since``, for incremental
        storage. The live metrics, not copies: the flush hands them to ``WindowStore.write``,
        which serialises or copies them before it returns (copying ~30k counters here first
        was a quarter of a flush tick on the reactor thread)."""
        return self._all_time.current.updated_since(since)

    def restore_global(self, name: str, metric: Metric) -> None:
        """Merge a stored all-time metric into the live one of that name (or create it).

        Merging rather than replacing keeps any events counted before the restore.
        Raises TypeError when the kind differs from what the rules create under ``name``.
        """
        self._all_time.current.restore(name, metric)
