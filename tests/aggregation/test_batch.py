"""Batched ingest (one summary per batch) must give exactly what adding events one by one does."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from tests.aggregation.factories import T0, event
from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.batch import BatchPlan, BatchSummary, plan_for
from twisted_rta.aggregation.fields import FieldPath
from twisted_rta.aggregation.metrics import (
    Counter,
    CounterFamily,
    Gauge,
    Histogram,
    Metric,
    SeriesFamily,
    Unique,
)
from twisted_rta.aggregation.metricset import MetricSet
from twisted_rta.aggregation.rules import (
    DEFAULT_RULES,
    Condition,
    DropRule,
    Match,
    MetricRule,
    Rules,
)
from twisted_rta.events.model import Event

P = FieldPath.parse
PAGE = P("properties.page")
AMOUNT = P("properties.amount")
PRICE = P("properties.price")
COUNTRY = P("properties.country")
PLAN = P("properties.plan")

# Every kind of rule but gauges, several reading one field (page, amount, price, country,
# plan), with globs, where conditions, 1-3 labels and small bounds (so buckets fill).
#
# The buckets of labelled sums and histograms only read exact quarter values (price,
# cart.total: exact sums in any order); arbitrary floats (amount, tax, level) go to
# unlabelled or unbounded metrics: see FLOAT_BUCKET_RULES for why.
MIXED_RULES = Rules(
    (
        MetricRule("views", Match(type="pageview"), count=True, labels=(("page", PAGE),)),
        MetricRule(
            "view_refs",
            Match(type_glob="page*"),
            count=True,
            labels=(("ref", P("properties.ref")), ("page", PAGE)),
            max_series=3,
            total=True,
        ),
        MetricRule("pages_seen", Match(type="pageview"), unique=PAGE),
        MetricRule(
            "order",
            Match(type="purchase"),
            count=True,
            sum=PRICE,
            histogram=PRICE,
            labels=(("plan", PLAN),),
            max_series=2,
            total=True,
        ),
        MetricRule("revenue", Match(type="purchase"), sum=AMOUNT, histogram=AMOUNT),
        MetricRule(
            "revenue_by_country",
            Match(type="purchase"),
            sum=AMOUNT,
            labels=(("c", COUNTRY),),
            max_series=1000,
        ),
        MetricRule(
            "eu_tax",
            Match(type="purchase", where=(Condition(COUNTRY, ("fr", "de")),)),
            sum=P("properties.tax"),
        ),
        MetricRule(
            "cart",
            Match(type_glob="[cp][lu]*"),  # click, purchase
            histogram=P("properties.cart.total"),
            labels=(("country", COUNTRY), ("kind", P("type"))),
            max_series=2,
        ),
        MetricRule(
            "clicks_by",
            Match(type="click", where=(Condition(P("properties.ok"), (True,)),)),
            count=True,
            labels=(
                ("element", P("properties.element")),
                ("user", P("user_id")),
                ("session", P("session_id")),
            ),
            max_series=1,
        ),
        MetricRule(
            "levels",
            Match(type_glob="*", where=(Condition(P("properties.n"), (1, "one")),)),
            sum=P("properties.level"),
            histogram=P("properties.level"),
        ),
        MetricRule(
            "planned",
            Match(type_glob="*", where=(Condition(PLAN, present=True),)),
            count=True,
            labels=(("plan", PLAN),),
            max_series=2,
        ),
        MetricRule(
            "unplanned",
            Match(type_glob="*", where=(Condition(PLAN, present=False),)),
            sum=P("properties.level"),
        ),
        # A labelled unique, unbounded: see BOUNDED_UNIQUE_RULES.
        MetricRule(
            "plans", Match(type_glob="*"), unique=PLAN, labels=(("c", COUNTRY),), max_series=1000
        ),
        MetricRule("by_type", Match(type_glob="*"), count=True, labels=(("t", P("type")),)),
    ),
    drops=(
        DropRule(Match(type="bot")),
        DropRule(Match(type_glob="debug*", where=(Condition(P("properties.env"), ("test",)),))),
    ),
)

# The rule sets below make MIXED_RULES fail the equivalence through a library bug each.
TEMPERATURE = P("properties.temp")
GAUGE_RULES = Rules(
    (
        *MIXED_RULES.metrics,
        MetricRule("temp", Match(type_glob="*"), gauge=TEMPERATURE),
        MetricRule(
            "room_temp",
            Match(type_glob="*"),
            gauge=TEMPERATURE,
            labels=(("room", P("properties.room")),),
            max_series=2,
            total=True,
        ),
    )
)
BOUNDED_UNIQUE_RULES = Rules(
    (
        *(r for r in MIXED_RULES.metrics if r.name != "plans"),
        MetricRule(
            "plans", Match(type_glob="*"), unique=PLAN, labels=(("c", COUNTRY),), max_series=1
        ),
    )
)
FLOAT_BUCKET_RULES = Rules(
    (
        *MIXED_RULES.metrics,
        MetricRule(
            "big_by_plan",
            Match(type_glob="*"),
            sum=P("properties.big"),
            labels=(("plan", PLAN),),
            max_series=1,
        ),
    )
)

OTHER = "__other__"
TYPES = ["pageview"] * 4 + ["click"] * 3 + ["purchase"] * 2
TYPES += ["page_exit", "signup", "PageView", "bot", "debug.x", "__other__"]


def random_event(rng: random.Random, now: float) -> Event:
    props: dict[str, Any] = {}

    def maybe(key: str, choices: Sequence[Any], p: float = 0.85) -> None:
        if rng.random() < p:
            props[key] = rng.choice(choices)

    maybe("page", [f"/p{rng.randrange(8)}", f"/p{rng.randrange(3)}", "", OTHER, "a,b=c\\", 7, None])
    maybe("ref", [f"r{rng.randrange(3)}", True, None], 0.6)
    invalid = [True, "5", 10**400, -1.5, None, math.inf, math.nan, [1]]
    maybe("amount", [rng.uniform(0, 100), rng.randrange(9), 0.1, -0.0, *invalid])
    maybe("price", [rng.randrange(400) / 4, rng.randrange(400) / 4, rng.randrange(9), *invalid])
    maybe("plan", ["free", "pro", "pro", "team", "ent", 3, None])
    maybe("tax", [rng.uniform(0, 3), 0.1, -1, "x"], 0.5)
    maybe("country", ["fr", "de", "us", "uk", "a=b,c", None, 1])
    maybe(
        "cart",
        [
            {"total": rng.randrange(-200, 200) / 4},
            {"total": rng.randrange(-5, 5)},
            {"total": "x"},
            {"total": None},
            "flat",
            {"total": 10**400},
        ],
        0.7,
    )
    maybe("element", [f"b{rng.randrange(7)}", True, None])
    maybe("ok", [True, True, True, 1, 1.0, False, "true"])
    maybe("n", [1, 1.0, True, "1", "one", 2], 0.6)
    maybe("level", [rng.uniform(-10, 10), -0.0, 0.0, "x", math.nan, 10**400])
    maybe("temp", [rng.uniform(-20, 40), rng.randrange(3), None, "hot", -math.inf])
    maybe("room", ["r0", "r1", "r2", "r3", 5])
    maybe("env", ["test", "prod"], 0.5)
    maybe("big", [rng.random() * 10 ** rng.randrange(12)])
    return event(
        rng.choice(TYPES),
        # Mostly this minute, some in earlier minutes, hours and days: windows that are open,
        # closed (late) or not opened yet; few distinct times, so gauges see ties.
        now - rng.choice([0, 0, 0, 1, 30, 61, 200, 4000, 90000]) + rng.choice([0.0, 0.5, 0.25]),
        rng.choice([None, "", f"u{rng.randrange(30)}", f"u{rng.randrange(30)}"]),
        rng.choice([None, f"s{rng.randrange(20)}", f"s{rng.randrange(20)}"]),
        props,
    )


def state(metrics: Mapping[str, Metric]) -> dict[str, Any]:
    """Snapshots plus the exact serialised state: float sums bit for bit, sketch registers
    (not just estimates), a gauge's event time."""
    return {name: (metric.snapshot(name), metric.to_bytes()) for name, metric in metrics.items()}


