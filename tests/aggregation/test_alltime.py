"""The all-time set takes its dimension families from the window: the answers must be exactly
those of counting every batch into the all-time set directly (the simple reference)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from attrs import evolve

from tests.aggregation.factories import T0, event
from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.metrics import Histogram, Metric, MetricSnapshot, Unique
from twisted_rta.aggregation.metricset import MetricSet
from twisted_rta.aggregation.rules import DEFAULT_RULES
from twisted_rta.aggregation.state import export_aggregator, restore_aggregator
from twisted_rta.events.model import Event

SIZES = (60.0, 3600.0)


def new_aggregator(limit: int) -> Aggregator:
    return Aggregator(window_sizes=SIZES, grace=5.0, max_dimension_values=limit, started_at=T0)


def reference(limit: int) -> MetricSet:
    """The all-time set counted the simple way: every batch added to it directly."""
    return MetricSet(DEFAULT_RULES, limit, 14)


def batch(rng: random.Random, now: float, pages: int) -> list[Event]:
    """Mostly arrival-time events, some a little late (the previous minute, within grace or
    past it), now and then a whole batch of them; values sometimes not strings, sometimes the
    reserved bucket name."""
    events = []
    straggler = rng.random() < 0.05
    if straggler:
        now -= rng.choice([3.0, 90.0])
    for _ in range(rng.choice([1, 1, 5, 20, 60])):
        kind = rng.choice(["pageview"] * 6 + ["click"] * 3 + ["purchase"])
        page: Any = rng.choice([f"/p{rng.randrange(pages)}"] * 20 + [7, "__other__"])
        properties = {
            "pageview": {"page": page},
            "click": {"element": f"b{rng.randrange(pages)}"},
            "purchase": {"amount": rng.uniform(0, 100)},
        }[kind]
        late = not straggler and rng.random() < 0.03
        timestamp = now - (rng.choice([3.0, 30.0, 90.0]) if late else 0.0)
        user = rng.choice([None, f"u{rng.randrange(50)}"])
        events.append(event(kind, timestamp, user, f"s{rng.randrange(20)}", properties))
    return events


def exact(metrics: dict[str, Metric], hll_bytes: bool) -> dict[str, Any]:
    """Each metric's exact state. A KLL sketch past 200 items compacts at random, so for a
    histogram its exact count, sum, min, max and time; without ``hll_bytes`` a unique's
    snapshot only (a restored sparse HLL serialises its members in another order)."""
    return {
        name: (
            (metric.count, metric.sum, metric.min, metric.max, metric.updated_at)
            if isinstance(metric, Histogram)
            else metric.snapshot(name)
            if isinstance(metric, Unique) and not hll_bytes
            else (metric.snapshot(name), metric.to_bytes())
        )
        for name, metric in metrics.items()
    }


def without_quantiles(snapshots: dict[str, MetricSnapshot]) -> dict[str, MetricSnapshot]:
    return {
        name: evolve(snap, p50=None, p90=None, p95=None, p99=None)
        for name, snap in snapshots.items()
    }


def assert_same_as(agg: Aggregator, ref: MetricSet, now: float, hll_bytes: bool = True) -> None:
    ours, theirs = agg.global_metric_states(), ref.changed_since(float("-inf"))
    assert exact(ours, hll_bytes) == exact(theirs, hll_bytes)
    assert without_quantiles(agg.metrics()) == without_quantiles(ref.snapshot())
    stats = agg.stats(now)
    assert stats.dimension_overflow_by_base == ref.overflow_by_base()
    assert stats.metrics_count == len(ref.metrics)
    assert agg.global_changes(now - 2.0).keys() == ref.changed_since(now - 2.0).keys()


@pytest.mark.parametrize("limit", [3, 8, 1000])
@pytest.mark.parametrize("seed", range(8))
def test_all_time_answers_equal_counting_every_batch_directly(seed: int, limit: int) -> None:
    rng = random.Random(seed)
    agg, ref = new_aggregator(limit), reference(limit)
    now = T0 + 1.0
    for _ in range(150):
        now += rng.choice([0.0, 0.2, 1.0, 4.0, 20.0])
        events = batch(rng, now, pages=rng.choice([4, 12, 40]))
        agg.add_many(events, now)
        ref.add_many(events, now)
        if rng.random() < 0.3:
            agg.close_due(now)
        if rng.random() < 0.1:  # reads at any time (they take the window's counts so far)
            assert_same_as(agg, ref, now)
    assert_same_as(agg, ref, now)
    agg.close_all(now)
    assert_same_as(agg, ref, now)


def test_counts_wait_in_the_window_until_read() -> None:
    agg = new_aggregator(10)
    agg.add_many([event("pageview", T0, properties={"page": "/a"})] * 3, T0)
    agg.add_many([event("pageview", T0 + 1, properties={"page": "/b"})], T0 + 1)
    metrics = agg.metrics()
    assert (metrics["page_views:/a"].count, metrics["page_views:/b"].count) == (3, 1)
    assert metrics["page_views:/b"].updated_at == T0 + 1
    agg.add_many([event("pageview", T0 + 2, properties={"page": "/a"})], T0 + 2)
    assert agg.metrics()["page_views:/a"].count == 4  # a second read takes only what is new


def test_a_full_window_hands_back_to_counting_directly() -> None:
    agg, ref = new_aggregator(2), reference(2)
    # All time admits /a and /b in the first minute; the next minute's window fills up with
    # /c and /d, and then /a must still count under its own name all-time.
    first = [event("pageview", T0 + 1, properties={"page": p}) for p in ("/a", "/b")]
    second = [event("pageview", T0 + 61, properties={"page": p}) for p in ("/c", "/d", "/a")]
    for events, now in ((first, T0 + 1), (second[:2], T0 + 61), (second[2:], T0 + 62)):
        agg.add_many(events, now)
        ref.add_many(events, now)
    assert agg.metrics()["page_views:/a"].count == 2
    assert_same_as(agg, ref, T0 + 62)


def test_checkpoint_taken_while_counts_wait_in_the_window() -> None:
    rng = random.Random(5)
    agg, ref = new_aggregator(8), reference(8)
    now = T0 + 1.0
    for _ in range(20):
        now += 0.5
        events = batch(rng, now, pages=12)
        agg.add_many(events, now)
        ref.add_many(events, now)
    restored = new_aggregator(8)
    restore_aggregator(restored, export_aggregator(agg))
    for _ in range(20):
        now += 0.5
        events = batch(rng, now, pages=12)
        for target in (agg, restored, ref):
            target.add_many(events, now)
    assert_same_as(agg, ref, now)
    assert_same_as(restored, ref, now, hll_bytes=False)
