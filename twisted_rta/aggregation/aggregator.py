"""Aggregator: feeds global metrics and event-time windows, closes due windows."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from attrs import define, field, frozen

from twisted_rta.aggregation.metrics import (
    Counter,
    CounterFamily,
    Histogram,
    Metric,
    MetricSnapshot,
    Unique,
)
from twisted_rta.aggregation.rules import (
    DEFAULT_RULES,
    EVENTS_BY_TYPE,
    TOTAL_EVENTS,
    UNIQUE_SESSIONS,
    UNIQUE_USERS,
    Rules,
    TypeRule,
    as_amount,
)
from twisted_rta.aggregation.windows import (
    DEFAULT_WINDOW_LG_K,
    WINDOW_EVENTS,
    ClosedWindow,
    WindowSeries,
    WindowSnapshot,
)
from twisted_rta.events import Event

M = TypeVar("M", Counter, Unique, Histogram)


@frozen
class AggregatorStats:
    """Operational counters for /stats; ``metrics_count`` counts global metrics only and
    ``active_windows`` open windows of every resolution (not pending late deltas)."""

    total_events: int
    unique_users: int
    unique_sessions: int
    metrics_count: int
    active_windows: int
    late_events: int
    dimension_overflow: int
    dimension_overflow_by_base: Mapping[str, int]
    uptime_seconds: float


@define(kw_only=True)
class Aggregator:
    """Global (since start) metrics plus tumbling windows for each size in ``window_sizes``.

    Like the seed service, ``total_events``, ``events_by_type:*``, ``unique_users`` and
    ``unique_sessions`` appear on the first event (the uniques even if no member was
    added); every other metric appears on its first contribution.
    """

    window_sizes: Sequence[float] = field(converter=tuple)
    grace: float
    max_dimension_values: int
    started_at: float
    rules: Rules = DEFAULT_RULES
    global_lg_k: int = 14
    window_lg_k: int = DEFAULT_WINDOW_LG_K

    _metrics: dict[str, Metric] = field(init=False, factory=dict)
    _series: tuple[WindowSeries, ...] = field(init=False)
    _type_rules: dict[str, TypeRule] = field(init=False)
    _families: dict[str, CounterFamily] = field(init=False)
    # Held directly so the hot path skips name lookups; published on the first event.
    _total: Counter = field(init=False, factory=Counter)
    _users: Unique = field(init=False)
    _sessions: Unique = field(init=False)
    _late_events: int = field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if len(set(self.window_sizes)) != len(self.window_sizes):
            raise ValueError(f"duplicate window sizes: {self.window_sizes}")
        if not self.grace >= 0:
            raise ValueError(f"grace must be >= 0, got {self.grace!r}")
        if self.max_dimension_values < 0:
            raise ValueError("max_dimension_values must be >= 0")
        self._series = tuple(
            WindowSeries(size, self.grace, self.max_dimension_values, self.window_lg_k)
            for size in self.window_sizes
        )
        self._type_rules = self.rules.for_type()
        self._families = {
            base: CounterFamily(base, self.max_dimension_values, self._metrics)
            for base in self.rules.dimension_bases()
        }
        self._users = Unique.with_lg_k(self.global_lg_k)
        self._sessions = Unique.with_lg_k(self.global_lg_k)

    # -- ingest -------------------------------------------------------------------------

    def add(self, event: Event, now: float) -> None:
        self.add_many((event,), now)

    def add_many(self, events: Iterable[Event], now: float) -> None:
        published = TOTAL_EVENTS in self._metrics
        total = self._total
        by_type = self._families[EVENTS_BY_TYPE]
        users = self._users
        sessions = self._sessions
        type_rules = self._type_rules
        series = self._series
        for event in events:
            if not published:
                self._publish_generic()
                published = True
            total.increment(now)
            by_type.increment(event.type, now)
            if event.user_id:
                users.add(event.user_id, now)
            if event.session_id:
                sessions.add(event.session_id, now)
            rule = type_rules.get(event.type)
            if rule is not None:
                self._apply(rule, event, now)
            late = False
            for one in series:
                if one.add(event, now):
                    late = True
            if late:
                self._late_events += 1

    def _apply(self, rule: TypeRule, event: Event, now: float) -> None:
        self._counter(rule.counter).increment(now)
        props = event.properties
        for dim in rule.dimensions:
            value = props.get(dim.property)
            if not isinstance(value, str):
                continue
            if dim.unique is not None:
                self._unique(dim.unique).add(value, now)
            if dim.counter_prefix is not None:
                self._families[dim.counter_prefix].increment(value, now)
        for rule_amount in rule.amounts:
            amount = as_amount(props.get(rule_amount.property))
            if amount is None:
                continue
            if rule_amount.sum_counter is not None:
                self._counter(rule_amount.sum_counter).increment(now, amount)
            if rule_amount.histogram is not None:
                self._histogram(rule_amount.histogram).observe(amount, now)

    def _counter(self, name: str) -> Counter:
        return self._metric(name, Counter, Counter)

    def _unique(self, name: str) -> Unique:
        return self._metric(name, Unique, lambda: Unique.with_lg_k(self.global_lg_k))

    def _histogram(self, name: str) -> Histogram:
        return self._metric(name, Histogram, Histogram)

    def _metric(self, name: str, kind: type[M], create: Callable[[], M]) -> M:
        """Get or create ``name``; a name keeps the kind it was created with."""
        metric = self._metrics.get(name)
        if metric is None:
            metric = self._metrics[name] = create()
        if not isinstance(metric, kind):
            raise TypeError(f"{name} is a {metric.kind}, not a {kind.kind}")
        return metric

    def _publish_generic(self) -> None:
        self._metrics[TOTAL_EVENTS] = self._total
        self._metrics[UNIQUE_USERS] = self._users
        self._metrics[UNIQUE_SESSIONS] = self._sessions

    # -- closing ------------------------------------------------------------------------

    def close_due(self, now: float) -> list[ClosedWindow]:
        """Windows with ``end + grace <= now`` in start order, then pending late deltas."""
        return self._collect([one.close_due(now) for one in self._series])

    def close_all(self, now: float) -> list[ClosedWindow]:
        """Every open window and late delta, exactly once (shutdown); nothing stays open."""
        return self._collect([one.close_all(now) for one in self._series])

    @staticmethod
    def _collect(
        parts: list[tuple[list[ClosedWindow], list[ClosedWindow]]],
    ) -> list[ClosedWindow]:
        def order(window: ClosedWindow) -> tuple[float, float]:
            return window.start, window.resolution

        due = sorted((w for closed, _ in parts for w in closed), key=order)
        late = sorted((w for _, deltas in parts for w in deltas), key=order)
        return due + late

    # -- reading ------------------------------------------------------------------------

    def metrics(self, prefix: str | None = None) -> dict[str, MetricSnapshot]:
        """Snapshots of global metrics sorted by name, optionally only names with ``prefix``."""
        names = sorted(name for name in self._metrics if prefix is None or name.startswith(prefix))
        return {name: self._metrics[name].snapshot(name) for name in names}

    def metric(self, name: str) -> MetricSnapshot | None:
        metric = self._metrics.get(name)
        return None if metric is None else metric.snapshot(name)

    def open_windows(self) -> list[WindowSnapshot]:
        """Open windows ordered by resolution, then start (late deltas are not open)."""
        ordered = sorted(self._series, key=lambda one: one.resolution)
        return [window.snapshot() for one in ordered for window in one.open_windows()]

    def stats(self, now: float) -> AggregatorStats:
        by_base = {base: family.overflow for base, family in self._families.items()}
        by_base[WINDOW_EVENTS] = sum(
            one.closed_overflow + one.pending_overflow() for one in self._series
        )
        return AggregatorStats(
            total_events=self._total.count,
            unique_users=self._users.estimate,
            unique_sessions=self._sessions.estimate,
            metrics_count=len(self._metrics),
            active_windows=sum(one.open_count for one in self._series),
            late_events=self._late_events,
            dimension_overflow=sum(by_base.values()),
            dimension_overflow_by_base=by_base,
            uptime_seconds=now - self.started_at,
        )

    # -- persistence of all-time totals -------------------------------------------------

    def global_metric_states(self) -> dict[str, Metric]:
        """Independent copies of every global metric, by name, for storage."""
        return {name: metric.copy() for name, metric in self._metrics.items()}

    def restore_global(self, name: str, metric: Metric) -> None:
        """Merge a stored all-time metric into the live one of that name (or create it).

        Merging rather than replacing keeps any events counted before the restore.
        Raises TypeError when the kind differs from what the rules create under ``name``.
        """
        expected = self.rules.expected_kind(name)
        if expected is not None and expected != metric.kind:
            raise TypeError(f"{name} is a {expected}, not a {metric.kind}")
        if name in (TOTAL_EVENTS, UNIQUE_USERS, UNIQUE_SESSIONS) and name not in self._metrics:
            self._publish_generic()
        existing = self._metrics.get(name)
        if existing is not None:
            existing.merge(metric)  # type: ignore[arg-type]  # merge checks the kind
            return
        restored = metric.copy()
        base, _, value = name.partition(":")
        family = self._families.get(base)
        if family is not None and isinstance(restored, Counter) and ":" in name:
            family.adopt(value, restored)
        else:
            self._metrics[name] = restored
