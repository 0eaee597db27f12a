"""Batched ingest (one summary per batch) must give exactly what adding events one by one does."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.aggregation.factories import T0, event
from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.batch import BatchLayout, BatchSummary
from twisted_rta.aggregation.metrics import Counter, CounterFamily, Metric, Unique
from twisted_rta.aggregation.rules import (
    DEFAULT_RULES,
    AmountRule,
    DimensionRule,
    Rules,
    TypeRule,
)
from twisted_rta.events.model import Event

# Rules whose metrics several entries feed: values must still reach them in arrival order.
SHARED_RULES = Rules(
    (
        TypeRule(
            "pageview",
            "pageviews",
            dimensions=(
                DimensionRule("page", counter_prefix="pages", unique="unique_pages"),
                DimensionRule("ref", counter_prefix="pages"),
                DimensionRule("page", unique="seen"),
            ),
        ),
        TypeRule(
            "click",
            "clicks",
            dimensions=(DimensionRule("element", counter_prefix="pages", unique="seen"),),
            amounts=(AmountRule("amount", sum_counter="revenue"),),
        ),
        TypeRule(
            "purchase",
            "purchases",
            amounts=(
                AmountRule("amount", sum_counter="revenue", histogram="revenue_histogram"),
                AmountRule("tax", sum_counter="revenue"),
            ),
        ),
    )
)


def random_events(rng: random.Random, count: int, now: float) -> list[Event]:
    events = []
    for _ in range(count):
        props: dict[str, Any] = {
            "page": rng.choice([f"/p{rng.randrange(12)}", "", "__other__", 7]),
            "element": rng.choice([f"b{rng.randrange(6)}", True]),
            "amount": rng.choice([rng.uniform(0, 100), rng.randrange(9), 0.1, True, "5", 10**400]),
        }
        if rng.random() < 0.5:
            props["ref"] = f"r{rng.randrange(5)}"
        if rng.random() < 0.3:
            props["tax"] = rng.uniform(0, 3)
        events.append(
            event(
                rng.choice(["pageview"] * 4 + ["click"] * 3 + ["purchase", "signup", "__other__"]),
                # Mostly this minute, some in earlier minutes, hours and days: windows that
                # are open, closed (late) or not opened yet.
                now - rng.choice([0, 0, 0, 1, 30, 61, 200, 4000, 90000]) + rng.random(),
                rng.choice([None, "", f"u{rng.randrange(300)}"]),
                rng.choice([None, f"s{rng.randrange(200)}"]),
                props,
            )
        )
    return events


def state(metrics: dict[str, Metric]) -> dict[str, Any]:
    """Snapshots plus the exact serialised state (sketch registers, not just estimates)."""
    return {name: (metric.snapshot(name), metric.to_bytes()) for name, metric in metrics.items()}


def observable(agg: Aggregator, now: float) -> dict[str, Any]:
    return {
        "metrics": agg.metrics(),
        "global": state(agg.global_metric_states()),
        "open": agg.open_windows(),
        "live": {
            size: {
                start: state(metrics)
                for start, metrics in agg.live_windows(size, T0 - 10**6, T0 + 10**6).items()
            }
            for size in agg.window_sizes
        },
        "stats": agg.stats(now),
    }


@pytest.mark.parametrize("rules", [DEFAULT_RULES, SHARED_RULES], ids=["default", "shared"])
@pytest.mark.parametrize("seed", range(6))
def test_add_many_equals_adding_one_by_one(seed: int, rules: Rules) -> None:
    rng = random.Random(seed)

    def new() -> Aggregator:
        # A small dimension limit so that overflow (and admission order) is exercised.
        return Aggregator(
            window_sizes=(60.0, 3600.0, 86400.0),
            grace=5.0,
            max_dimension_values=4,
            started_at=T0,
            rules=rules,
        )

    one, many = new(), new()
    now = T0
    for _ in range(12):
        now += rng.choice([0.0, 2.5, 40.0, 70.0, 400.0])
        # Fewer than 200 purchases in all: KLL sketches stay exact (no random compaction).
        events = random_events(rng, rng.choice([0, 1, 2, 30, 80]), now)
        for e in events:
            one.add(e, now)
        many.add_many(events, now)
        assert observable(one, now) == observable(many, now)
        closed_one, closed_many = one.close_due(now), many.close_due(now)
        assert [(w.resolution, w.start, w.late, state(dict(w.metrics))) for w in closed_one] == [
            (w.resolution, w.start, w.late, state(dict(w.metrics))) for w in closed_many
        ]
    assert one.stats(now).late_events > 0
    assert one.stats(now).dimension_overflow > 0


def test_summary_keeps_arrival_order_across_entries_feeding_one_metric() -> None:
    layout = BatchLayout.of(SHARED_RULES)
    events = [
        event("pageview", properties={"page": "/a", "ref": "r"}),
        event("click", properties={"element": "x"}),
        event("pageview", properties={"page": "/b"}),
        event("pageview", properties={"page": "/a", "ref": "/b"}),
    ]
    summary = BatchSummary.of(events, layout)
    # Each distinct value once, in order of first arrival, with its occurrences.
    channels = {name: list(summary.tallies[channel].items()) for name, channel in layout.families}
    channels |= {name: list(summary.tallies[channel].items()) for name, channel in layout.uniques}
    assert channels == {
        "pages": [("/a", 2), ("r", 1), ("x", 1), ("/b", 2)],
        "unique_pages": [("/a", 2), ("/b", 1)],
        "seen": [("/a", 2), ("x", 1), ("/b", 1)],
    }
    assert summary.types == {"pageview": 3, "click": 1}


def test_summary_counts_each_user_and_session_once_in_order_of_first_arrival() -> None:
    events = [
        event("pageview", user_id="u2", session_id="s1"),
        event("pageview", user_id="u1", session_id=None),
        event("click", user_id="", session_id="s1"),
        event("pageview", user_id="u2", session_id="s2"),
        event("pageview", user_id=None, session_id="s1"),
    ]
    summary = BatchSummary.of(events, BatchLayout.of(DEFAULT_RULES))
    assert (summary.size, summary.users, summary.sessions) == (5, ["u2", "u1"], ["s1", "s2"])


def test_duplicate_members_count_once_in_sketches_but_every_event_counts() -> None:
    agg = Aggregator(window_sizes=(60.0,), grace=5.0, max_dimension_values=10, started_at=T0)
    events = [
        event("pageview", T0 + i, user_id=f"u{i % 2}", session_id="s", properties={"page": "/a"})
        for i in range(10)
    ]
    agg.add_many(events, T0 + 10)
    reference = Unique.with_lg_k(agg.global_lg_k)
    reference.add_all(["u0", "u1"], T0 + 10)
    users = agg.global_metric_states()["unique_users"]
    assert isinstance(users, Unique)
    assert users.sketch.serialize_compact() == reference.sketch.serialize_compact()
    totals = {name: snap.count for name, snap in agg.metrics().items()}
    assert totals["total_events"] == totals["pageviews"] == totals["page_views:/a"] == 10
    assert (totals["unique_users"], totals["unique_sessions"], totals["unique_pages"]) == (2, 1, 1)
    [window] = agg.open_windows()
    assert window.metrics["total_events"].count == window.metrics["page_views:/a"].count == 10
    assert window.metrics["unique_users"].count == 2


def test_counter_increments_at_once() -> None:
    counter = Counter()
    counter.increment_times(3, 5.0)
    amounts = [0.1, 0.1, 0.1]
    counter.increment_each(amounts, 6.0)
    one_by_one = Counter()
    for _ in range(3):
        one_by_one.increment(5.0)
    for amount in amounts:
        one_by_one.increment(6.0, amount)
    # Added one at a time, not as 3 + sum(amounts) (which is 3.3).
    assert counter == one_by_one == Counter(3.3000000000000003, 6, 6.0)


def test_unique_add_all() -> None:
    batched, single = Unique.with_lg_k(10), Unique.with_lg_k(10)
    members = [f"m{i % 700}" for i in range(1000)]
    batched.add_all(members, 2.0)
    for member in members:
        single.add(member, 2.0)
    assert batched.to_bytes() == single.to_bytes()
    assert batched.updated_at == 2.0


def test_family_increment_counts_admits_in_order_and_counts_overflow_per_event() -> None:
    registry: dict[str, Metric] = {}
    family = CounterFamily("clicks", 2, registry)
    family.increment_counts({"b": 2, "__other__": 1, "a": 3, "c": 4}, 7.0)
    assert {name: (m.value, m.count) for name, m in registry.items()} == {
        "clicks:b": (2.0, 2),
        "clicks:__other__": (5.0, 5),
        "clicks:a": (3.0, 3),
    }
    assert family.overflow == 5
    assert all(metric.updated_at == 7.0 for metric in registry.values())
