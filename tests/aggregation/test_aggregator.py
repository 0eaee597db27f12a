from __future__ import annotations

import pytest

from tests.aggregation.factories import T0, aggregator, event
from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.metrics import Counter, Gauge, Histogram, Unique


def test_no_metrics_before_the_first_event() -> None:
    agg = aggregator()
    agg.add_many([], T0)
    assert agg.metrics() == {}
    assert agg.metric("total_events") is None
    stats = agg.stats(T0)
    assert (stats.total_events, stats.unique_users, stats.metrics_count) == (0, 0, 0)


def test_generic_uniques_exist_from_the_first_event_even_when_empty() -> None:
    agg = aggregator()
    agg.add(event(), T0)
    users = agg.metric("unique_users")
    assert users is not None
    assert (users.type, users.value, users.count) == ("set", 0.0, 0)
    assert agg.metric("unique_sessions") is not None


def test_metrics_sorted_and_filtered_by_prefix() -> None:
    agg = aggregator()
    agg.add_many([event("view"), event("tap"), event("tap")], T0 + 3)
    assert list(agg.metrics()) == [
        "events_by_type:tap",
        "events_by_type:view",
        "total_events",
        "unique_sessions",
        "unique_users",
    ]
    by_type = agg.metrics(prefix="events_by_type:")
    assert {name: snap.count for name, snap in by_type.items()} == {
        "events_by_type:tap": 2,
        "events_by_type:view": 1,
    }
    total = agg.metric("total_events")
    assert total is not None
    assert (total.value, total.updated_at) == (3.0, T0 + 3)
    assert agg.metric("nope") is None


def test_add_and_add_many_agree() -> None:
    events = [
        event("pageview", T0 + i, f"u{i % 3}", f"s{i}", {"page": f"/p{i % 2}"}) for i in range(9)
    ]
    one, many = aggregator(), aggregator()
    for e in events:
        one.add(e, T0)
    many.add_many(iter(events), T0)
    assert one.metrics() == many.metrics()
    assert one.open_windows() == many.open_windows()


def test_global_dimensions_are_bounded() -> None:
    agg = aggregator(max_dimension_values=2)
    agg.add_many([event(t) for t in ["a", "b", "c", "a", "d", "c"]], T0)
    agg.add_many([event("pageview", properties={"page": p}) for p in ["/1", "/2", "/3", "/1"]], T0)
    by_type = {name: snap.count for name, snap in agg.metrics("events_by_type:").items()}
    # pageview arrives after the two slots are taken, so it is counted as other too
    assert by_type == {"events_by_type:a": 2, "events_by_type:b": 1, "events_by_type:__other__": 7}
    pages = {name: snap.count for name, snap in agg.metrics("page_views:").items()}
    assert pages == {"page_views:/1": 2, "page_views:/2": 1, "page_views:__other__": 1}
    assert agg.metrics()["unique_pages"].count == 3  # uniques are bounded by the sketch instead
    stats = agg.stats(T0)
    assert stats.dimension_overflow_by_base["events_by_type"] == 7
    assert stats.dimension_overflow_by_base["page_views"] == 1
    assert stats.dimension_overflow_by_base["clicks"] == 0
    assert "events" not in stats.dimension_overflow_by_base  # the old window-only family
    # the one minute window saw the same values in the same order, so it overflows alike
    assert stats.window_dimension_overflow == 7 + 1
    assert stats.dimension_overflow == (7 + 1) * 2


def test_stats() -> None:
    agg = aggregator(window_sizes=(60.0, 3600.0), grace=0.0, started_at=T0 - 30)
    agg.add_many(
        [event("tap", T0 + i % 60, f"user-{i % 1000}", f"s-{i % 250}") for i in range(5000)], T0
    )
    agg.close_due(T0 + 120)
    agg.add(event(timestamp=T0), T0 + 120)
    stats = agg.stats(T0 + 120)
    assert stats.total_events == 5001
    assert abs(stats.unique_users - 1000) <= 20
    assert abs(stats.unique_sessions - 250) <= 5
    assert stats.metrics_count == len(agg.metrics()) == 5
    assert stats.active_windows == 1  # the hour is open, the minute closed
    assert stats.late_events == 1
    assert stats.uptime_seconds == 150.0
    assert stats.dimension_overflow == 0


def test_global_metric_states_are_independent_copies() -> None:
    agg = aggregator()
    agg.add(event("purchase", user_id="u", properties={"amount": 5}), T0)
    states = agg.global_metric_states()
    assert set(states) == set(agg.metrics())
    revenue = states["revenue"]
    assert isinstance(revenue, Counter)
    revenue.increment(T0, 100.0)
    users = states["unique_users"]
    assert isinstance(users, Unique)
    users.add("someone-else", T0)
    assert agg.metrics()["revenue"].value == 5.0
    assert agg.metrics()["unique_users"].count == 1


def test_restore_global_into_a_fresh_aggregator() -> None:
    old = aggregator()
    old.add_many(
        [
            event("purchase", user_id="u1", session_id="s1", properties={"amount": 10}),
            event("click", user_id="u2", properties={"element": "btn"}),
        ],
        T0,
    )
    new = aggregator()
    for name, metric in old.global_metric_states().items():
        new.restore_global(name, metric)
    assert new.metrics() == old.metrics()
    assert new.stats(T0).total_events == 2
    assert new.stats(T0).unique_users == 2

    new.add(event("click", user_id="u3", properties={"element": "btn"}), T0 + 1)
    assert new.metrics()["total_events"].count == 3
    assert new.metrics()["clicks:btn"].count == 2
    assert new.stats(T0 + 1).unique_users == 3


