"""Several resolutions: coarser windows rolled up from closed finer ones, and live views."""

from __future__ import annotations

import math
import random
from collections import Counter as Tally

import pytest

from tests.aggregation.factories import T0, aggregator, event
from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.metrics import Counter, Unique
from twisted_rta.aggregation.windows import ClosedWindow, window_start

HOUR = 3600.0
DAY = 86400.0


def rows(closed: list[ClosedWindow]) -> list[tuple[float, float, bool, int]]:
    """(resolution, start offset from T0, late, events) per emitted window."""
    return [(w.resolution, w.start - T0, w.late, w.events_count) for w in closed]


def open_rows(agg: Aggregator) -> list[tuple[float, float, int]]:
    return [
        (w.resolution, w.start - T0, w.metrics["total_events"].count) for w in agg.open_windows()
    ]


def live_totals(agg: Aggregator, resolution: float) -> dict[float, int]:
    live = agg.live_windows(resolution, -math.inf, math.inf)
    totals = {}
    for start, metrics in live.items():
        total = metrics["total_events"]
        assert isinstance(total, Counter)
        totals[start - T0] = total.count
    return totals


# -- rolling up ---------------------------------------------------------------------------


def test_only_the_finest_resolution_is_live_and_the_parent_appears_at_child_close() -> None:
    agg = aggregator(window_sizes=(60.0, HOUR), grace=5.0)
    agg.add_many([event(timestamp=T0 + 10), event(timestamp=T0 + 70)], T0 + 70)
    assert open_rows(agg) == [(60.0, 0, 1), (60.0, 60, 1)]
    assert rows(agg.close_due(T0 + 65)) == [(60.0, 0, False, 1)]
    assert open_rows(agg) == [(60.0, 60, 1), (HOUR, 0, 1)]
    assert rows(agg.close_due(T0 + 125)) == [(60.0, 60, False, 1)]
    assert open_rows(agg) == [(HOUR, 0, 2)]
    assert agg.stats(T0 + 125).active_windows == 1


def test_parent_due_in_the_same_pass_includes_its_last_child() -> None:
    agg = aggregator(window_sizes=(60.0, HOUR), grace=5.0)
    agg.add_many([event(timestamp=T0 + 10), event(timestamp=T0 + 3590)], T0)
    assert rows(agg.close_due(T0 + 3605)) == [
        (60.0, 0, False, 1),
        (60.0, 3540, False, 1),
        (HOUR, 0, False, 2),
    ]
    assert agg.open_windows() == []


def test_parent_holds_the_full_metric_set_of_its_children() -> None:
    agg = aggregator(window_sizes=(60.0, HOUR), grace=0.0, max_dimension_values=2)
    agg.add_many(
        [
            event("pageview", T0 + 1, "a", "s1", {"page": "/x"}),
            event("pageview", T0 + 61, "a", "s2", {"page": "/y"}),
            event("pageview", T0 + 121, "b", "s2", {"page": "/z"}),
            event("purchase", T0 + 122, "b", properties={"amount": 20}),
            event("purchase", T0 + 1000, "c", properties={"amount": 4}),
        ],
        T0,
    )
    [hour] = [w for w in agg.close_due(T0 + HOUR) if w.resolution == HOUR]
    snap = hour.snapshot().metrics
    # every minute stayed within the limit; the hour keeps /x, /y and buckets /z
    assert [n for n in snap if n.startswith("page_views:")] == [
        "page_views:/x",
        "page_views:/y",
        "page_views:__other__",
    ]
    assert snap["page_views:__other__"].count == 1
    assert "events_by_type:__other__" not in snap  # two types fit the limit
    assert (snap["unique_users"].count, snap["unique_sessions"].count) == (3, 2)
    assert (snap["unique_pages"].count, snap["pageviews"].count) == (3, 3)
    assert (snap["revenue"].value, snap["revenue_histogram"].max) == (24.0, 20.0)
    assert hour.active_users == 3
    users = hour.metrics["unique_users"]
    assert isinstance(users, Unique)
    assert users.lg_k == 12
    assert agg.stats(T0 + HOUR).window_dimension_overflow == 1


def test_closed_parent_gets_a_late_delta_at_its_level() -> None:
    agg = aggregator(window_sizes=(60.0, HOUR), grace=5.0)
    agg.add(event(timestamp=T0 + 10), T0 + 10)
    assert rows(agg.close_due(T0 + 3605)) == [(60.0, 0, False, 1), (HOUR, 0, False, 1)]
    agg.add(event(timestamp=T0 + 20), T0 + 3606)
    assert rows(agg.close_due(T0 + 3610)) == [(60.0, 0, True, 1), (HOUR, 0, True, 1)]
    assert agg.stats(T0 + 3610).late_events == 1  # late at both levels, counted once
    assert agg.close_due(T0 + 9000) == []