def set_state(metrics: MetricSet) -> dict[str, Any]:
    names = list(metrics.metrics)
    return {
        "metrics": state(metrics.metrics),
        # Within a family, the order of admission (merges depend on it).
        "families": {
            base: [name for name in names if name.partition(":")[0] == base and ":" in name]
            for base in metrics.rules.families()
        },
        "overflow": metrics.overflow_by_base(),
        "generic": (metrics.total_events, metrics.unique_users, metrics.unique_sessions),
        "published": metrics.published,
    }


def assert_same(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """``actual == expected``, naming the metrics that differ first."""
    got, wanted = actual["metrics"], expected["metrics"]
    assert (
        sorted(name for name in got.keys() | wanted.keys() if got.get(name) != wanted.get(name))
        == []
    )
    assert actual["overflow"] == expected["overflow"]
    assert actual == expected


def batches(rng: random.Random) -> list[tuple[float, list[Event]]]:
    out, now = [], T0
    for _ in range(14):
        now += rng.choice([0.0, 2.5, 40.0, 70.0, 400.0])
        out.append((now, [random_event(rng, now) for _ in range(rng.choice([0, 1, 2, 40, 80]))]))
    return out


def check_set_equivalence(seed: int, rules: Rules) -> tuple[MetricSet, dict[tuple[str, str], int]]:
    rng = random.Random(seed)
    plan = plan_for(rules)
    one, summed, twice, many = (MetricSet(rules, 4, 10) for _ in range(4))
    skips_one: dict[tuple[str, str], int] = {}
    skips_batched: dict[tuple[str, str], int] = {}
    for now, events in batches(rng):
        for e in events:
            one.add(e, now)
            for skip, n in BatchSummary.of([e], plan).skips.items():
                skips_one[skip] = skips_one.get(skip, 0) + n
        summary = BatchSummary.of(events, plan)
        for skip, n in summary.skips.items():
            skips_batched[skip] = skips_batched.get(skip, 0) + n
        # One summary feeds several sets (the all-time set and a window): applying it to
        # one must leave it intact for the next.
        summed.add_summary(summary, now)
        twice.add_summary(summary, now)
        many.add_many(iter(events), now)
        expected = set_state(one)
        for other in (summed, twice, many):
            assert_same(set_state(other), expected)
        assert skips_batched == skips_one
    return one, skips_one


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param(DEFAULT_RULES, id="default"),
        pytest.param(MIXED_RULES, id="mixed"),
        pytest.param(
            GAUGE_RULES,
            id="gauges",
        ),
        pytest.param(
            BOUNDED_UNIQUE_RULES,
            id="bounded-labelled-unique",
        ),
        pytest.param(
            FLOAT_BUCKET_RULES,
            id="float-bucket",
        ),
    ],
)
@pytest.mark.parametrize("seed", range(5))
def test_summary_applied_to_a_set_equals_adding_events_one_by_one(seed: int, rules: Rules) -> None:
    one, skips = check_set_equivalence(seed, rules)
    if rules is not DEFAULT_RULES and rules is not MIXED_RULES:
        return  # (the rule sets made for one path: the equivalence is the check)
    # The run exercised what it is meant to: buckets, admitted series, several kinds, skips.
    overflow = one.overflow_by_base()
    assert overflow["events_by_type"] > 0
    if rules is DEFAULT_RULES:
        assert overflow["page_views"] > 0
        assert overflow["clicks"] > 0
        assert {reason for _, reason in skips} >= {"missing", "mistyped", "out_of_range"}
        return
    for base in ("views", "view_refs", "order_count", "cart", "clicks_by"):
        assert overflow[base] > 0, base
    assert {reason for _, reason in skips} == {
        "missing",
        "mistyped",
        "out_of_range",
        "missing_label",
        "mistyped_label",
    }
    assert {type(m) for m in one.metrics.values()} == {Counter, Histogram, Unique}
    for name, metric in one.metrics.items():
        # Few observations per histogram: KLL sketches stay exact (no random compaction),
        # so their bytes can be compared.
        if isinstance(metric, Histogram):
            assert metric.count < 200, name
    for name in ("levels_sum", "levels_histogram", "eu_tax", "pages_seen", "revenue_sum"):
        assert name in one.metrics, name


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


