"""The all-time metric list (``GET /api/v1/metrics``): its names in sorted order, a page of
them by cursor, and each metric's view, built a step at a time (see ``query/slices.py``).

The live metrics are read where they are, not copied first (copying 30,000 of them alone
would hold the reactor for tens of milliseconds): a name is never removed, so the names
listed first stay valid, and each view reads its metric as it is in its own step. Ingest
runs between the slices, so two metrics of one answer may be some milliseconds apart, as
they are between two pages; each metric is consistent in itself.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from attrs import define, field, frozen

from twisted_rta.aggregation.metrics import Metric
from twisted_rta.query.merge import merge_into
from twisted_rta.query.slices import STEP_ITEMS, StepBudget
from twisted_rta.query.views import memo_time_format, metric_view_of
from twisted_rta.store.interface import StoredMetric

# The longest page a client may ask for (the whole list needs no limit).
MAX_PAGE = 10_000

MetricViews = list[tuple[str, dict[str, Any]]]


@frozen
class PageRequest:
    """Which part of the list: names starting with ``prefix``, sorted, those after
    ``after`` (a cursor: the last name of the previous page), at most ``limit``."""

    prefix: str | None = None
    after: str | None = None
    limit: int | None = None
    only: Callable[[str], bool] | None = None  # keep only the names it takes (?site=)

    @property
    def paginated(self) -> bool:
        return self.after is not None or self.limit is not None


@define
class MetricPage:
    """One answer of the list: fill it by running ``steps`` (a ``Slicer`` does it), then
    read ``names`` (the page, sorted) and ``next_after`` (the cursor of the next page, None
    on the last one)."""

    live: Mapping[str, Metric]  # the aggregator's own, read only
    stored: Sequence[StoredMetric]  # other nodes' totals, in the store's order
    complete: bool  # False when the store could not be read: this node only
    request: PageRequest = PageRequest()
    names: list[str] = field(init=False, factory=list)
    next_after: str | None = field(init=False, default=None)

    def steps(self, emit: Callable[[MetricViews], None]) -> Iterator[None]:
        """Group the stored rows by name, list and sort the names, then build the page's
        views, handing them to ``emit`` in name order, a step's worth at a time; yields
        between steps (never after the last)."""
        budget = StepBudget()
        by_name: dict[str, list[Metric]] = {}
        rows = self.stored
        for start in range(0, len(rows), STEP_ITEMS):
            if budget.due():
                yield None
            some_rows = rows[start : start + STEP_ITEMS]
            for row in some_rows:
                by_name.setdefault(row.metric, []).append(row.value)
            budget.spend(len(some_rows))

        if budget.due():
            yield None
        listed = self._choose_names(by_name)
        # Listing and sorting a name costs about a sixteenth of building a view.
        budget.spend(listed // 16)

        format_time = memo_time_format()
        live = self.live
        names = self.names
        for start in range(0, len(names), STEP_ITEMS):
            if budget.due():
                yield None
            chunk = names[start : start + STEP_ITEMS]
            emit([(name, self._view(name, live, by_name, format_time)) for name in chunk])
            budget.spend(len(chunk))

    def _choose_names(self, by_name: Mapping[str, list[Metric]]) -> int:
        """Fill ``names`` and ``next_after``; return how many names were sorted."""
        request = self.request
        listed = list(self.live)
        if by_name:
            listed.extend(name for name in by_name if name not in self.live)
        prefix = request.prefix
        if prefix:
            listed = [name for name in listed if name.startswith(prefix)]
        if request.only is not None:
            listed = list(filter(request.only, listed))
        listed.sort()
        first = 0 if request.after is None else bisect_right(listed, request.after)
        end = len(listed) if request.limit is None else min(first + request.limit, len(listed))
        self.names = listed[first:end]
        if end < len(listed) and self.names:
            self.next_after = self.names[-1]
        return len(listed)

    @staticmethod
    def _view(
        name: str,
        live: Mapping[str, Metric],
        by_name: Mapping[str, list[Metric]],
        format_time: Callable[[float], str],
    ) -> dict[str, Any]:
        own = live.get(name)
        stored = by_name.get(name)
        if stored is None and own is not None:
            return metric_view_of(name, own, format_time)
        # Merged as the store read them, into a copy of the live one (first) when there is one.
        merged: dict[str, Metric] = {}
        if own is not None:
            merged[name] = own.copy()
        for metric in stored or ():
            merge_into(merged, name, metric)
        return metric_view_of(name, merged[name], format_time)
