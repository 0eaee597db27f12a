"""Window figures from a window's metric snapshots (pure)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from twisted_rta.aggregation.metrics import (
    Counter,
    Gauge,
    Histogram,
    Metric,
    MetricSnapshot,
    Unique,
)
from twisted_rta.query.figures import WINDOW_FIGURES, WindowFigures, window_figures

ALL = WindowFigures(60.0, WINDOW_FIGURES)


def snapshots(metrics: Mapping[str, Metric]) -> dict[str, MetricSnapshot]:
    return {name: metric.snapshot(name) for name, metric in metrics.items()}


def counter(value: float, count: int) -> Counter:
    return Counter(value, count, 1.0)


def histogram(*values: float) -> Histogram:
    metric = Histogram()
    for value in values:
        metric.observe(value, 1.0)
    return metric


def test_figures_of_the_purchase_histogram() -> None:
    amounts = [float(x) for x in range(1, 101)]  # 1..100
    revenue = histogram(*amounts)
    metrics: dict[str, Metric] = {"total_events": counter(120, 120), "revenue_histogram": revenue}
    figures = window_figures(snapshots(metrics), ALL)
    assert list(figures) == ["count", "sum", "avg", "p95", "p99"]
    assert figures["count"] == 120
    assert figures["sum"] == 5050
    assert figures["avg"] == 50.5
    # KLL keeps every value of so small a stream: its quantiles are the exact ones.
    assert figures["p95"] == 95
    assert figures["p99"] == 99
    assert (figures["p95"], figures["p99"]) == (
        revenue.snapshot("h").p95,
        revenue.snapshot("h").p99,
    )


def test_only_the_configured_figures_in_their_order() -> None:
    metrics: dict[str, Metric] = {
        "total_events": counter(3, 3),
        "revenue_histogram": histogram(4, 8),
    }
    spec = WindowFigures(300.0, ("p99", "count"))
    assert window_figures(snapshots(metrics), spec) == {"p99": 8, "count": 3}


@pytest.mark.parametrize(
    "metrics",
    [
        {},  # an empty window
        {"total_events": counter(0, 0)},
        {"total_events": counter(0, 0), "revenue_histogram": Histogram()},
    ],
)
def test_a_window_without_observations_has_sum_0_and_null_statistics(
    metrics: dict[str, Metric],
) -> None:
    figures = window_figures(snapshots(metrics), ALL)
    assert figures == {"count": 0, "sum": 0, "avg": None, "p95": None, "p99": None}


def test_pageviews_only_window_counts_its_events_and_has_no_amounts() -> None:
    metrics = {"total_events": counter(7, 7)}
    figures = window_figures(snapshots(metrics), ALL)
    assert figures == {"count": 7, "sum": 0, "avg": None, "p95": None, "p99": None}


def test_of_names_another_histogram() -> None:
    metrics: dict[str, Metric] = {
        "total_events": counter(2, 2),
        "revenue_histogram": histogram(1000),
        "latency": histogram(0.5, 1.5),
    }
    spec = WindowFigures(60.0, ("sum", "avg"), of="latency")
    assert window_figures(snapshots(metrics), spec) == {"sum": 2.0, "avg": 1.0}


def test_a_counter_as_of_has_a_sum_and_mean_but_no_quantiles() -> None:
    metrics = {"total_events": counter(4, 4), "revenue": counter(30, 3)}
    spec = WindowFigures(60.0, WINDOW_FIGURES, of="revenue")
    figures = window_figures(snapshots(metrics), spec)
    assert figures == {"count": 4, "sum": 30, "avg": 10, "p95": None, "p99": None}


@pytest.mark.parametrize("metric", [Gauge(5.0, 1, 1.0, 1.0), Unique()])
def test_a_gauge_or_unique_as_of_has_no_figures_but_count(metric: Metric) -> None:
    metrics: dict[str, Metric] = {"total_events": counter(1, 1), "of": metric}
    spec = WindowFigures(60.0, WINDOW_FIGURES, of="of")
    figures = window_figures(snapshots(metrics), spec)
    assert figures == {"count": 1, "sum": None, "avg": None, "p95": None, "p99": None}