@pytest.mark.parametrize("rules", [DEFAULT_RULES, MIXED_RULES], ids=["default", "mixed"])
@pytest.mark.parametrize("seed", range(4))
def test_aggregator_add_many_equals_adding_one_by_one(seed: int, rules: Rules) -> None:
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
    for now, events in batches(rng):
        for e in events:
            one.add(e, now)
        many.add_many(events, now)
        assert observable(one, now) == observable(many, now)
        closed_one, closed_many = one.close_due(now), many.close_due(now)
        assert [(w.resolution, w.start, w.late, state(dict(w.metrics))) for w in closed_one] == [
            (w.resolution, w.start, w.late, state(dict(w.metrics))) for w in closed_many
        ]
    stats = one.stats(now)
    assert stats.late_events > 0
    assert stats.dimension_overflow > 0
    assert sum(stats.rule_skips.values()) > 0
    if rules is MIXED_RULES:
        assert stats.events_dropped > 0
        assert stats.dimension_overflow_by_base["clicks_by"] > 0
        assert stats.dimension_overflow_by_base["cart"] > 0


# -- the summary ----------------------------------------------------------------------------


def spec_index(plan: BatchPlan, name: str) -> int:
    [index] = [i for i, spec in enumerate(plan.specs) if spec.name == name]
    return index


