"""The query layer: live aggregator state and stored history merged, across every node."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from heapq import nsmallest
from itertools import chain
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.metrics import Counter, Metric
from twisted_rta.aggregation.resolution import Resolution
from twisted_rta.aggregation.windows import WindowSnapshot, window_start
from twisted_rta.ops.status import DaemonStatus, stats_view
from twisted_rta.query.figures import SlidingFigures
from twisted_rta.query.labels import LabelBreakdown, LabelSelection, LabelTally
from twisted_rta.query.listing import MetricPage, PageRequest
from twisted_rta.query.merge import merge_into
from twisted_rta.query.peers import PeerWindows
from twisted_rta.query.slices import STEP_ITEMS, Slicer, StepBudget
from twisted_rta.query.sliding import SLIDING_NAMES, SlidingPoint, SlidingSeries
from twisted_rta.query.timerange import TimeRange, span_range
from twisted_rta.query.views import metric_view_of
from twisted_rta.query.views import tidy_number as tidy_number  # re-exported (web/live.py)
from twisted_rta.store.flush import FlushService
from twisted_rta.store.interface import StoredMetric
from twisted_rta.store.lifecycle import StoreService
from twisted_rta.timefmt import iso_utc

log = Logger()
OTHER = "__other__"


class StoreUnavailable(Exception):
    """History was asked for while the store cannot answer."""


def _wanted(name: str, names: Sequence[str] | None, prefix: str | None) -> bool:
    return (names is None or name in names) and (prefix is None or name.startswith(prefix))


@frozen
class WindowList:
    """The windows ``/api/v1/windows`` lists; ``complete`` is False when only this node's
    own data could be read (the store could not)."""

    windows: list[WindowSnapshot]
    complete: bool


@frozen
class Breakdown:
    items: list[tuple[str, float]]
    other: float
    total: float


class FamilyTally:
    """The values of one counter family ``<base>:<value>`` summed over its sources, in
    slices, then ranked: the top ``limit`` by value (ties by value name) found with a heap
    a step at a time, never a sort of all 10,000 values.

    A name counts only while its first source is a counter (a kind clash is skipped, as
    merging the metrics would)."""

    def __init__(self, base: str) -> None:
        self.prefix = base + ":"
        self.values: dict[str, float] = {}
        self._skipped: set[str] = set()
        self._budget = StepBudget()

    def add_steps(self, metrics: Iterable[tuple[str, Metric]]) -> Iterator[None]:
        """Add each (name, metric) of the family; yields between steps."""
        return self._budget.steps(metrics, self._add)

    def _add(self, chunk: list[tuple[str, Metric]]) -> None:
        values, skipped = self.values, self._skipped
        for name, metric in chunk:
            if name in skipped:
                continue
            known = values.get(name)
            if not isinstance(metric, Counter):
                if known is None:
                    skipped.add(name)
                continue
            values[name] = metric.value if known is None else known + metric.value

    def rank_steps(self, limit: int, result: list[Breakdown]) -> Iterator[None]:
        """Rank the values; appends the ``Breakdown`` to ``result``; yields between steps."""
        cut = len(self.prefix)
        kept_other = 0.0
        ranked_total = 0.0  # every value but the bucket's
        ranked: list[tuple[float, str]] = []
        budget = self._budget
        items = list(self.values.items())
        for start in range(0, len(items), STEP_ITEMS):
            if budget.due():
                yield None
            chunk = items[start : start + STEP_ITEMS]
            candidates = []
            for name, value in chunk:
                key = name[cut:]
                if key == OTHER:
                    kept_other += value
                else:
                    ranked_total += value
                    candidates.append((-value, key))
            ranked = nsmallest(limit, chain(ranked, candidates))
            budget.spend(len(chunk))
        top = [(key, -negated) for negated, key in ranked]
        top_total = sum(value for _, value in top)
        # Counts are whole numbers, exact in a float: the difference is the rest's sum.
        other = kept_other + (ranked_total - top_total)
        result.append(Breakdown(top, other, top_total + other))


@frozen
class QueryService:
    """Reads only. Live state is read on the reactor thread: at once (a consistent snapshot)
    for a few metrics, in slices of a few ms (``slicer``) for the metric list and a family
    breakdown, where each metric is read as it is in its slice. History comes through the
    flush service, which reads the store and its pending windows together, so a window is
    never seen both pending and stored."""

    aggregator: Aggregator
    flush: FlushService
    store_service: StoreService
    resolutions: tuple[Resolution, ...]
    status: Callable[[float], DaemonStatus]
    slicer: Slicer  # long reads run in slices of a few ms
    peers: PeerWindows | None = None  # None: no other node's live windows (no journal)

    @property
    def node_id(self) -> str:
        return self.store_service.store.node_id

    # -- all-time --------------------------------------------------------------------------

    async def totals(
        self, *, names: Sequence[str] | None = None, prefix: str | None = None
    ) -> tuple[dict[str, Metric], bool]:
        """All-time metrics of this node (live) merged with every other node's stored
        totals; the flag is False when other nodes could not be read."""
        merged = self.aggregator.global_metric_copies(names=names, prefix=prefix)
        try:
            rows = await self._store_read(
                lambda store: store.read_totals(
                    exclude_node=self.node_id, names=names, prefix=prefix
                )
            )
        except StoreUnavailable:
            return merged, False
        for row in rows:
            merge_into(merged, row.metric, row.value)
        return merged, True

    async def metrics(self, request: PageRequest) -> MetricPage:
        """The all-time metric list (or the page ``request`` asks for): this node's live
        metrics merged with every other node's stored totals, sorted by name. Run its
        ``steps`` with ``in_slices`` to fill it."""
        try:
            rows = await self._store_read(
                lambda store: store.read_totals(exclude_node=self.node_id, prefix=request.prefix)
            )
            complete = True
        except StoreUnavailable:
            rows, complete = [], False
        return MetricPage(self.aggregator.global_metrics(), rows, complete, request)

    def in_slices(self, steps: Iterator[object]) -> Deferred[None]:
        """Run a step generator (``MetricPage.steps``) in slices of a few ms."""
        return self.slicer.run(steps)

    async def metric(self, name: str, *, shown_as: str | None = None) -> dict[str, Any] | None:
        """The all-time view of ``name`` (named ``shown_as`` when given: an alias asked)."""
        merged, _ = await self.totals(names=[name])
        metric = merged.get(name)
        return None if metric is None else metric_view_of(shown_as or name, metric)

    # -- ranges ----------------------------------------------------------------------------

    async def windows_in(
        self,
        timerange: TimeRange,
        *,
        names: Sequence[str] | None = None,
        prefix: str | None = None,
    ) -> dict[float, dict[str, Metric]]:
        """Every window of the range's resolution: stored rows of all nodes, this node's
        pending (unwritten) windows and its live ones, and the other nodes' live windows
        from their last publication, merged per window start."""
        size = timerange.resolution.size
        start_from, start_to = timerange.start_from, timerange.start_to
        by_start: dict[float, dict[str, Metric]] = {}
        rows, pending = await self.flush.history(
            lambda: self._store_read(
                lambda store: store.read_windows(
                    int(size), start_from, start_to, names=names, prefix=prefix
                )
            ),
            size,
            start_from,
            start_to,
        )
        for row in rows:
            merge_into(by_start.setdefault(float(row.window_start), {}), row.metric, row.value)
        for window in pending:
            self._merge_metrics(
                by_start.setdefault(window.start, {}), window.metrics.items(), names, prefix
            )
        live = self.aggregator.live_windows(size, start_from, start_to, names=names)
        peers = await self._peer_windows(size, start_from, start_to, names)
        for windows in (live, *peers):
            for start, metrics in windows.items():
                self._merge_metrics(
                    by_start.setdefault(start, {}), metrics.items(), names, prefix, owned=True
                )
        return {start: by_start[start] for start in sorted(by_start) if by_start[start]}

    async def metric_over(self, name: str, timerange: TimeRange) -> Metric | None:
        """The metric merged over the windows of the range; an empty metric of its kind
        when it is known (some node has it all-time) but the range holds none of it; None
        when no node knows it."""
        windows = await self.windows_in(timerange, names=[name])
        merged: dict[str, Metric] = {}
        for metrics in windows.values():
            if name in metrics:
                merge_into(merged, name, metrics[name])
        found = merged.get(name)
        if found is not None:
            return found
        known, _ = await self.totals(names=[name])
        existing = known.get(name)
        return None if existing is None else type(existing)()  # empty, of the same kind

    async def series(
        self, name: str, timerange: TimeRange, *, shown_as: str | None = None
    ) -> list[dict[str, Any]]:
        """A point per window of the range holding ``name`` (its views named ``shown_as``
        when given: an alias asked)."""
        windows = await self.windows_in(timerange, names=[name])
        shown = shown_as or name
        return [
            {"start": iso_utc(start), "metric": metric_view_of(shown, metrics[name])}
            for start, metrics in windows.items()
            if name in metrics
        ]

    async def breakdown(
        self, base: str, timerange: TimeRange | None, limit: int
    ) -> tuple[Breakdown, bool] | None:
        """The top values of the family ``base`` (all-time, or over the range) and whether
        every node could be read; None when the family is unknown: the rules declare no
        such family and no node has a metric ``<base>:<value>``. A known family with no
        data (in the range) has no items."""
        prefix = base + ":"
        declared = self.aggregator.rules.family(base) is not None
        tally = FamilyTally(base)
        if timerange is None:
            try:
                rows = await self._store_read(
                    lambda store: store.read_totals(exclude_node=self.node_id, prefix=prefix)
                )
                complete = True
            except StoreUnavailable:
                rows, complete = [], False
            live = self.aggregator.global_metrics()
            names = list(live)  # names are only added: the list stays valid across slices
            if not declared and not rows and not any(n.startswith(prefix) for n in names):
                return None
            sources = chain(
                ((name, live[name]) for name in names if name.startswith(prefix)),
                ((row.metric, row.value) for row in rows),
            )
        else:
            complete = True
            windows = await self.windows_in(timerange, prefix=prefix)
            if not declared and not any(windows.values()):
                seen, _ = await self.totals(prefix=prefix)
                if not seen:
                    return None
            sources = chain.from_iterable(metrics.items() for metrics in windows.values())
        result: list[Breakdown] = []
        await self.slicer.run(chain(tally.add_steps(sources), tally.rank_steps(limit, result)))
        return result[0], complete

    # -- labelled rule metrics ---------------------------------------------------------------

    async def selected(self, selection: LabelSelection, timerange: TimeRange | None) -> Metric:
        """The series ``selection`` takes merged into one (all-time, or over the range); an
        empty metric of the family's kind when none has data."""
        if timerange is None:
            merged, _ = await self.totals(prefix=selection.prefix)
            return selection.merged(merged.items())
        windows = await self.windows_in(timerange, prefix=selection.prefix)
        return selection.merged(chain.from_iterable(m.items() for m in windows.values()))

    async def selected_series(
        self, selection: LabelSelection, timerange: TimeRange
    ) -> list[tuple[float, Metric]]:
        """Per window start with data, the series ``selection`` takes merged into one."""
        windows = await self.windows_in(timerange, prefix=selection.prefix)
        points = []
        for start, metrics in windows.items():
            chosen = [(name, metric) for name, metric in metrics.items() if selection.takes(name)]
            if chosen:
                points.append((start, selection.merged(chosen)))
        return points

    async def breakdown_by(
        self, selection: LabelSelection, by: str, timerange: TimeRange | None, limit: int
    ) -> tuple[LabelBreakdown, bool]:
        """The selected series grouped by the label ``by`` (its own filter ignored), the
        top ``limit`` groups ranked (all-time, or over the range), and whether every node
        could be read."""
        sources: Iterable[tuple[str, Metric]]
        if timerange is None:
            merged, complete = await self.totals(prefix=selection.prefix)
            sources = merged.items()
        else:
            windows = await self.windows_in(timerange, prefix=selection.prefix)
            complete = True
            sources = chain.from_iterable(m.items() for m in windows.values())
        tally = LabelTally(selection, by)
        await self.slicer.run(tally.add_steps(sources))
        return tally.result(limit), complete

    # -- this node -------------------------------------------------------------------------

    def stats(self, now: float) -> dict[str, Any]:
        """This node's figures for ``/api/v1/stats``, from the one status snapshot."""
        return stats_view(self.status(now))

    async def windows(self, now: float) -> WindowList:
        """The windows this node wrote recently (the last ``keep_recent``), then those open
        (finest first, then by start; a coarse window counts as open once a finer open
        window lies in it, before it holds anything itself), each with every node's data
        for it: stored rows, pending windows, live state (a coarse window with the finer
        open ones inside it) and other nodes' publications, as a range query reads them.
        When the store cannot be read: the windows as this node holds them, ``complete``
        False."""
        recent = self.flush.recently_closed()
        open_ = self.aggregator.open_windows()
        listed = [(w.resolution, w.start, w.end, True) for w in recent]
        listed += [(size, start, start + size, False) for size, start in self._open_keys(open_)]
        try:
            merged = await self._windows_of(listed, now)
        except StoreUnavailable:
            return WindowList([*(w.snapshot() for w in recent), *open_], complete=False)
        windows = []
        for size, start, end, closed in listed:
            metrics = merged.get(size, {}).get(start, {})
            snapshots = {name: metrics[name].snapshot(name) for name in sorted(metrics)}
            windows.append(WindowSnapshot(size, start, end, snapshots, closed=closed))
        return WindowList(windows, complete=True)

    def _open_keys(self, open_: Sequence[WindowSnapshot]) -> list[tuple[float, float]]:
        """(size, start) of the open windows and of every coarser window holding one."""
        keys = set()
        for window in open_:
            keys.add((window.resolution, window.start))
            for resolution in self.resolutions:
                if resolution.size > window.resolution:
                    keys.add((resolution.size, window_start(window.start, resolution.size)))
        return sorted(keys)

    async def sliding(
        self, spec: SlidingFigures, ends: Sequence[float], now: float
    ) -> tuple[list[SlidingPoint], bool]:
        """The figures of ``spec`` over the span ending at each of ``ends`` (step
        boundaries, oldest first), from the finest windows of every node read once and
        computed in slices; the flag is False when the spans reach past the finest
        resolution's retention."""
        if not ends:
            return [], True
        timerange = span_range(self.resolutions[0], ends[0] - spec.size, ends[-1], now=now)
        windows = await self.windows_in(timerange, names=SLIDING_NAMES)
        series = SlidingSeries(spec, windows)
        await self.slicer.run(series.steps(ends))
        return series.points, timerange.complete

    # -- helpers ---------------------------------------------------------------------------

    async def _windows_of(
        self, listed: list[tuple[float, float, float, bool]], now: float
    ) -> dict[float, dict[float, dict[str, Metric]]]:
        """Per resolution of ``listed`` (size, start, ...), the merged windows of the span
        from its first listed start to its last listed end (one read per resolution)."""
        spans: dict[float, tuple[float, float]] = {}
        for size, start, end, _ in listed:
            low, high = spans.get(size, (start, end))
            spans[size] = (min(low, start), max(high, end))
        by_size = {resolution.size: resolution for resolution in self.resolutions}
        merged: dict[float, dict[float, dict[str, Metric]]] = {}
        for size, (start, end) in spans.items():
            resolution = by_size.get(size)
            if resolution is not None:  # (a window of a size no longer configured: none)
                merged[size] = await self.windows_in(span_range(resolution, start, end, now=now))
        return merged

    async def _peer_windows(
        self, size: float, start_from: float, start_to: float, names: Sequence[str] | None
    ) -> list[dict[float, dict[str, Metric]]]:
        if self.peers is None:
            return []
        try:
            return await self.peers.live_windows(size, start_from, start_to, names=names)
        except Exception as error:
            log.warn("reading other nodes' publications failed: {error}", error=str(error))
            raise StoreUnavailable(f"store read failed: {error}") from error

    async def _store_read(self, read: Any) -> list[StoredMetric]:
        if not self.store_service.opened:
            raise StoreUnavailable(f"store not open: {self.store_service.last_error}")
        try:
            return list(await read(self.store_service.store))
        except Exception as error:
            log.warn("store read failed: {error}", error=str(error))
            raise StoreUnavailable(f"store read failed: {error}") from error

    @staticmethod
    def _merge_metrics(
        target: dict[str, Metric],
        metrics: Iterable[tuple[str, Metric]],
        names: Sequence[str] | None,
        prefix: str | None,
        *,
        owned: bool = False,
    ) -> None:
        for name, metric in metrics:
            if _wanted(name, names, prefix):
                merge_into(target, name, metric if owned else metric.copy())
