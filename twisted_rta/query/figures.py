"""Window figures: the summary numbers a window of a resolution reports on /api/v1/windows
(``windows.figures``), and the sliding figures computed over the last ``size`` every
``step`` from the finest windows (``windows.sliding``)."""

from __future__ import annotations

from collections.abc import Mapping

from attrs import frozen

from twisted_rta.aggregation.metrics import MetricSnapshot
from twisted_rta.aggregation.rules import TOTAL_EVENTS

#: What a window of a resolution may report: ``count`` its events; the others, of the
#: histogram metric ``of`` names (by default the purchase amounts, ``revenue_histogram``).
WINDOW_FIGURES = ("count", "sum", "avg", "p95", "p99")
#: What a sliding window may report: ``rate`` its events per second, ``unique`` its users.
SLIDING_FIGURES = ("rate", "unique")
DEFAULT_FIGURES_OF = "revenue_histogram"


@frozen
class WindowFigures:
    """The figures every window of the resolution ``size`` reports."""

    size: float
    figures: tuple[str, ...]
    of: str = DEFAULT_FIGURES_OF


@frozen
class SlidingFigures:
    """Figures over the last ``size`` seconds, taken every ``step`` seconds."""

    size: float
    step: float
    figures: tuple[str, ...]


#: A figure's value: null when the window has nothing it could be computed from.
Figure = int | float | None


def window_figures(metrics: Mapping[str, MetricSnapshot], spec: WindowFigures) -> dict[str, Figure]:
    """``spec``'s figures of one window, from the snapshots the window is listed with, in
    ``spec``'s order: ``count`` its ``total_events``; ``sum``, ``avg``, ``p95`` and ``p99``
    of the histogram ``spec.of`` (a window without it had no observations: sum 0, the
    others null). A counter as ``of`` has a sum and a mean per contribution but no
    quantiles; a gauge or a unique count has none of them."""
    total = metrics.get(TOTAL_EVENTS)
    of = metrics.get(spec.of)
    return {figure: _figure(figure, total, of) for figure in spec.figures}


def _figure(figure: str, total: MetricSnapshot | None, of: MetricSnapshot | None) -> Figure:
    if figure == "count":
        return total.value if total is not None else 0
    if of is None:
        return 0 if figure == "sum" else None
    if of.type == "histogram":
        return {"sum": of.sum, "avg": of.mean, "p95": of.p95, "p99": of.p99}[figure]
    if of.type == "counter":
        if figure == "sum":
            return of.value
        if figure == "avg":
            return of.value / of.count if of.count else None
    return None
