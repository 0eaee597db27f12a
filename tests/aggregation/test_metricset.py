from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.aggregation.factories import T0, event
from twisted_rta.aggregation.metrics import Counter, Histogram, MetricSnapshot, Unique
from twisted_rta.aggregation.metricset import MetricSet
from twisted_rta.aggregation.rules import DEFAULT_RULES
from twisted_rta.events.model import Event


def metric_set(limit: int = 100, lg_k: int = 12) -> MetricSet:
    return MetricSet(DEFAULT_RULES, limit, lg_k)


def fed(events: Sequence[Event], limit: int = 100, now: float = T0) -> MetricSet:
    metrics = metric_set(limit)
    metrics.add_many(events, now)
    return metrics


def counts(snapshots: dict[str, MetricSnapshot]) -> dict[str, tuple[float, int]]:
    return {name: (snap.value, snap.count) for name, snap in snapshots.items()}


MIXED = [
    event("pageview", user_id="a", session_id="s1", properties={"page": "/home"}),
    event("pageview", user_id="b", session_id="s2", properties={"page": "/about"}),
    event("click", user_id="a", properties={"element": "buy"}),
    event("purchase", user_id="c", properties={"amount": 30}),
    event("purchase", user_id="a", properties={"amount": 10}),
    event("signup", session_id="s3"),
]


def test_empty_set_has_no_metrics() -> None:
    metrics = metric_set()
    metrics.add_many([], T0)
    metrics.merge({})
    assert metrics.metrics == {}
    assert (metrics.total_events, metrics.unique_users, metrics.overflow) == (0, 0, 0)


def test_merge_of_split_sets_equals_one_set_fed_everything() -> None:
    whole = fed(MIXED)
    left, right = fed(MIXED[:3]), fed(MIXED[3:])
    left.merge(right.metrics)
    assert counts(left.snapshot()) == counts(whole.snapshot())
    revenue = left.snapshot()["revenue_histogram"]
    assert (revenue.min, revenue.max, revenue.sum) == (10.0, 30.0, 40.0)
    assert (left.total_events, left.unique_users, left.unique_sessions) == (6, 3, 3)


def test_merge_into_an_empty_set_publishes_and_copies() -> None:
    source = fed(MIXED)
    target = metric_set()
    target.merge(source.metrics)
    assert counts(target.snapshot()) == counts(source.snapshot())
    # the target owns its metrics: more events on either side stay on that side
    source.add(event("pageview", user_id="z", properties={"page": "/new"}), T0 + 1)
    target.add(event("click", properties={"element": "buy"}), T0 + 1)
    target.add(event("purchase", properties={"amount": 100}), T0 + 1)
    assert (source.total_events, target.total_events) == (7, 8)
    before, after = source.snapshot(), target.snapshot()
    assert (before["pageviews"].count, after["pageviews"].count) == (3, 2)
    assert (before["unique_pages"].count, after["unique_pages"].count) == (3, 2)
    assert (before["clicks"].count, after["clicks"].count) == (1, 2)
    assert (before["clicks:buy"].count, after["clicks:buy"].count) == (1, 2)
    assert (before["revenue"].value, after["revenue"].value) == (40.0, 140.0)
    assert (before["revenue_histogram"].max, after["revenue_histogram"].max) == (30.0, 100.0)
    for name, metric in target.metrics.items():
        assert source.metrics.get(name) is not metric


def test_merged_dimensions_are_bounded_and_count_overflow() -> None:
    target = fed([event("pageview", properties={"page": p}) for p in ["/a", "/b"]], limit=2)
    source = fed(
        [event("pageview", properties={"page": p}) for p in ["/a", "/c", "/c", "/d", "/e"]],
        limit=2,
    )
    assert source.snapshot()["page_views:__other__"].count == 2  # /d and /e
    target.merge(source.metrics)
    pages = {n: s.count for n, s in target.snapshot("page_views:").items()}
    # /a is known; /c (2 events) finds no free slot; the source's bucket joins the bucket
    assert pages == {"page_views:/a": 2, "page_views:/b": 1, "page_views:__other__": 4}
    assert target.overflow_by_base()["page_views"] == 4
    assert target.overflow == 4


