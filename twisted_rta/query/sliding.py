"""Sliding figures: over the last ``size`` seconds at each ``step`` boundary, from the
finest windows. The value at a boundary ``t`` (a multiple of ``step`` since the epoch)
covers ``[t - size, t)``: ``rate`` the events per second (the windows' ``total_events``
summed, over ``size``), ``unique`` the users (their ``unique_users`` sketches united, never
summed). Both are whole multiples of the finest window (the config checks), so a span is
exactly the finest windows starting in it."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence

from attrs import define, field, frozen
from datasketches import hll_union, tgt_hll_type

from twisted_rta.aggregation.metrics import Counter, Metric, Unique
from twisted_rta.aggregation.rules import TOTAL_EVENTS, UNIQUE_USERS
from twisted_rta.query.figures import Figure, SlidingFigures
from twisted_rta.query.slices import StepBudget

#: The metrics sliding figures read from each finest window.
SLIDING_NAMES = (TOTAL_EVENTS, UNIQUE_USERS)
#: The most finest windows one answer may read over all its points (each point reads its
#: span's windows again: a sketch union is ~5 us per dense sketch).
MAX_SPAN_READS = 100_000


@frozen
class SlidingPoint:
    """The figures of one span ``[start, end)``."""

    start: float
    end: float
    figures: Mapping[str, Figure]


def latest_end(step: float, now: float) -> float:
    """The last step boundary at or before ``now``: the end of the latest completed span."""
    return math.floor(now / step) * step


def step_ends(step: float, start: float, end: float) -> list[float]:
    """The step boundaries in ``[start, end]``, oldest first."""
    first, last = math.ceil(start / step), math.floor(end / step)
    return [k * step for k in range(first, last + 1)]


def span_reads(spec: SlidingFigures, finest: float, points: int) -> int:
    """How many finest windows ``points`` spans of ``spec`` read."""
    return points * round(spec.size / finest)


def union_estimate(uniques: Sequence[Unique]) -> int:
    """The members of ``uniques`` counted once: one sketch's own estimate, or the estimate
    of their union, as the query layer's merge of windows gives it."""
    if not uniques:
        return 0
    if len(uniques) == 1:
        return uniques[0].estimate
    union = hll_union(max(unique.lg_k for unique in uniques))
    for unique in uniques:
        union.update(unique.sketch)
    return round(union.get_result(tgt_hll_type.HLL_8).get_estimate())


def sliding_point(
    spec: SlidingFigures, windows: Mapping[float, Mapping[str, Metric]], end: float
) -> SlidingPoint:
    """``spec``'s figures over ``[end - size, end)`` of ``windows`` (finest, by start)."""
    return SlidingSeries(spec, windows).point(end)


@define
class SlidingSeries:
    """The points of ``spec`` at given ends, over finest windows read once (by start; only
    read, never changed: the spans of neighbouring points share windows)."""

    spec: SlidingFigures
    windows: Mapping[float, Mapping[str, Metric]]
    points: list[SlidingPoint] = field(init=False, factory=list)
    _starts: list[float] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._starts = sorted(self.windows)

    def steps(self, ends: Sequence[float]) -> Iterator[None]:
        """Append the point of each of ``ends`` to ``points``; yields between steps (a step
        reads about ``STEP_ITEMS`` windows)."""
        budget = StepBudget()
        for end in ends:
            if budget.due():
                yield None
            chosen = self._span(end)
            self.points.append(self._point(end, chosen))
            budget.spend(len(chosen) + 1)

    def point(self, end: float) -> SlidingPoint:
        return self._point(end, self._span(end))

    def _span(self, end: float) -> list[Mapping[str, Metric]]:
        """The windows starting in ``[end - size, end)``."""
        starts = self._starts
        low, high = bisect_left(starts, end - self.spec.size), bisect_left(starts, end)
        return [self.windows[starts[i]] for i in range(low, high)]

    def _point(self, end: float, chosen: list[Mapping[str, Metric]]) -> SlidingPoint:
        figures: dict[str, Figure] = {}
        for figure in self.spec.figures:
            if figure == "rate":
                events = sum(
                    metric.value
                    for metrics in chosen
                    if isinstance(metric := metrics.get(TOTAL_EVENTS), Counter)
                )
                figures["rate"] = events / self.spec.size
            elif figure == "unique":
                uniques = [
                    metric
                    for metrics in chosen
                    if isinstance(metric := metrics.get(UNIQUE_USERS), Unique)
                ]
                figures["unique"] = union_estimate(uniques)
        return SlidingPoint(end - self.spec.size, end, figures)