def test_late_child_delta_goes_into_the_open_parent() -> None:
    agg = aggregator(window_sizes=(60.0, HOUR), grace=5.0)
    agg.add(event(timestamp=T0 + 10), T0 + 10)
    agg.close_due(T0 + 65)
    agg.add(event(timestamp=T0 + 20), T0 + 70)  # the minute is closed, the hour is not
    assert rows(agg.close_due(T0 + 75)) == [(60.0, 0, True, 1)]
    assert open_rows(agg) == [(HOUR, 0, 2)]
    assert rows(agg.close_due(T0 + 3605)) == [(HOUR, 0, False, 2)]
    assert agg.stats(T0 + 3605).late_events == 1


def test_open_child_of_a_closed_parent_becomes_a_late_delta_there() -> None:
    agg = aggregator(window_sizes=(60.0, HOUR), grace=5.0)
    agg.add(event(timestamp=T0 + 10), T0 + 10)
    assert rows(agg.close_all(T0 + 10)) == [(60.0, 0, False, 1), (HOUR, 0, False, 1)]
    # close_all closed the whole hour early, but only the first minute
    agg.add(event(timestamp=T0 + 100), T0 + 100)
    assert agg.stats(T0 + 100).late_events == 0
    assert open_rows(agg) == [(60.0, 60, 1)]
    assert rows(agg.close_due(T0 + 125)) == [(60.0, 60, False, 1), (HOUR, 0, True, 1)]
    assert agg.stats(T0 + 125).late_events == 1


def test_close_all_closes_every_level() -> None:
    agg = aggregator(window_sizes=(60.0, HOUR, DAY), grace=5.0)
    times = [10, 70, 3700, DAY + 5]
    agg.add_many([event(timestamp=T0 + t) for t in times], T0 + 100)
    assert rows(agg.close_due(T0 + 66)) == [(60.0, 0, False, 1)]
    assert rows(agg.close_all(T0 + 100)) == [
        (60.0, 60, False, 1),
        (60.0, 3660, False, 1),
        (60.0, DAY, False, 1),
        (HOUR, 0, False, 2),
        (HOUR, 3600, False, 1),
        (HOUR, DAY, False, 1),
        (DAY, 0, False, 3),
        (DAY, DAY, False, 1),
    ]
    assert agg.open_windows() == []
    assert agg.stats(T0 + 100).active_windows == 0
    agg.add(event(timestamp=T0 + 20), T0 + 101)
    assert rows(agg.close_all(T0 + 102)) == [
        (60.0, 0, True, 1),
        (HOUR, 0, True, 1),
        (DAY, 0, True, 1),
    ]
    assert agg.close_all(T0 + 103) == []


# -- live views ---------------------------------------------------------------------------


def test_live_windows_include_open_finer_windows() -> None:
    agg = aggregator(window_sizes=(60.0, HOUR), grace=5.0)
    agg.add_many(
        [event(timestamp=T0 + t) for t in (10, 70, 80, HOUR + 1)],
        T0 + 80,
    )
    assert live_totals(agg, HOUR) == {0: 3, HOUR: 1}
    assert live_totals(agg, 60.0) == {0: 1, 60: 2, HOUR: 1}
    assert list(agg.live_windows(60.0, T0 + 60, T0 + HOUR)) == [T0 + 60]
    assert list(agg.live_windows(HOUR, T0 + 1, T0 + HOUR)) == []  # starts, not overlaps
    assert agg.live_windows(60.0, T0 + 200, T0 + 300) == {}


def test_live_windows_include_pending_late_deltas() -> None:
    agg = aggregator(window_sizes=(60.0, HOUR), grace=5.0)
    agg.add_many([event(timestamp=T0 + 10), event(timestamp=T0 + 70)], T0 + 70)
    agg.close_due(T0 + 65)  # minute 0 emitted and now inside the open hour
    agg.add(event("click", T0 + 20, user_id="late"), T0 + 66)
    # the emitted minute row is history; only its late delta is live at the minute level
    assert live_totals(agg, 60.0) == {0: 1, 60: 1}
    assert live_totals(agg, HOUR) == {0: 3}
    hour = agg.live_windows(HOUR, T0, T0 + HOUR)[T0]
    assert hour["events_by_type:click"].count == 1  # type: ignore[union-attr]
    assert hour["unique_users"].estimate == 1  # type: ignore[union-attr]


