from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.aggregation.factories import T0, aggregator, event
from twisted_rta.aggregation.rules import DEFAULT_RULES
from twisted_rta.aggregation.windows import ClosedWindow, WindowSeries, window_start


def ts(*parts: int, microsecond: int = 0) -> float:
    return datetime(*parts, microsecond=microsecond, tzinfo=UTC).timestamp()  # type: ignore[misc]


# -- keys ---------------------------------------------------------------------------------


def test_window_start_aligns_to_utc_minutes() -> None:
    t = ts(2024, 3, 5, 12, 34, 56, microsecond=789_000)
    assert window_start(t, 60.0) == ts(2024, 3, 5, 12, 34, 0)
    assert window_start(ts(2024, 3, 5, 12, 34, 0), 60.0) == ts(2024, 3, 5, 12, 34, 0)


def test_window_start_for_one_hour() -> None:
    assert window_start(ts(2024, 3, 5, 12, 59, 59), 3600.0) == ts(2024, 3, 5, 12, 0, 0)


def test_window_start_for_negative_timestamps() -> None:
    assert window_start(-1.0, 60.0) == -60.0
    assert window_start(-60.0, 60.0) == -60.0


def test_event_lands_in_its_aligned_window() -> None:
    agg = aggregator(window_sizes=(60.0, 3600.0), grace=0.0)
    agg.add(event(timestamp=T0 + 3725.5), T0)
    # only the finest resolution is live; the hour is built when the minute closes
    windows = [(w.resolution, w.start, w.end) for w in agg.open_windows()]
    assert windows == [(60.0, T0 + 3720, T0 + 3780)]
    agg.close_due(T0 + 3780)
    windows = [(w.resolution, w.start, w.end) for w in agg.open_windows()]
    assert windows == [(3600.0, T0 + 3600, T0 + 7200)]


# -- closing ------------------------------------------------------------------------------


def test_window_is_not_due_at_end_but_at_end_plus_grace() -> None:
    agg = aggregator(grace=5.0)
    agg.add(event(timestamp=T0 + 10), T0 + 10)
    assert agg.close_due(T0 + 60) == []
    assert agg.close_due(T0 + 64.999) == []
    closed = agg.close_due(T0 + 65)
    assert [(w.start, w.end, w.late, w.events_count) for w in closed] == [(T0, T0 + 60, False, 1)]


def test_window_closes_exactly_once() -> None:
    agg = aggregator()
    agg.add(event(timestamp=T0), T0)
    assert len(agg.close_due(T0 + 100)) == 1
    assert agg.close_due(T0 + 200) == []
    assert agg.close_all(T0 + 300) == []
    assert agg.stats(T0 + 300).active_windows == 0


def test_late_deltas_are_in_start_order_among_due_windows() -> None:
    agg = aggregator(grace=0.0)
    agg.add_many([event(timestamp=T0 + 10), event(timestamp=T0 + 130)], T0)
    assert [w.start for w in agg.close_due(T0 + 60)] == [T0]
    agg.add_many([event(timestamp=T0 + 190), event(timestamp=T0 + 70), event(timestamp=T0)], T0)
    closed = agg.close_due(T0 + 240)
    assert [(w.start - T0, w.late, w.events_count) for w in closed] == [
        (0, True, 1),
        (60, False, 1),
        (120, False, 1),
        (180, False, 1),
    ]
    assert agg.stats(T0 + 240).late_events == 1


def test_late_event_becomes_a_delta_emitted_once() -> None:
    agg = aggregator(grace=5.0)
    agg.add(event(timestamp=T0 + 1, user_id="a"), T0 + 1)
    [first] = agg.close_due(T0 + 70)
    assert (first.late, first.events_count, first.active_users) == (False, 1, 1)

    agg.add(event("click", timestamp=T0 + 2, user_id="b"), T0 + 71)
    agg.add(event("click", timestamp=T0 + 3, user_id="c"), T0 + 72)
    assert agg.stats(T0 + 72).active_windows == 0  # no reopening
    [delta] = agg.close_due(T0 + 75)
    assert (delta.start, delta.late, delta.events_count, delta.active_users) == (T0, True, 2, 2)
    assert delta.metrics["events_by_type:click"].snapshot("c").count == 2
    assert delta.metrics["clicks"].snapshot("c").count == 2
    assert agg.close_due(T0 + 200) == []

    stats = agg.stats(T0 + 200)
    assert stats.late_events == 2
    assert stats.total_events == 3  # late events still count globally
    assert agg.metrics()["events_by_type:click"].count == 2


def test_event_in_a_window_due_before_the_last_close_is_late() -> None:
    agg = aggregator(grace=5.0)
    agg.close_due(T0 + 600)
    agg.add(event(timestamp=T0), T0 + 600)  # its window was never opened, but its time passed
    assert agg.stats(T0 + 600).active_windows == 0
    [delta] = agg.close_due(T0 + 610)
    assert delta.late


def test_event_in_still_open_window_after_a_close_is_not_late() -> None:
    agg = aggregator(grace=5.0)
    agg.add(event(timestamp=T0), T0)
    agg.close_due(T0 + 65)  # closes [T0, T0+60); watermark T0+60
    agg.add(event(timestamp=T0 + 60), T0 + 65)
    assert agg.stats(T0 + 65).late_events == 0
    assert [w.start for w in agg.open_windows()] == [T0 + 60]


