"""MetricSet: the metrics the rules derive from events, for one scope (all time or a window)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from attrs import define, field

from twisted_rta.aggregation.batch import BatchLayout, BatchSummary, layout_for
from twisted_rta.aggregation.metrics import (
    Counter,
    CounterFamily,
    Histogram,
    Metric,
    MetricSnapshot,
    Unique,
)
from twisted_rta.aggregation.rules import (
    EVENTS_BY_TYPE,
    GENERIC_METRICS,
    TOTAL_EVENTS,
    UNIQUE_SESSIONS,
    UNIQUE_USERS,
    Rules,
)
from twisted_rta.events.model import Event


@define
class MetricSet:
    """The rule-driven metrics of one scope, with bounded dimensions.

    One class serves the all-time totals and every window, so a window carries exactly the
    global names. Like the seed service, ``total_events``, ``events_by_type:*``,
    ``unique_users`` and ``unique_sessions`` appear with the first event (the uniques even
    when empty); every other metric appears with its first contribution. ``metrics`` is the
    live name -> metric map: read it, never mutate it.
    """

    rules: Rules
    max_dimension_values: int
    lg_k: int
    metrics: dict[str, Metric] = field(init=False, factory=dict)
    _families: dict[str, CounterFamily] = field(init=False)
    _layout: BatchLayout = field(init=False)
    # The layout's families resolved to this set's objects.
    _family_channels: tuple[tuple[CounterFamily, int], ...] = field(init=False)
    _by_type: CounterFamily = field(init=False)
    # Held directly so the hot path skips name lookups; published with the first event.
    _total: Counter = field(init=False, factory=Counter)
    _users: Unique = field(init=False)
    _sessions: Unique = field(init=False)
    _published: bool = field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self._families = {
            base: CounterFamily(base, self.max_dimension_values, self.metrics)
            for base in self.rules.dimension_bases()
        }
        self._layout = layout_for(self.rules)
        self._family_channels = tuple(
            (self._families[base], channel) for base, channel in self._layout.families
        )
        self._by_type = self._families[EVENTS_BY_TYPE]
        self._users = Unique.with_lg_k(self.lg_k)
        self._sessions = Unique.with_lg_k(self.lg_k)

    # -- reading ------------------------------------------------------------------------

    @property
    def total_events(self) -> int:
        return self._total.count

    @property
    def unique_users(self) -> int:
        return self._users.estimate

    @property
    def unique_sessions(self) -> int:
        return self._sessions.estimate

    @property
    def overflow(self) -> int:
        """Events (or merged counts) routed into any ``<base>:__other__``."""
        return sum(family.overflow for family in self._families.values())

    def overflow_by_base(self) -> dict[str, int]:
        return {base: family.overflow for base, family in self._families.items()}

    @property
    def published(self) -> bool:
        """Whether the generic metrics are in ``metrics`` (they appear with the first event)."""
        return self._published

    def snapshot(self, prefix: str | None = None) -> dict[str, MetricSnapshot]:
        """Snapshots sorted by name, optionally only names starting with ``prefix``."""
        metrics = self.metrics
        names = sorted(name for name in metrics if prefix is None or name.startswith(prefix))
        return {name: metrics[name].snapshot(name) for name in names}

    def changed_since(self, since: float) -> dict[str, Metric]:
        """Independent copies of the metrics updated at or after ``since``."""
        return {
            name: metric.copy()
            for name, metric in self.metrics.items()
            if metric.updated_at >= since
        }

    def updated_since(self, since: float) -> dict[str, Metric]:
        """The live metrics updated at or after ``since`` (not copies: read them before the
        next event is added)."""
        return {name: metric for name, metric in self.metrics.items() if metric.updated_at >= since}

    def copy(self) -> MetricSet:
        """An independent deep copy (same bounds, overflow counts and metrics)."""
        twin = MetricSet(self.rules, self.max_dimension_values, self.lg_k)
        for name, metric in self.metrics.items():
            twin._install(name, metric.copy())
        twin._published = self._published
        for base, family in self._families.items():
            twin._families[base].overflow = family.overflow
        return twin

    # -- ingest (the hot path) ----------------------------------------------------------

    def add(self, event: Event, now: float) -> None:
        self.add_many((event,), now)

    def add_many(self, events: Iterable[Event], now: float) -> None:
        batch = events if isinstance(events, list | tuple) else list(events)
        self.add_summary(BatchSummary.of(batch, self._layout), now)

    def add_summary(self, summary: BatchSummary, now: float, *, families: bool = True) -> None:
        """Add a summarised batch: the result of adding its events one by one, with one
        update per metric and distinct value instead of one per event. With ``families``
        False the counter families the rules' dimensions feed are left out (another set
        counts them, to be taken with ``take_family_counts``).

        One difference: metrics new in this batch enter ``metrics`` metric by metric, not
        event by event, so names of different families may interleave differently. Within
        a family the order is still the admission order, which ``merge`` depends on.
        """
        if not summary.size:
            return
        if not self._published:
            self._publish_generic()
        self._total.increment_times(summary.size, now)
        self._by_type.increment_counts(summary.types, now)
        if summary.users:
            self._users.add_all(summary.users, now)
        if summary.sessions:
            self._sessions.add_all(summary.sessions, now)
        # No kind checks: Rules gives each name one kind, and merge and restore reject any
        # other kind under a rule's name, so a found metric is the right kind.
        layout = self._layout
        for event_type, n in summary.types.items():
            name = layout.counters.get(event_type)
            if name is not None:
                self._metric(name, Counter).increment_times(n, now)  # type: ignore[union-attr]
        # A metric appears with its first contribution: empty channels create nothing.
        tallies = summary.tallies
        for name, channel in layout.uniques:
            members = tallies[channel]
            if members:
                # Each distinct member once (a tally's keys): a repeat changes no sketch.
                self._metric(name, self._new_unique).add_all(members, now)  # type: ignore[union-attr]
        if families:
            for family, channel in self._family_channels:
                counts = tallies[channel]
                if counts:
                    family.increment_counts(counts, now)
        for name, channel in layout.sums:
            amounts = summary.amounts[channel]
            if amounts:
                self._metric(name, Counter).increment_each(amounts, now)  # type: ignore[union-attr]
        for name, channel in layout.histograms:
            amounts = summary.amounts[channel]
            if amounts:
                self._metric(name, Histogram).observe_all(amounts, now)  # type: ignore[union-attr]

    # -- counter families counted by another set -----------------------------------------

    @property
    def dimension_overflow(self) -> int:
        """Overflow of the counter families the rules' dimensions feed (not events_by_type)."""
        return sum(family.overflow for family, _ in self._family_channels)

    def take_family_counts(self, source: MetricSet, taken: dict[str, dict[str, int]]) -> None:
        """Count what the dimension-fed families of ``source`` (same rules) have counted
        beyond ``taken`` (base -> value -> count already taken; updated here), as if their
        increments had been made here (see ``CounterFamily.take_counts``)."""
        for family, _ in self._family_channels:
            family.take_counts(source._families[family.base], taken.setdefault(family.base, {}))

    def add_unheld_counts(self, summary: BatchSummary, holder: MetricSet, now: float) -> None:
        """Add to the dimension-fed families the values of ``summary`` that ``holder``'s
        families (same rules) have no counter of their own for: what it routed to its
        bucket."""
        for family, channel in self._family_channels:
            unheld = holder._families[family.base].unheld(summary.tallies[channel])
            if unheld:
                family.increment_counts(unheld, now)

    # -- checkpoints --------------------------------------------------------------------

    def load(
        self,
        metrics: Iterable[tuple[str, Metric]],
        overflow_by_base: Mapping[str, int],
        *,
        published: bool,
    ) -> None:
        """Become the set a checkpoint was taken of: take ``metrics`` themselves (no bounds,
        no copies) in their original order, which decides what later merges admit, with
        each family's overflow count. Only for an empty set; a family the rules do not
        declare raises ValueError."""
        if self.metrics or self._published:
            raise ValueError("only an empty metric set can be loaded")
        unknown = sorted(set(overflow_by_base) - set(self._families))
        if unknown:
            raise ValueError(f"no counter family {unknown[0]!r} in these rules")
        for name, metric in metrics:
            self._install(name, metric)
        self._published = published
        for base, overflow in overflow_by_base.items():
            self._families[base].overflow = overflow

    def _metric(self, name: str, create: Callable[[], Metric]) -> Metric:
        metric = self.metrics.get(name)
        if metric is None:
            metric = self.metrics[name] = create()
        return metric

    def _new_unique(self) -> Unique:
        return Unique.with_lg_k(self.lg_k)

    def _publish_generic(self) -> None:
        self.metrics[TOTAL_EVENTS] = self._total
        self.metrics[UNIQUE_USERS] = self._users
        self.metrics[UNIQUE_SESSIONS] = self._sessions
        self._published = True

    # -- combining ----------------------------------------------------------------------

    def merge(self, other: Mapping[str, Metric]) -> None:
        """Merge another set's metrics in, dimensions bounded as if their events were added
        here; nothing of ``other`` is shared or mutated. Raises TypeError on a kind clash
        (names merged before the clash stay merged)."""
        for name, metric in other.items():
            family = self._family_of(name)
            if family is not None:
                if not isinstance(metric, Counter):
                    raise TypeError(f"{name} is a counter, not a {metric.kind}")
                family.merge(name[len(family.base) + 1 :], metric)
                continue
            self._merge_one(name, metric, self._fresh_copy)

    def restore(self, name: str, metric: Metric) -> None:
        """Merge a stored metric into the one of that name (or take a copy of it).

        Unlike ``merge``, a restored dimension value is kept even past the limit: it was
        admitted when it was counted. Raises TypeError when the kind differs from what the
        rules create under ``name``.
        """
        self._merge_one(name, metric, lambda restored: restored.copy())

    def _merge_one(self, name: str, metric: Metric, copy: Callable[[Metric], Metric]) -> None:
        expected = self.rules.expected_kind(name)
        if expected is not None and expected != metric.kind:
            raise TypeError(f"{name} is a {expected}, not a {metric.kind}")
        if name in GENERIC_METRICS and not self._published:
            self._publish_generic()
        existing = self.metrics.get(name)
        if existing is None:
            self._install(name, copy(metric))
        else:
            existing.merge(metric)  # type: ignore[arg-type]  # merge checks the kind

    def _fresh_copy(self, metric: Metric) -> Metric:
        # A sketch from a set with another lg_k is brought to this set's size, as merge does.
        if isinstance(metric, Unique) and metric.lg_k != self.lg_k:
            unique = Unique.with_lg_k(self.lg_k)
            unique.merge(metric)
            return unique
        return metric.copy()

    def _family_of(self, name: str) -> CounterFamily | None:
        base, colon, _ = name.partition(":")
        return self._families.get(base) if colon else None

    def _install(self, name: str, metric: Metric) -> None:
        """Take ``metric`` itself as ``name``: no bounds, no copy."""
        family = self._family_of(name)
        if family is not None and isinstance(metric, Counter):
            family.adopt(name[len(family.base) + 1 :], metric)
            return
        self.metrics[name] = metric
        if name == TOTAL_EVENTS and isinstance(metric, Counter):
            self._total = metric
        elif name == UNIQUE_USERS and isinstance(metric, Unique):
            self._users = metric
        elif name == UNIQUE_SESSIONS and isinstance(metric, Unique):
            self._sessions = metric
