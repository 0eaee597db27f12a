from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from twisted_rta.aggregation.metrics import (
    Counter,
    CounterFamily,
    Gauge,
    Histogram,
    Metric,
    MetricSnapshot,
    Unique,
    metric_from_bytes,
)


def fmt(ts: float) -> str:
    return f"t={ts}"


# -- Counter ------------------------------------------------------------------------------


def test_counter_increment_counts_contributions() -> None:
    counter = Counter()
    counter.increment(10.0)
    counter.increment(11.0, by=2.5)
    assert (counter.value, counter.count, counter.updated_at) == (3.5, 2, 11.0)


def test_counter_merge_adds_value_and_count_and_keeps_latest_time() -> None:
    a = Counter(value=3.0, count=2, updated_at=20.0)
    a.merge(Counter(value=4.0, count=1, updated_at=10.0))
    assert (a.value, a.count, a.updated_at) == (7.0, 3, 20.0)


def test_counter_snapshot() -> None:
    counter = Counter()
    counter.increment(5.0)
    assert counter.snapshot("clicks") == MetricSnapshot("clicks", "counter", 1.0, 1, 5.0)


def test_counter_round_trip_and_copy() -> None:
    counter = Counter(value=-1.25, count=7, updated_at=123.5)
    assert Counter.from_bytes(counter.to_bytes()) == counter
    clone = counter.copy()
    clone.increment(200.0)
    assert counter.count == 7
    assert clone.count == 8


def test_merge_rejects_another_kind() -> None:
    with pytest.raises(TypeError):
        Counter().merge(Gauge())  # type: ignore[arg-type]


# -- Gauge --------------------------------------------------------------------------------


def test_gauge_keeps_last_value() -> None:
    gauge = Gauge()
    gauge.set(5.0, 1.0)
    gauge.set(2.0, 2.0)
    assert (gauge.value, gauge.count, gauge.updated_at) == (2.0, 2, 2.0)


def test_gauge_keeps_the_value_of_the_latest_event_time() -> None:
    gauge = Gauge()
    gauge.set(5.0, 100.0, at=50.0)
    gauge.set(2.0, 101.0, at=40.0)  # older event, processed later: not the latest value
    assert (gauge.value, gauge.count, gauge.updated_at, gauge.at) == (5.0, 2, 101.0, 50.0)
    gauge.set(7.0, 102.0, at=50.0)  # same event time: the later one wins
    assert gauge.value == 7.0


@pytest.mark.parametrize(
    ("a", "b", "value", "at"),
    [
        (Gauge(1.0, 1, 99.0, 10.0), Gauge(2.0, 3, 5.0, 20.0), 2.0, 20.0),
        (Gauge(1.0, 1, 5.0, 30.0), Gauge(2.0, 3, 99.0, 20.0), 1.0, 30.0),
        (Gauge(1.0, 1, 99.0, 20.0), Gauge(2.0, 3, 5.0, 20.0), 2.0, 20.0),
    ],
    ids=["other-later", "self-later", "tie-other-wins"],
)
def test_gauge_merge_keeps_the_later_event_time(
    a: Gauge, b: Gauge, value: float, at: float
) -> None:
    a.merge(b)
    assert (a.value, a.count, a.at, a.updated_at) == (value, 4, at, 99.0)


def test_gauge_round_trip_and_copy() -> None:
    gauge = Gauge(value=42.0, count=3, updated_at=9.0, at=7.5)
    assert Gauge.from_bytes(gauge.to_bytes()) == gauge
    clone = gauge.copy()
    clone.set(1.0, 10.0)
    assert gauge.value == 42.0


def test_counter_bytes_do_not_decode_as_gauge() -> None:
    with pytest.raises(ValueError, match="not a gauge"):
        Gauge.from_bytes(Counter(1.0, 1, 1.0).to_bytes())


# -- Histogram ----------------------------------------------------------------------------


def test_histogram_snapshot_has_exact_stats_and_quantiles() -> None:
    hist = Histogram()
    for i, x in enumerate([10.0, -2.0, 0.0, 4.0]):
        hist.observe(x, float(i))
    snap = hist.snapshot("revenue_histogram")
    assert (snap.value, snap.count, snap.sum) == (12.0, 4, 12.0)
    assert (snap.min, snap.max, snap.mean) == (-2.0, 10.0, 3.0)
    assert snap.p50 == 0.0  # nearest rank: 2 of the 4 values are <= 0
    assert snap.p99 == 10.0
    assert snap.updated_at == 3.0