def test_close_all_flushes_open_windows_and_late_deltas() -> None:
    agg = aggregator(grace=5.0)
    agg.add(event(timestamp=T0), T0)
    agg.close_due(T0 + 65)  # closes the first minute only
    agg.add_many([event(timestamp=T0 + 1), event(timestamp=T0 + 90)], T0 + 95)
    closed = agg.close_all(T0 + 95)
    assert [(w.start, w.late, w.events_count) for w in closed] == [
        (T0, True, 1),
        (T0 + 60, False, 1),
    ]
    assert agg.open_windows() == []
    assert agg.stats(T0 + 95).active_windows == 0
    assert agg.close_all(T0 + 96) == []


def test_events_after_close_all_do_not_reopen_closed_windows() -> None:
    agg = aggregator(grace=5.0)
    agg.add(event(timestamp=T0 + 30), T0 + 30)
    agg.close_all(T0 + 30)  # the window was not due yet
    agg.add(event(timestamp=T0 + 40), T0 + 40)
    [delta] = agg.close_all(T0 + 41)
    assert (delta.start, delta.late) == (T0, True)


def test_future_window_stays_open_until_its_time_passes() -> None:
    agg = aggregator(grace=5.0)
    agg.add(event(timestamp=T0 + 3600), T0)
    assert agg.close_due(T0 + 600) == []
    assert [w.start for w in agg.open_windows()] == [T0 + 3600]
    assert agg.close_due(T0 + 3664) == []
    [closed] = agg.close_due(T0 + 3665)
    assert (closed.start, closed.late) == (T0 + 3600, False)


# -- window metrics -----------------------------------------------------------------------


def test_window_has_the_global_metric_names() -> None:
    agg = aggregator()
    events = [
        event("click", user_id="a", session_id="s1", properties={"element": "buy"}),
        event("click", user_id="b", properties={"element": "buy"}),
        event("pageview", user_id="a", properties={"page": "/home"}),
        event("purchase", properties={"amount": 12.5}),
        event("signup"),
    ]
    agg.add_many(events, T0 + 2)
    [window] = agg.open_windows()
    assert window.closed is False
    assert window.metrics == agg.metrics()  # one window holds everything so far
    assert list(window.metrics) == [
        "clicks",
        "clicks:buy",
        "events_by_type:click",
        "events_by_type:pageview",
        "events_by_type:purchase",
        "events_by_type:signup",
        "page_views:/home",
        "pageviews",
        "purchases",
        "revenue",
        "revenue_histogram",
        "total_events",
        "unique_pages",
        "unique_sessions",
        "unique_users",
    ]
    assert window.metrics["total_events"].count == 5
    assert window.metrics["unique_users"].count == 2
    assert window.metrics["revenue_histogram"].p50 == 12.5
    assert window.metrics["total_events"].updated_at == T0 + 2


def test_windows_count_only_their_own_events() -> None:
    agg = aggregator()
    agg.add_many(
        [
            event("pageview", T0 + 1, "a", properties={"page": "/x"}),
            event("pageview", T0 + 61, "b", properties={"page": "/y"}),
            event("pageview", T0 + 62, "a", properties={"page": "/y"}),
        ],
        T0 + 62,
    )
    first, second = agg.open_windows()
    assert (first.metrics["pageviews"].count, second.metrics["pageviews"].count) == (1, 2)
    assert "page_views:/y" not in first.metrics
    assert second.metrics["page_views:/y"].count == 2
    assert second.metrics["unique_users"].count == 2
    assert agg.metrics()["unique_users"].count == 2


def test_closed_window_counts_come_from_the_global_names() -> None:
    agg = aggregator()
    agg.add(event(), T0)
    [closed] = agg.close_all(T0)
    assert (closed.events_count, closed.active_users) == (1, 0)
    assert "unique_users" in closed.metrics
    for old_name in ("events", "active_users"):
        assert old_name not in closed.metrics


def test_window_dimensions_are_bounded() -> None:
    agg = aggregator(max_dimension_values=2)
    agg.add_many([event(t) for t in ["a", "b", "c", "d", "a"]], T0)
    agg.add_many([event(t, T0 + 60) for t in ["d", "c"]], T0)
    first, second = agg.open_windows()
    assert first.metrics["events_by_type:__other__"].count == 2
    assert first.metrics["events_by_type:a"].count == 2
    # each window has its own limit: the second minute keeps d and c by name
    assert [n for n in second.metrics if n.startswith("events_by_type:")] == [
        "events_by_type:c",
        "events_by_type:d",
    ]
    assert agg.stats(T0).window_dimension_overflow == 2
    agg.close_all(T0)
    assert agg.stats(T0).window_dimension_overflow == 2  # cumulative after close


def test_closed_window_snapshot() -> None:
    agg = aggregator()
    agg.add(event("click", user_id="a"), T0)
    [closed] = agg.close_all(T0 + 1)
    snap = closed.snapshot()
    assert (snap.resolution, snap.start, snap.end, snap.closed) == (60.0, T0, T0 + 60, True)
    assert snap.metrics["events_by_type:click"].count == 1
    assert snap.metrics["unique_users"].value == 1.0


def test_closed_window_helpers_tolerate_missing_metrics() -> None:
    empty = ClosedWindow(60.0, T0, T0 + 60, {})
    assert (empty.events_count, empty.active_users, empty.late) == (0, 0, False)


@pytest.mark.parametrize(
    ("size", "grace"), [(0.0, 1.0), (-60.0, 1.0), (float("nan"), 1.0), (60.0, -1.0)]
)
def test_series_rejects_bad_parameters(size: float, grace: float) -> None:
    with pytest.raises(ValueError):
        WindowSeries(size, grace, DEFAULT_RULES, 10)