def test_live_windows_of_a_closed_parent_show_only_what_is_not_emitted() -> None:
    agg = aggregator(window_sizes=(60.0, HOUR), grace=5.0)
    agg.add(event(timestamp=T0 + 10), T0)
    agg.close_all(T0 + 10)
    assert live_totals(agg, HOUR) == {}
    agg.add(event(timestamp=T0 + 100), T0 + 100)
    assert live_totals(agg, HOUR) == {0: 1}


def test_live_windows_are_fresh_copies() -> None:
    agg = aggregator(window_sizes=(60.0, HOUR), grace=5.0)
    agg.add(event("pageview", T0 + 10, "a", properties={"page": "/x"}), T0)
    for resolution in (60.0, HOUR):
        live = agg.live_windows(resolution, T0, T0 + HOUR)[T0]
        total = live["total_events"]
        users = live["unique_users"]
        assert isinstance(total, Counter)
        assert isinstance(users, Unique)
        total.increment(T0, 100.0)
        users.add("intruder", T0)
        live["page_views:/y"] = Counter()
        again = agg.live_windows(resolution, T0, T0 + HOUR)[T0]
        assert again["total_events"].count == 1  # type: ignore[union-attr]
        assert again["unique_users"].estimate == 1  # type: ignore[union-attr]
        assert "page_views:/y" not in again
    assert [w.metrics["total_events"].value for w in agg.open_windows()] == [1.0]


def test_live_windows_rejects_an_unknown_resolution() -> None:
    agg = aggregator(window_sizes=(60.0, HOUR))
    with pytest.raises(ValueError, match="resolution"):
        agg.live_windows(300.0, T0, T0 + HOUR)


# -- the invariant ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_every_event_is_in_exactly_one_row_per_resolution(seed: int) -> None:
    rng = random.Random(seed)
    sizes = rng.choice([(60.0, HOUR), (60.0, 300.0, HOUR), (10.0, 60.0, 600.0, HOUR)])
    grace = rng.choice([0.0, 5.0, 30.0])
    agg = aggregator(window_sizes=sizes, grace=grace, max_dimension_values=3)
    expected: dict[float, Tally[float]] = {size: Tally() for size in sizes}
    emitted: dict[float, Tally[float]] = {size: Tally() for size in sizes}
    closed_once: set[tuple[float, float]] = set()
    added = 0
    now = T0

    def record(closed: list[ClosedWindow]) -> None:
        # finest first, start order within a resolution
        order = [(sizes.index(w.resolution), w.start) for w in closed]
        assert order == sorted(order)
        for window in closed:
            assert window.start == window_start(window.start, window.resolution)
            assert window.end == window.start + window.resolution
            emitted[window.resolution][window.start] += window.events_count
            if not window.late:
                key = (window.resolution, window.start)
                assert key not in closed_once, f"{key} closed twice"
                closed_once.add(key)

    for _ in range(300):
        now += rng.choice([0.0, 1.0, 7.0, 45.0, 130.0, 700.0])
        action = rng.random()
        if action < 0.6:
            batch = [
                event(
                    rng.choice(["pageview", "click", "signup"]),
                    # mostly recent, some late by up to two hours, a few in the future
                    now + rng.choice([-1, -1, -1, -10, -70, -500, -3000, -7000, 40, 400]),
                    user_id=f"u{rng.randrange(20)}",
                    properties={"page": f"/{rng.randrange(6)}", "element": "e"},
                )
                for _ in range(rng.randrange(1, 8))
            ]
            agg.add_many(batch, now)
            added += len(batch)
            for e in batch:
                for size in sizes:
                    expected[size][window_start(e.timestamp, size)] += 1
        elif action < 0.95:
            record(agg.close_due(now))
        else:
            record(agg.close_all(now))
        # everything not yet emitted is visible live, in the right window
        for size in sizes:
            live = {start + T0: n for start, n in live_totals(agg, size).items()}
            assert emitted[size] + Tally(live) == expected[size]

    record(agg.close_all(now))
    for size in sizes:
        assert sum(emitted[size].values()) == added
        assert emitted[size] == expected[size]
        assert live_totals(agg, size) == {}
    stats = agg.stats(now)
    assert (stats.active_windows, stats.total_events) == (0, added)
    assert 0 < stats.late_events < added