def test_empty_histogram_snapshot_uses_none() -> None:
    snap = Histogram().snapshot("h")
    assert (snap.value, snap.count, snap.sum) == (0.0, 0, 0.0)
    assert [snap.min, snap.max, snap.mean, snap.p50, snap.p90, snap.p95, snap.p99] == [None] * 7


def test_histogram_rejects_non_finite() -> None:
    hist = Histogram()
    with pytest.raises(ValueError):
        hist.observe(math.nan, 1.0)
    assert hist.count == 0


def test_histogram_quantiles_within_rank_error() -> None:
    n = 100_000
    values = list(range(n))
    random.Random(7).shuffle(values)
    hist = Histogram()
    for v in values:
        hist.observe(float(v), 1.0)
    snap = hist.snapshot("h")
    # For 0..n-1 the rank of value v is v/n; KLL k=200 promises ~1.65% rank error.
    for q, got in [(0.5, snap.p50), (0.9, snap.p90), (0.95, snap.p95), (0.99, snap.p99)]:
        assert got is not None
        assert abs(got / n - q) < 0.02, (q, got)
    assert (snap.min, snap.max, snap.count) == (0.0, n - 1.0, n)


def test_histogram_merge() -> None:
    a, b = Histogram(), Histogram()
    for x in range(1, 51):
        a.observe(float(x), 1.0)
    for x in range(51, 101):
        b.observe(float(x), 2.0)
    a.merge(b)
    snap = a.snapshot("h")
    assert (snap.count, snap.sum, snap.min, snap.max, snap.updated_at) == (100, 5050.0, 1, 100, 2)
    assert snap.p50 == 50.0
    assert b.count == 50


def test_histogram_round_trip_is_exact() -> None:
    hist = Histogram.with_k(100)
    rng = random.Random(3)
    for _ in range(5_000):
        hist.observe(rng.uniform(-50, 500), 77.0)
    restored = Histogram.from_bytes(hist.to_bytes())
    assert restored.snapshot("h") == hist.snapshot("h")
    assert restored.sketch.k == 100
    assert Histogram.from_bytes(Histogram().to_bytes()).snapshot("h") == Histogram().snapshot("h")


def test_histogram_copy_is_independent() -> None:
    hist = Histogram()
    hist.observe(1.0, 1.0)
    clone = hist.copy()
    clone.observe(100.0, 2.0)
    assert (hist.count, hist.max, hist.sketch.n) == (1, 1.0, 1)
    assert (clone.count, clone.max, clone.sketch.n) == (2, 100.0, 2)


# -- Unique -------------------------------------------------------------------------------


def test_unique_counts_distinct_members() -> None:
    users = Unique()
    for member in ["a", "b", "a", "c"]:
        users.add(member, 5.0)
    assert users.snapshot("unique_users") == MetricSnapshot("unique_users", "set", 3.0, 3, 5.0)
    assert users.lg_k == 14


def test_unique_within_two_percent_at_100k() -> None:
    users = Unique()
    for i in range(100_000):
        users.add(f"user-{i}", 1.0)
    users.add("user-0", 1.0)
    assert abs(users.estimate - 100_000) / 100_000 < 0.02


def test_unique_merge_is_a_union() -> None:
    a, b = Unique(), Unique()
    for i in range(60_000):
        a.add(f"id-{i}", 1.0)
    for i in range(40_000, 100_000):
        b.add(f"id-{i}", 2.0)
    a.merge(b)
    assert abs(a.estimate - 100_000) / 100_000 < 0.02
    assert a.updated_at == 2.0
    assert a.lg_k == 14


def test_unique_merge_with_smaller_lg_k() -> None:
    big, small = Unique.with_lg_k(14), Unique.with_lg_k(10)
    for i in range(10):
        big.add(f"x{i}", 1.0)
        small.add(f"y{i}", 1.0)
    big.merge(small)
    assert big.estimate == 20


def test_unique_round_trip_keeps_estimate_exactly() -> None:
    for n in (0, 5, 50_000):
        users = Unique.with_lg_k(12)
        for i in range(n):
            users.add(str(i), 8.0)
        restored = Unique.from_bytes(users.to_bytes())
        assert restored.sketch.get_estimate() == users.sketch.get_estimate()
        assert (restored.lg_k, restored.updated_at) == (12, users.updated_at)
        restored.add("new-member", 9.0)  # still updatable after decoding
        assert restored.updated_at == 9.0


def test_unique_copy_is_independent() -> None:
    users = Unique()
    users.add("a", 1.0)
    clone = users.copy()
    clone.add("b", 2.0)
    assert (users.estimate, clone.estimate) == (1, 2)


# -- snapshots and dispatch ---------------------------------------------------------------