SHARED = Rules(
    (
        MetricRule("views", Match(type="pageview"), count=True, labels=(("page", PAGE),)),
        MetricRule("seen", Match(type_glob="*"), unique=PAGE),
        MetricRule(
            "by_ref", Match(type="pageview"), count=True, labels=(("ref", P("properties.ref")),)
        ),
        MetricRule(
            "amounts",
            Match(type_glob="*"),
            sum=AMOUNT,
            histogram=AMOUNT,
            labels=(("page", PAGE),),
            total=True,
        ),
    )
)


def test_summary_keeps_arrival_order_and_shares_fields_between_rules() -> None:
    plan = plan_for(SHARED)
    events = [
        event("pageview", properties={"page": "/a", "ref": "r", "amount": 2}),
        event("click", properties={"page": "x", "amount": -1}),
        event("pageview", properties={"page": "/b", "amount": 0.5}),
        event("pageview", properties={"page": "/a", "ref": "/b", "amount": "3"}),
        event("click", properties={"page": 3, "amount": 1}),
    ]
    summary = BatchSummary.of(events, plan)
    assert summary.size == 5
    assert summary.types == {"pageview": 3, "click": 2}

    def at(name: str) -> tuple[Any, Any]:
        i = spec_index(plan, name)
        return summary.totals[i], summary.series[i]

    # Each distinct value once, in order of first arrival, with its occurrences.
    assert at("views") == (None, {"/a": 2, "/b": 1})
    assert at("by_ref") == (None, {"r": 1, "/b": 1})
    assert at("seen") == (["/a", "x", "/b"], None)  # distinct members in order
    assert at("amounts_sum") == ([2.0, 0.5, 1.0], {"/a": [2.0], "/b": [0.5]})
    assert at("amounts_histogram") == (
        [2.0, -1.0, 0.5, 1.0],
        {"/a": [2.0], "x": [-1.0], "/b": [0.5]},
    )
    # Skips are counted per metric, under the rule's name.
    assert summary.skips == {
        ("by_ref", "missing_label"): 1,
        ("seen", "mistyped"): 1,
        ("amounts", "out_of_range"): 1,  # -1, for the sum
        ("amounts", "mistyped"): 2,  # "3", for the sum and for the histogram
        ("amounts", "mistyped_label"): 2,  # page 3 with a valid amount, for both
    }