def test_restore_global_merges_with_live_counts() -> None:
    agg = aggregator()
    agg.add(event(user_id="a"), T0)
    users = Unique()
    users.add("b", T0 - 100)
    agg.restore_global("total_events", Counter(value=40.0, count=40, updated_at=T0 - 100))
    agg.restore_global("unique_users", users)
    stats = agg.stats(T0)
    assert (stats.total_events, stats.unique_users) == (41, 2)
    assert agg.metrics()["total_events"].updated_at == T0


def test_restored_dimension_counts_against_the_limit() -> None:
    agg = aggregator(max_dimension_values=1)
    agg.restore_global("page_views:/old", Counter(3.0, 3, T0 - 10))
    agg.add(event("pageview", properties={"page": "/new"}), T0)
    agg.add(event("pageview", properties={"page": "/old"}), T0)
    pages = {name: snap.count for name, snap in agg.metrics("page_views:").items()}
    assert pages == {"page_views:/old": 4, "page_views:__other__": 1}


def test_restore_global_keeps_unknown_metrics() -> None:
    agg = aggregator()
    agg.restore_global("custom_gauge", Gauge(2.0, 1, T0))
    assert agg.metrics()["custom_gauge"].value == 2.0
    assert agg.metric("total_events") is None


def test_restore_global_rejects_the_wrong_kind() -> None:
    agg = aggregator()
    with pytest.raises(TypeError):
        agg.restore_global("revenue", Histogram())
    with pytest.raises(TypeError):
        agg.restore_global("events_by_type:click", Unique())
    assert agg.metrics() == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_sizes": (60.0, 60.0)},
        {"window_sizes": (0.0,)},
        {"window_sizes": (-60.0,)},
        {"window_sizes": (float("inf"),)},
        {"window_sizes": (3600.0, 60.0)},
        {"window_sizes": (60.0, 90.0)},
        {"window_sizes": (60.0, 3600.0, 5400.0)},
        {"window_sizes": (60.0, 3600.5)},
        {"grace": -1.0},
        {"max_dimension_values": -1},
    ],
)
def test_constructor_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    settings: dict[str, object] = {
        "window_sizes": (60.0,),
        "grace": 5.0,
        "max_dimension_values": 10,
        "started_at": T0,
    }
    with pytest.raises(ValueError):
        Aggregator(**{**settings, **kwargs})  # type: ignore[arg-type]


def test_lg_k_settings_reach_the_sketches() -> None:
    agg = Aggregator(
        window_sizes=(60.0,),
        grace=0.0,
        max_dimension_values=10,
        started_at=T0,
        global_lg_k=10,
        window_lg_k=8,
    )
    agg.add(event(user_id="u"), T0)
    users = agg.global_metric_states()["unique_users"]
    assert isinstance(users, Unique)
    assert users.lg_k == 10
    [closed] = agg.close_all(T0)
    window_users = closed.metrics["unique_users"]
    assert isinstance(window_users, Unique)
    assert window_users.lg_k == 8


@pytest.mark.parametrize(
    "sizes", [(), (60.0,), (60.0, 3600.0, 86400.0), (0.5, 1.5, 3.0), (60.0, 120.0)]
)
def test_constructor_accepts_increasing_whole_multiples(sizes: tuple[float, ...]) -> None:
    agg = aggregator(window_sizes=sizes)
    agg.add(event(timestamp=T0 + 1), T0)
    assert [w.resolution for w in agg.close_all(T0)] == list(sizes)


# -- incremental persistence --------------------------------------------------------------


def test_global_changes_returns_the_live_metrics_touched_since() -> None:
    agg = aggregator()
    agg.add(event("pageview", user_id="u", properties={"page": "/a"}), T0)
    agg.add(event("click", properties={"element": "btn"}), T0 + 10)
    changed = agg.global_changes(T0 + 10)
    # unique_sessions and unique_users were not touched by the click (no ids)
    assert sorted(changed) == ["clicks", "clicks:btn", "events_by_type:click", "total_events"]
    assert changed["total_events"].count == 2
    never_touched = {"unique_sessions"}  # published with the first event, still empty
    assert sorted(agg.global_changes(T0)) == sorted(set(agg.metrics()) - never_touched)
    assert agg.global_changes(T0 + 10.001) == {}

    # The live metrics (the store serialises them before its write returns), not copies.
    assert changed["total_events"] is agg.global_set.metrics["total_events"]


def test_restored_metric_is_not_a_change_until_touched() -> None:
    agg = aggregator()
    agg.restore_global("revenue", Counter(value=7.0, count=1, updated_at=T0 - 100))
    assert agg.global_changes(T0 - 50) == {}
    assert set(agg.global_metric_states()) == {"revenue"}
    agg.add(event("purchase", properties={"amount": 3}), T0)
    revenue = agg.global_changes(T0)["revenue"]
    assert (revenue.value, revenue.updated_at) == (10.0, T0)
