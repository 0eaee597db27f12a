"""The metric list built in steps, the slicer that runs steps, and the family tally."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from twisted.internet.task import Clock, Cooperator

from tests.aggregation.factories import aggregator as make_aggregator
from tests.helpers import NOW, failure_of, result_of
from twisted_rta.aggregation.metrics import Counter, Gauge, Histogram, Metric, Unique
from twisted_rta.events.model import Event
from twisted_rta.query.listing import MetricPage, MetricViews, PageRequest
from twisted_rta.query.service import OTHER, Breakdown, FamilyTally
from twisted_rta.query.slices import STEP_ITEMS, Slicer, StepBudget
from twisted_rta.query.views import memo_time_format, metric_view, metric_view_of
from twisted_rta.store.interface import StoredMetric
from twisted_rta.timefmt import iso_utc

TURN = 0.001  # the test slicers schedule their ticks this far ahead: one tick per advance


def one_step_per_tick(clock: Clock) -> Slicer:
    """A slicer on ``clock`` whose every tick (``clock.advance(TURN)``) runs one step."""
    return Slicer(
        Cooperator(
            terminationPredicateFactory=lambda: lambda: True,
            scheduler=lambda work: clock.callLater(TURN, work),
        )
    )


def counters(n: int) -> dict[str, Metric]:
    return {f"m{i:05d}": Counter(float(i), i, NOW - i % 3) for i in range(n)}


def fill(page: MetricPage) -> MetricViews:
    views: MetricViews = []
    for _ in page.steps(views.extend):
        pass
    return views


# -- views -----------------------------------------------------------------------------------


def every_kind() -> dict[str, Metric]:
    histogram = Histogram()
    for x in (1.5, 2.0, 30.25):
        histogram.observe(x, NOW)
    unique = Unique()
    unique.add_all(["a", "b", "c"], NOW + 0.123)
    gauge = Gauge()
    gauge.set(2.5, NOW)
    return {
        "c": Counter(3.0, 3, NOW),
        "g": gauge,
        "h": histogram,
        "empty": Histogram(),
        "u": unique,
        "big": Counter(2.0**60, 1, NOW),
    }


def test_direct_views_equal_the_snapshot_views_for_every_kind() -> None:
    format_time = memo_time_format()
    for name, metric in every_kind().items():
        assert metric_view_of(name, metric, format_time) == metric_view(metric.snapshot(name))
        assert list(metric_view_of(name, metric)) == list(metric_view(metric.snapshot(name)))


def test_the_memo_formats_like_iso_utc() -> None:
    format_time = memo_time_format()
    for instant in (NOW, NOW + 0.5, NOW, 0.0):
        assert format_time(instant) == iso_utc(instant)


# -- the slicer --------------------------------------------------------------------------------


def steps(log: list[int], n: int) -> Iterator[None]:
    for i in range(n):
        if i:
            yield None
        log.append(i)


def test_the_first_step_runs_inline_and_each_turn_runs_one_more() -> None:
    clock = Clock()
    log: list[int] = []
    done = one_step_per_tick(clock).run(steps(log, 3))
    assert log == [0] and not done.called
    clock.advance(TURN)
    assert log == [0, 1] and not done.called
    clock.advance(TURN)
    assert log == [0, 1, 2]
    clock.advance(TURN)  # the cooperator finds the generator exhausted
    assert result_of(done) is None


def test_a_generator_that_never_yields_finishes_inline() -> None:
    log: list[int] = []
    assert result_of(one_step_per_tick(Clock()).run(steps(log, 1))) is None
    assert log == [0]


def test_a_failing_step_fails_the_run() -> None:
    clock = Clock()

    def failing() -> Iterator[None]:
        yield None
        raise ValueError("boom")

    done = one_step_per_tick(clock).run(failing())
    clock.advance(TURN)
    assert failure_of(done).check(ValueError)
    assert failure_of(one_step_per_tick(clock).run(iter(lambda: 1 / 0, None))).check(
        ZeroDivisionError
    )


def test_slices_end_after_their_budget_of_time() -> None:
    clock = Clock()
    readings = iter(range(1000))
    # A timer that moves one unit per reading and a budget of 1.5 units: two steps a tick.
    slicer = Slicer.on(clock, budget=1.5, timer=lambda: float(next(readings)))
    log: list[int] = []
    done = slicer.run(steps(log, 6))
    assert log == [0]
    assert [call.getTime() for call in clock.getDelayedCalls()] == [0.0]  # the next turn
    tick = clock.calls.pop(0)  # run the one tick alone (Clock.advance(0) runs them all)
    tick.func(*tick.args, **tick.kw)
    assert log == [0, 1, 2]
    clock.advance(0)
    assert log == list(range(6)) and done.called


def test_the_budget_is_due_after_its_items() -> None:
    budget = StepBudget(10)
    assert not budget.due()
    budget.spend(9)
    assert not budget.due()
    budget.spend(1)
    assert budget.due()
    assert not budget.due()  # a fresh step


# -- the list ---------------------------------------------------------------------------------


def test_the_whole_list_is_sorted_and_equal_to_one_snapshot_rendering() -> None:
    live = counters(1000)
    live["a_histogram"] = every_kind()["h"]
    views = fill(MetricPage(live, [], True))
    expected = {name: metric_view(live[name].snapshot(name)) for name in sorted(live)}
    assert [name for name, _ in views] == list(expected)
    assert dict(views) == expected


def test_the_views_come_a_step_at_a_time_and_nothing_after_the_last() -> None:
    live = counters(3 * STEP_ITEMS)
    page = MetricPage(live, [], True)
    chunks: list[MetricViews] = []
    run = page.steps(chunks.append)
    next(run)
    assert len(chunks) == 1 and len(chunks[0]) == STEP_ITEMS
    next(run)
    assert [len(chunk) for chunk in chunks] == [STEP_ITEMS, STEP_ITEMS]
    with pytest.raises(StopIteration):
        next(run)
    assert sum(len(chunk) for chunk in chunks) == len(live)


def test_a_small_list_is_one_step() -> None:
    page = MetricPage(counters(STEP_ITEMS - 1), [], True)
    run = page.steps(lambda views: None)
    with pytest.raises(StopIteration):
        next(run)


def test_pages_follow_the_cursor_to_the_end() -> None:
    live = counters(25)
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = MetricPage(live, [], True, PageRequest(after=after, limit=10))
        seen += [name for name, _ in fill(page)]
        pages += 1
        if page.next_after is None:
            break
        assert page.next_after == seen[-1]
        after = page.next_after
    assert pages == 3 and seen == sorted(live)


def test_an_exact_last_page_has_no_next() -> None:
    page = MetricPage(counters(20), [], True, PageRequest(limit=20))
    assert len(fill(page)) == 20 and page.next_after is None


def test_after_need_not_be_a_name_and_prefix_narrows_the_list() -> None:
    live = {name: Counter(1.0, 1, NOW) for name in ("a:1", "a:2", "a:3", "b:1", "a")}
    page = MetricPage(live, [], True, PageRequest(prefix="a:", after="a:10", limit=5))
    assert [name for name, _ in fill(page)] == ["a:2", "a:3"]
    assert page.next_after is None
    past = MetricPage(live, [], True, PageRequest(after="zzz"))
    assert fill(past) == [] and past.next_after is None


def test_stored_totals_of_other_nodes_are_merged_and_listed() -> None:
    live: dict[str, Metric] = {"shared": Counter(1.0, 1, NOW), "mine": Counter(2.0, 2, NOW)}
    rows = [
        StoredMetric("shared", 0, 0, "node-b", Counter(10.0, 3, NOW + 1)),
        StoredMetric("theirs", 0, 0, "node-b", Counter(5.0, 5, NOW)),
        StoredMetric("shared", 0, 0, "node-c", Counter(100.0, 4, NOW)),
    ]
    views = dict(fill(MetricPage(live, rows, True)))
    assert list(views) == ["mine", "shared", "theirs"]
    assert (views["shared"]["value"], views["shared"]["count"]) == (111, 8)
    assert views["shared"]["timestamp"] == iso_utc(NOW + 1)
    assert live["shared"].value == 1.0  # the live metric is read, never merged into


# -- the family tally -----------------------------------------------------------------------


def tally(metrics: list[tuple[str, Metric]], limit: int) -> Breakdown:
    family = FamilyTally("page_views")
    result: list[Breakdown] = []
    for _ in family.add_steps(iter(metrics)):
        pass
    for _ in family.rank_steps(limit, result):
        pass
    return result[0]


def test_the_top_values_by_count_then_name_with_the_rest_in_other() -> None:
    metrics: list[tuple[str, Metric]] = [
        (f"page_views:/p{i:04d}", Counter(float(i % 50), i % 50, NOW)) for i in range(2000)
    ]
    metrics.append((f"page_views:{OTHER}", Counter(7.0, 7, NOW)))
    metrics.append(("page_views:/p0049", Counter(1.0, 1, NOW)))  # a second node's row
    result = tally(metrics, 5)
    values = {name[len("page_views:") :]: 0.0 for name, _ in metrics}
    for name, metric in metrics:
        values[name[len("page_views:") :]] += metric.value
    ranked = sorted(
        ((key, value) for key, value in values.items() if key != OTHER),
        key=lambda kv: (-kv[1], kv[0]),
    )
    assert result.items == ranked[:5]
    assert result.items[0] == ("/p0049", 50.0)
    assert result.other == 7.0 + sum(value for _, value in ranked[5:])
    assert result.total == sum(values.values())


def test_a_kind_clash_is_skipped_like_a_merge_would() -> None:
    result = tally(
        [("page_views:/a", Gauge(3.0, 1, NOW)), ("page_views:/a", Counter(4.0, 1, NOW))], 10
    )
    assert result.items == [] and result.total == 0


def test_the_tally_yields_between_steps() -> None:
    family = FamilyTally("page_views")
    metrics = [(f"page_views:/{i}", Counter(1.0, 1, NOW)) for i in range(3 * STEP_ITEMS)]
    assert sum(1 for _ in family.add_steps(iter(metrics))) == 2


# -- through the aggregator -----------------------------------------------------------------


def test_the_listing_reads_a_real_aggregator_like_its_snapshots() -> None:
    aggregator = make_aggregator()
    events = [
        Event(f"e{i}", "pageview", NOW, f"u{i % 7}", None, {"page": f"/p{i % 300}"})
        for i in range(900)
    ]
    events.append(Event("buy", "purchase", NOW, "u1", None, {"amount": 19.5}))
    aggregator.add_many(events, NOW)
    views = fill(MetricPage(aggregator.global_metrics(), [], True))
    expected = {name: metric_view(snapshot) for name, snapshot in aggregator.metrics().items()}
    assert json.dumps(dict(views)) == json.dumps(expected)


def test_live_windows_by_name_copy_only_those_metrics() -> None:
    aggregator = make_aggregator(window_sizes=(60.0, 3600.0))
    events = [
        Event(f"e{i}", "pageview", NOW + i, f"u{i}", None, {"page": f"/p{i % 30}"})
        for i in range(120)
    ]
    aggregator.add_many(events, NOW + 120)
    for size in (60.0, 3600.0):
        whole = aggregator.live_windows(size, 0, NOW + 7200)
        wanted = ["pageviews", "page_views:/p3", "nope"]
        some = aggregator.live_windows(size, 0, NOW + 7200, names=wanted)
        assert list(some) == list(whole)
        for start, metrics in some.items():
            assert set(metrics) == {"pageviews", "page_views:/p3"}
            for name, metric in metrics.items():
                assert metric.snapshot(name) == whole[start][name].snapshot(name)