def test_summary_counts_each_user_and_session_once_in_order_of_first_arrival() -> None:
    events = [
        event("pageview", user_id="u2", session_id="s1"),
        event("pageview", user_id="u1", session_id=None),
        event("click", user_id="", session_id="s1"),
        event("pageview", user_id="u2", session_id="s2"),
        event("pageview", user_id=None, session_id="s1"),
    ]
    summary = BatchSummary.of(events, plan_for(DEFAULT_RULES))
    assert (summary.size, summary.users, summary.sessions) == (5, ["u2", "u1"], ["s1", "s2"])


def test_empty_batch_summary() -> None:
    summary = BatchSummary.of([], plan_for(MIXED_RULES))
    assert (summary.size, summary.types, summary.users, summary.skips) == (0, {}, [], {})
    assert set(summary.totals) == set(summary.series) == {None}
    metrics = MetricSet(MIXED_RULES, 4, 10)
    metrics.add_summary(summary, T0)
    assert metrics.metrics == {}
    assert not metrics.published


def test_gauge_summary_keeps_the_latest_event_time_later_arrival_on_ties() -> None:
    rules = Rules(
        (
            MetricRule(
                "temp",
                Match(type="r"),
                gauge=TEMPERATURE,
                labels=(("room", P("properties.room")),),
                total=True,
            ),
        )
    )
    plan = plan_for(rules)
    events = [
        event("r", T0 + 5, properties={"temp": 1, "room": "a"}),
        event("r", T0 + 9, properties={"temp": 2, "room": "b"}),
        event("r", T0 + 9, properties={"temp": 3, "room": "a"}),
        event("r", T0 + 1, properties={"temp": 4, "room": "b"}),
        event("r", T0 + 99, properties={"temp": "x", "room": "a"}),
        event("r", T0 + 99, properties={"room": "b"}),
    ]
    summary = BatchSummary.of(events, plan)
    # (the latest value, its event time, how many values were set)
    assert summary.totals[0] == (3.0, T0 + 9, 4)
    assert summary.series[0] == {"a": (3.0, T0 + 9, 2), "b": (2.0, T0 + 9, 2)}
    assert summary.skips == {("temp", "mistyped"): 1, ("temp", "missing"): 1}


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


# -- the plan -------------------------------------------------------------------------------


def test_plan_takes_types_by_exact_type_and_glob() -> None:
    plan = BatchPlan(MIXED_RULES)

    def names(event_type: str) -> list[str]:
        return [plan.specs[i].name for i in plan.specs_for(event_type)]

    assert names("pageview") == [
        "views",
        "view_refs",
        "pages_seen",
        "levels_sum",
        "levels_histogram",
        "planned",
        "unplanned",
        "plans",
        "by_type",
    ]
    assert names("click") == [
        "cart",
        "clicks_by",
        "levels_sum",
        "levels_histogram",
        "planned",
        "unplanned",
        "plans",
        "by_type",
    ]
    assert names("PageView") == [
        "levels_sum",
        "levels_histogram",
        "planned",
        "unplanned",
        "plans",
        "by_type",
    ]
    assert names("page_exit") == [
        "view_refs",
        "levels_sum",
        "levels_histogram",
        "planned",
        "unplanned",
        "plans",
        "by_type",
    ]
    assert plan.specs_for("click") is plan.specs_for("click")  # remembered