def test_snapshot_as_dict_for_counter() -> None:
    data = MetricSnapshot("total_events", "counter", 3.0, 3, 12.0).as_dict(fmt)
    assert list(data.items()) == [
        ("name", "total_events"),
        ("type", "counter"),
        ("value", 3.0),
        ("count", 3),
        ("timestamp", "t=12.0"),
    ]
    assert isinstance(data["value"], float)


def test_snapshot_as_dict_for_histogram() -> None:
    hist = Histogram()
    hist.observe(2.0, 1.0)
    data = hist.snapshot("h").as_dict(fmt)
    assert list(data) == [
        "name", "type", "value", "count", "timestamp",
        "sum", "min", "max", "mean", "p50", "p90", "p95", "p99",
    ]  # fmt: skip
    assert (data["mean"], data["p99"]) == (2.0, 2.0)


@pytest.mark.parametrize(
    "make",
    # Factories, not instances: pytest keeps parameters until exit, and a sketch alive at
    # interpreter teardown makes nanobind print leak warnings.
    [lambda: Counter(2.0, 1, 3.0), lambda: Gauge(2.0, 1, 3.0), Histogram, Unique],
    ids=["counter", "gauge", "histogram", "set"],
)
def test_metric_from_bytes_dispatches_on_kind(make: Callable[[], Metric]) -> None:
    metric = make()
    restored = metric_from_bytes(metric.kind, metric.to_bytes())
    assert type(restored) is type(metric)
    assert restored.snapshot("m") == metric.snapshot("m")


def test_metric_from_bytes_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown metric kind"):
        metric_from_bytes("timer", b"")
    with pytest.raises(ValueError, match="too short"):
        metric_from_bytes("counter", b"\x01")
    with pytest.raises(ValueError, match="version"):
        metric_from_bytes("counter", b"\x09" + Counter().to_bytes()[1:])


# -- bounded counter families -------------------------------------------------------------


def test_counter_family_bounds_distinct_values() -> None:
    registry: dict[str, Metric] = {}
    family = CounterFamily("clicks", 2, registry)
    for value in ["a", "b", "c", "a", "d", "c"]:
        family.increment(value, 1.0)
    assert sorted(registry) == ["clicks:__other__", "clicks:a", "clicks:b"]
    assert registry["clicks:a"].snapshot("a").count == 2
    assert registry["clicks:__other__"].snapshot("o").count == 3
    assert family.overflow == 3


def test_counter_family_with_zero_limit_sends_everything_to_other() -> None:
    registry: dict[str, Metric] = {}
    family = CounterFamily("events", 0, registry)
    family.increment("x", 1.0)
    assert list(registry) == ["events:__other__"]
    assert family.overflow == 1


def test_counter_family_literal_other_value_goes_to_the_bucket() -> None:
    registry: dict[str, Metric] = {}
    family = CounterFamily("clicks", 5, registry)
    family.increment("__other__", 1.0)
    family.increment("a", 1.0)
    assert sorted(registry) == ["clicks:__other__", "clicks:a"]
    assert family.overflow == 1


def test_counter_family_merge_is_bounded_and_copies() -> None:
    registry: dict[str, Metric] = {}
    family = CounterFamily("pages", 2, registry)
    family.increment("/a", 1.0)
    incoming = Counter(value=3.0, count=3, updated_at=5.0)
    family.merge("/b", incoming)  # a free slot: adopted as a copy
    family.merge("/a", Counter(value=1.0, count=1, updated_at=2.0))
    family.merge("/c", Counter(value=4.0, count=4, updated_at=3.0))  # full: to the bucket
    family.merge("__other__", Counter(value=2.0, count=2, updated_at=4.0))
    assert {name: (m.value, m.count) for name, m in registry.items()} == {
        "pages:/a": (2.0, 2),
        "pages:/b": (3.0, 3),
        "pages:__other__": (6.0, 6),
    }
    assert family.overflow == 6
    assert registry["pages:/b"] is not incoming
    family.increment("/b", 6.0)
    assert (incoming.value, incoming.count) == (3.0, 3)


def test_counter_family_adopts_a_restored_bucket_without_using_a_slot() -> None:
    registry: dict[str, Metric] = {}
    family = CounterFamily("pages", 1, registry)
    bucket = Counter(value=9.0, count=9, updated_at=1.0)
    family.adopt("__other__", bucket)
    family.increment("/a", 2.0)  # the one slot is still free
    family.increment("/b", 2.0)
    assert registry["pages:/a"].snapshot("a").count == 1
    assert registry["pages:__other__"] is bucket
    assert bucket.count == 10
    assert family.overflow == 1