def test_merge_fills_free_dimension_slots_first() -> None:
    target = fed([event("click", properties={"element": "x"})], limit=2)
    target.merge(fed([event("click", properties={"element": "y"})]).metrics)
    assert list(target.snapshot("clicks:")) == ["clicks:x", "clicks:y"]
    assert target.overflow == 0


def test_merge_rejects_a_kind_clash() -> None:
    target = fed(MIXED)
    with pytest.raises(TypeError):
        target.merge({"revenue": Histogram()})
    with pytest.raises(TypeError):
        target.merge({"page_views:/x": Unique()})
    with pytest.raises(TypeError):
        metric_set().merge({"unique_pages": Counter()})  # not there yet: the rules decide
    assert "page_views:/x" not in target.metrics


def test_merge_brings_uniques_to_this_sets_size() -> None:
    big = MetricSet(DEFAULT_RULES, 100, 14)
    big.add_many(MIXED, T0)
    small = metric_set(lg_k=10)
    small.merge(big.metrics)
    for name in ("unique_users", "unique_pages"):
        unique = small.metrics[name]
        assert isinstance(unique, Unique)
        assert unique.lg_k == 10
    assert small.unique_users == 3


def test_copy_is_deep_and_keeps_counting() -> None:
    original = fed(
        [event("click", user_id="u", properties={"element": e}) for e in ["a", "b", "c"]],
        limit=2,
    )
    twin = original.copy()
    assert twin.snapshot() == original.snapshot()
    overflow = {"events_by_type": 0, "page_views": 0, "clicks": 1}
    assert twin.overflow_by_base() == original.overflow_by_base() == overflow
    twin.add(event("click", user_id="v", properties={"element": "d"}), T0 + 1)
    # the copy's held generic metrics are the ones it publishes
    assert twin.metrics["total_events"].count == twin.total_events == 4
    assert twin.unique_users == twin.snapshot()["unique_users"].count == 2
    assert twin.snapshot()["clicks:__other__"].count == 2
    assert twin.overflow == 2
    # the original did not move
    assert (original.total_events, original.unique_users, original.overflow) == (3, 1, 1)
    assert original.snapshot()["clicks:__other__"].count == 1


def test_copy_of_an_empty_set_publishes_on_first_event() -> None:
    twin = metric_set().copy()
    assert twin.metrics == {}
    twin.add(event(), T0)
    assert sorted(twin.metrics) == [
        "events_by_type:signup",
        "total_events",
        "unique_sessions",
        "unique_users",
    ]


def test_restore_keeps_values_past_the_limit() -> None:
    metrics = fed([event("click", properties={"element": "a"})], limit=1)
    metrics.restore("clicks:b", Counter(2.0, 2, T0 - 5))
    metrics.restore("clicks:__other__", Counter(4.0, 4, T0 - 5))
    metrics.add(event("click", properties={"element": "c"}), T0)
    clicks = {n: s.count for n, s in metrics.snapshot("clicks:").items()}
    assert clicks == {"clicks:a": 1, "clicks:b": 2, "clicks:__other__": 5}
    assert metrics.overflow == 1  # only the live event overflowed here


def test_changed_since() -> None:
    metrics = metric_set()
    metrics.add(event("pageview", properties={"page": "/a"}), T0)
    metrics.add(event("signup", user_id="u"), T0 + 5)
    assert sorted(metrics.changed_since(T0 + 5)) == [
        "events_by_type:signup",
        "total_events",
        "unique_users",
    ]
    changed = metrics.changed_since(T0 + 5)["total_events"]
    assert isinstance(changed, Counter)
    changed.increment(T0 + 6)
    assert metrics.total_events == 2


def test_snapshot_prefix_and_order() -> None:
    metrics = fed(MIXED)
    assert list(metrics.snapshot("events_by_type:")) == [
        "events_by_type:click",
        "events_by_type:pageview",
        "events_by_type:purchase",
        "events_by_type:signup",
    ]
    assert list(metrics.snapshot()) == sorted(metrics.metrics)