def test_plan_for_is_shared_by_equal_rules_and_programs_by_type_combination() -> None:
    plan = plan_for(Rules(MIXED_RULES.metrics, MIXED_RULES.drops))
    assert plan is plan_for(MIXED_RULES)
    program = plan.program(("pageview", "click"))
    assert plan.program(("pageview", "click")) is program
    assert plan.program(("click", "pageview")) is not program
    builtin = plan_for(DEFAULT_RULES)
    # pageviews, page_views and unique_pages: one selection, one extraction of the page.
    views = builtin.program(("pageview",))
    assert [step.spec.name for step in views.steps] == ["pageviews", "page_views", "unique_pages"]
    assert (len(views.selections), len(views.extractions)) == (1, 1)
    # revenue and revenue_histogram: one selection, the amount checked two ways.
    purchases = builtin.program(("signup", "purchase"))
    assert [step.spec.name for step in purchases.steps] == [
        "purchases",
        "revenue",
        "revenue_histogram",
    ]
    assert (len(purchases.selections), len(purchases.extractions)) == (1, 2)


def test_plan_drops() -> None:
    plan = BatchPlan(MIXED_RULES)
    assert plan.drops and not BatchPlan(DEFAULT_RULES).drops
    events = [
        event("bot"),
        event("debug.a", properties={"env": "test"}),
        event("debug.a", properties={"env": "prod"}),
        event("debug", properties={"env": "test"}),
        event("Bot"),
        event("pageview", properties={"env": "test"}),
    ]
    kept, dropped = plan.kept(events)
    assert kept == [events[2], events[4], events[5]]
    assert dropped == 3


# -- batched metric updates -----------------------------------------------------------------


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


def test_histogram_observe_all_equals_observing_one_by_one() -> None:
    xs = [0.1, 0.1, 0.1, -0.0, 0.0, 1e16, 1.0, -1e16]
    batched, single = Histogram(), Histogram()
    batched.observe(2.0, 1.0)
    single.observe(2.0, 1.0)
    batched.observe_all(xs, 2.0)
    for x in xs:
        single.observe(x, 2.0)
    assert batched.to_bytes() == single.to_bytes()
    with pytest.raises(ValueError):
        batched.observe_all([1.0, math.nan], 3.0)
    assert batched.to_bytes() == single.to_bytes()  # all or nothing


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


def test_series_family_admits_in_order_and_counts_overflow_per_contribution() -> None:
    registry: dict[str, Metric] = {}
    family = SeriesFamily("temp", 2, registry, Gauge)
    assert family.series("a", 1) is family.series("a", 5)
    assert family.series("__other__", 3) is registry["temp:__other__"]
    b = family.series("b", 1)
    assert family.series("c", 4) is registry["temp:__other__"] is family.series("d", 1)
    assert list(registry) == ["temp:a", "temp:__other__", "temp:b"]
    assert registry["temp:b"] is b
    assert family.overflow == 3 + 4 + 1


# -- library bugs: a batch differs from its events one by one -------------------------------


def one_by_one_and_batched(rules: Rules, *batches: list[Event]) -> tuple[MetricSet, MetricSet]:
    one, batched = MetricSet(rules, 10, 10), MetricSet(rules, 10, 10)
    for i, events in enumerate(batches):
        for e in events:
            one.add(e, T0 + i)
        batched.add_many(events, T0 + i)
    return one, batched


def by_room(max_series: int = 10) -> Rules:
    return Rules(
        (
            MetricRule("temp", Match(type="r"), gauge=TEMPERATURE),
            MetricRule(
                "room_temp",
                Match(type="r"),
                gauge=TEMPERATURE,
                labels=(("room", P("properties.room")),),
                max_series=max_series,
            ),
        )
    )


def reading(room: str, temp: float, at: float = T0) -> Event:
    return event("r", at, properties={"room": room, "temp": temp})


