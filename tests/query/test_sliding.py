"""Sliding figures over the finest windows (pure): step boundaries, span edges, rates and
unions of user sketches across windows."""

from __future__ import annotations

import pytest

from twisted_rta.aggregation.metrics import Counter, Metric, Unique
from twisted_rta.query.figures import SlidingFigures
from twisted_rta.query.sliding import (
    SlidingSeries,
    latest_end,
    sliding_point,
    span_reads,
    step_ends,
    union_estimate,
)

T = 1_795_748_400.0  # 03:00:00Z, a multiple of 300
FIVE_EVERY_ONE = SlidingFigures(300.0, 60.0, ("rate", "unique"))


def users(*names: str, lg_k: int = 12) -> Unique:
    unique = Unique.with_lg_k(lg_k)
    for name in names:
        unique.add(name, 1.0)
    return unique


def minute(events: int, *names: str) -> dict[str, Metric]:
    return {"total_events": Counter(float(events), events, 1.0), "unique_users": users(*names)}


def test_step_ends_are_the_multiples_of_step_in_the_closed_range() -> None:
    assert step_ends(60.0, T - 150, T) == [T - 120, T - 60, T]
    assert step_ends(60.0, T - 120, T - 60) == [T - 120, T - 60]
    assert step_ends(60.0, T + 1, T + 59) == []
    assert step_ends(300.0, T - 1, T + 600) == [T, T + 300, T + 600]


def test_latest_end_is_the_last_boundary_at_or_before_now() -> None:
    assert latest_end(60.0, T) == T
    assert latest_end(60.0, T + 59.999) == T
    assert latest_end(60.0, T + 60) == T + 60
    assert latest_end(300.0, T + 299) == T


def test_a_span_takes_the_windows_from_its_start_up_to_not_including_its_end() -> None:
    windows = {
        T - 360: minute(100, "old"),  # before the span
        T - 300: minute(1, "a"),  # its first window
        T - 60: minute(2, "b"),  # its last
        T: minute(1000, "new"),  # the window at its end: not in it
    }
    point = sliding_point(FIVE_EVERY_ONE, windows, T)
    assert (point.start, point.end) == (T - 300, T)
    assert point.figures == {"rate": 3 / 300, "unique": 2}


def test_uniques_are_united_across_windows_never_summed() -> None:
    windows = {
        T - 300: minute(3, "a", "b", "c"),
        T - 240: minute(2, "b", "c"),
        T - 120: minute(4, "c", "d"),
    }
    point = sliding_point(FIVE_EVERY_ONE, windows, T)
    assert point.figures == {"rate": 9 / 300, "unique": 4}


def test_the_union_matches_the_query_layers_merge_on_large_sketches() -> None:
    sketches = [users(*(f"u{i}" for i in range(k * 700, k * 700 + 3000))) for k in range(5)]
    merged = sketches[0].copy()
    for sketch in sketches[1:]:
        merged.merge(sketch)
    assert union_estimate(sketches) == merged.estimate
    assert union_estimate(sketches) == pytest.approx(5800, rel=0.05)
    assert union_estimate(sketches[:1]) == sketches[0].estimate
    assert union_estimate([]) == 0


def test_sketches_of_different_precision_unite_at_the_coarser() -> None:
    fine, coarse = users("a", "b", lg_k=14), users("b", "c", lg_k=10)
    assert union_estimate([fine, coarse]) == 3


def test_an_empty_span_has_rate_0_and_no_users() -> None:
    point = sliding_point(FIVE_EVERY_ONE, {T - 600: minute(5, "a")}, T)
    assert point.figures == {"rate": 0, "unique": 0}


def test_only_the_configured_figures() -> None:
    spec = SlidingFigures(120.0, 60.0, ("unique",))
    point = sliding_point(spec, {T - 60: minute(5, "a", "b")}, T)
    assert point.figures == {"unique": 2}


def test_a_series_slides_by_step_and_leaves_the_windows_untouched() -> None:
    windows = {T + 60 * k: minute(k + 1, f"u{k}", "everyone") for k in range(10)}
    before = {start: metrics["unique_users"].to_bytes() for start, metrics in windows.items()}
    ends = step_ends(120.0, T, T + 600)  # every 2 minutes
    series = SlidingSeries(SlidingFigures(300.0, 120.0, ("rate", "unique")), windows)
    steps = list(series.steps(ends))
    assert steps == []  # a handful of windows: one step, no yield
    got = [(p.start - T, p.end - T, p.figures) for p in series.points]

    def figures(events: int, unique: int) -> dict[str, float]:
        return {"rate": events / 300, "unique": unique}

    assert got == [
        (-300, 0, figures(0, 0)),
        (-180, 120, figures(1 + 2, 3)),  # minutes 0 and 1: u0, u1, everyone
        (-60, 240, figures(1 + 2 + 3 + 4, 5)),
        (60, 360, figures(2 + 3 + 4 + 5 + 6, 6)),  # minutes 1..5
        (180, 480, figures(4 + 5 + 6 + 7 + 8, 6)),
        (300, 600, figures(6 + 7 + 8 + 9 + 10, 6)),
    ]
    after = {start: metrics["unique_users"].to_bytes() for start, metrics in windows.items()}
    assert after == before


def test_a_long_series_yields_between_steps() -> None:
    windows = {T + 60 * k: minute(1, f"u{k}") for k in range(2000)}
    ends = step_ends(60.0, T, T + 60 * 2000)
    series = SlidingSeries(FIVE_EVERY_ONE, windows)
    yields = sum(1 for _ in series.steps(ends))
    assert yields > 10
    assert len(series.points) == len(ends)
    assert series.points[-1].figures == {"rate": 5 / 300, "unique": 5}


def test_span_reads_count_the_finest_windows_over_all_points() -> None:
    assert span_reads(FIVE_EVERY_ONE, 60.0, 61) == 305
    assert span_reads(SlidingFigures(86400.0, 60.0, ("rate",)), 60.0, 2) == 2880