def test_gauge_values_of_a_batch_are_the_latest_as_one_by_one() -> None:
    one, batched = one_by_one_and_batched(
        by_room(1),
        [reading("a", 1.0, T0 + 5), reading("b", 2.0, T0 + 9), reading("a", 3.0, T0 + 2)],
        [reading("c", 4.0, T0 + 8), reading("a", 5.0, T0 + 5)],
    )
    for metrics in (one, batched):
        values = {n: (m.value, m.at) for n, m in metrics.metrics.items() if isinstance(m, Gauge)}
        assert values == {
            "temp": (2.0, T0 + 9),
            "room_temp:a": (5.0, T0 + 5),
            "room_temp:__other__": (2.0, T0 + 9),
        }


def test_gauge_count_and_bucket_overflow_count_every_value_of_a_batch() -> None:
    events = [reading("a", 1.0), reading("b", 2.0), reading("b", 3.0), reading("c", 4.0)]
    one, batched = one_by_one_and_batched(by_room(1), events)
    assert one.metrics["temp"].count == 4
    assert one.metrics["room_temp:__other__"].count == 3
    assert one.overflow_by_base()["room_temp"] == 3
    assert batched.metrics["temp"].count == 4
    assert batched.metrics["room_temp:__other__"].count == 3
    assert batched.overflow_by_base()["room_temp"] == 3


def test_gauge_bucket_breaks_ties_by_arrival_across_series() -> None:
    events = [reading("b", 1.0), reading("c", 2.0), reading("b", 3.0)]
    one, batched = one_by_one_and_batched(by_room(1), [reading("a", 0.0)], events)
    assert one.metrics["room_temp:__other__"].value == 3.0  # the last to arrive at T0
    assert batched.metrics["room_temp:__other__"].value == 3.0


UNIQUE_BY_PAGE = Rules(
    (
        MetricRule(
            "visitors",
            Match(type="v"),
            unique=P("user_id"),
            labels=(("page", PAGE),),
            max_series=1,
        ),
    )
)


def visit(page: str, user: str) -> Event:
    return event("v", user_id=user, properties={"page": page})


def test_labelled_unique_bucket_overflow_counts_every_event() -> None:
    events = [visit("/a", "u1"), visit("/b", "u1"), visit("/b", "u1"), visit("/b", "u2")]
    one, batched = one_by_one_and_batched(UNIQUE_BY_PAGE, events)
    assert one.overflow_by_base()["visitors"] == 3
    assert batched.overflow_by_base()["visitors"] == 3


def test_labelled_unique_bucket_sees_members_in_arrival_order() -> None:
    events = [visit("/b", "u1"), visit("/c", "u2"), visit("/b", "u3")]
    one, batched = one_by_one_and_batched(UNIQUE_BY_PAGE, [visit("/a", "u0")], events)
    assert one.metrics["visitors:__other__"].snapshot("x").count == 3
    assert batched.metrics["visitors:__other__"].to_bytes() == (
        one.metrics["visitors:__other__"].to_bytes()
    )


def test_labelled_sum_bucket_adds_values_in_arrival_order() -> None:
    rules = Rules(
        (
            MetricRule(
                "paid",
                Match(type="v"),
                sum=AMOUNT,
                histogram=AMOUNT,
                labels=(("page", PAGE),),
                max_series=1,
            ),
        )
    )

    def paid(page: str, amount: float) -> Event:
        return event("v", properties={"page": page, "amount": amount})

    # One by one, 1 + 2**53 rounds to 2**53 and so does + 1; series by series, 1 + 1 + 2**53
    # is exact.
    big = float(2**53)
    events = [paid("/b", 1.0), paid("/c", big), paid("/b", 1.0)]
    one, batched = one_by_one_and_batched(rules, [paid("/a", 0.0)], events)
    assert one.metrics["paid_sum:__other__"].value == big
    assert batched.metrics["paid_sum:__other__"].value == one.metrics["paid_sum:__other__"].value
    assert batched.metrics["paid_histogram:__other__"].to_bytes() == (
        one.metrics["paid_histogram:__other__"].to_bytes()
    )
