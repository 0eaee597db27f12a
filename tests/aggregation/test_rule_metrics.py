"""What user-defined metric rules make of events, through MetricSet and the Aggregator."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from tests.aggregation.factories import T0, event
from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.fields import FieldPath
from twisted_rta.aggregation.metrics import Counter, Gauge, Histogram, Metric, Unique
from twisted_rta.aggregation.metricset import MetricSet
from twisted_rta.aggregation.rules import (
    DEFAULT_RULES,
    Condition,
    DropRule,
    Match,
    MetricRule,
    Rules,
    parse_series_key,
)
from twisted_rta.events.model import Event

P = FieldPath.parse
GENERIC = {"total_events", "unique_users", "unique_sessions"}


def metric_set(*rules: MetricRule, limit: int = 100) -> MetricSet:
    return MetricSet(Rules(rules), limit, 10)


def fed(rules: Iterable[MetricRule] | Rules, *events: Event, limit: int = 100) -> MetricSet:
    metrics = MetricSet(rules if isinstance(rules, Rules) else Rules(tuple(rules)), limit, 10)
    metrics.add_many(list(events), T0)
    return metrics


def aggregator(rules: Rules, limit: int = 100) -> Aggregator:
    return Aggregator(
        window_sizes=(60.0,), grace=5.0, max_dimension_values=limit, started_at=T0, rules=rules
    )


def rule_metrics(metrics: MetricSet) -> dict[str, Metric]:
    """The metrics the rules made (not the generic ones)."""
    return {
        name: metric
        for name, metric in metrics.metrics.items()
        if name not in GENERIC and not name.startswith("events_by_type:")
    }


def counts(metrics: Mapping[str, Metric]) -> dict[str, tuple[float, int]]:
    snapshots = (metric.snapshot(name) for name, metric in metrics.items())
    return {snap.name: (snap.value, snap.count) for snap in snapshots}


def skips(rules: Rules, *events: Event) -> dict[tuple[str, str], int]:
    agg = aggregator(rules)
    agg.add_many(list(events), T0)
    return dict(agg.stats(T0).rule_skips)


def e(type: str = "x", at: float = T0, user: str | None = None, **properties: Any) -> Event:
    return event(type, at, user_id=user, properties=properties)


X = Match(type="x")
AMOUNT = P("properties.amount")
PLAN = P("properties.plan")


# -- aggregations and names ---------------------------------------------------------------


def test_count_rule() -> None:
    metrics = fed(
        [MetricRule("signups", Match(type="signup"), count=True)],
        *([e("signup")] * 3 + [e("signin"), e("Signup")]),
    )
    assert counts(rule_metrics(metrics)) == {"signups": (3.0, 3)}
    assert isinstance(metrics.metrics["signups"], Counter)


def test_sum_rule_adds_finite_numbers_from_zero_up() -> None:
    metrics = fed(
        [MetricRule("paid", X, sum=AMOUNT)],
        e(amount=0.1),
        e(amount=0.2),
        e(amount=3),
        e(amount=0),
        e(amount=-1),
        e(amount="4"),
        e(),
    )
    paid = metrics.metrics["paid"]
    assert isinstance(paid, Counter)
    assert (paid.value, paid.count) == (0.1 + 0.2 + 3.0 + 0.0, 4)  # in arrival order
    assert paid.value.hex() == (((0.1 + 0.2) + 3.0) + 0.0).hex()


def test_histogram_rule_takes_any_finite_number() -> None:
    metrics = fed(
        [MetricRule("delta", X, histogram=P("properties.d"))],
        *(e(d=d) for d in [5, -2.5, 0, 10**3, math.inf, math.nan, True, "1", None]),
    )
    delta = metrics.metrics["delta"]
    assert isinstance(delta, Histogram)
    assert (delta.count, delta.sum, delta.min, delta.max) == (4, 1002.5, -2.5, 1000.0)
    assert delta.snapshot("delta").p50 in (0.0, 5.0)


def test_unique_rule_counts_distinct_strings() -> None:
    metrics = fed(
        [MetricRule("skus", X, unique=P("properties.sku"))],
        *(e(sku=s) for s in ["a", "b", "a", "", 1, None, ["a"], "c"]),
    )
    skus = metrics.metrics["skus"]
    assert isinstance(skus, Unique)
    # a, b and c: "" is a string, so no skip, but the sketch ignores an empty member (as the
    # generic uniques leave out empty ids).
    assert skus.estimate == 3


def test_gauge_rule_keeps_the_value_of_the_latest_event_time() -> None:
    metrics = metric_set(MetricRule("temp", X, gauge=P("properties.t")))
    metrics.add_many([e(at=T0 + 5, t=1), e(at=T0 + 9, t=2), e(at=T0 + 1, t=3)], T0 + 10)
    gauge = metrics.metrics["temp"]
    assert isinstance(gauge, Gauge)
    assert (gauge.value, gauge.at, gauge.updated_at) == (2.0, T0 + 9, T0 + 10)
    # A later batch with an older event time changes nothing but the processing time...
    metrics.add_many([e(at=T0 + 8, t=4)], T0 + 11)
    assert (gauge.value, gauge.at) == (2.0, T0 + 9)
    # ...one at the same event time wins (the later arrival), negatives included.
    metrics.add_many([e(at=T0 + 9, t=-5.5), e(at=T0 + 2, t=6)], T0 + 12)
    assert (gauge.value, gauge.at, gauge.updated_at) == (-5.5, T0 + 9, T0 + 12)
    # Within a batch, ties go to the later arrival too.
    metrics.add_many([e(at=T0 + 20, t=7), e(at=T0 + 20, t=8), e(at=T0 + 20, t="x")], T0 + 13)
    assert (gauge.value, gauge.at) == (8.0, T0 + 20)


def test_gauge_added_one_by_one_counts_every_value() -> None:
    metrics = metric_set(MetricRule("temp", X, gauge=P("properties.t")))
    for i, t in enumerate([1, 2, "x", 3]):
        metrics.add(e(at=T0 + 10 - i, t=t), T0 + i)
    gauge = metrics.metrics["temp"]
    assert (gauge.value, gauge.count, gauge.updated_at) == (1.0, 3, T0 + 3)


def test_one_aggregation_names_the_metric_several_add_the_aggregation() -> None:
    metrics = fed(
        [
            MetricRule("order_value", X, count=True, sum=AMOUNT, histogram=AMOUNT),
            MetricRule("single", X, histogram=AMOUNT),
        ],
        e(amount=10),
        e(amount=2.5),
        e(amount="no"),
    )
    assert sorted(rule_metrics(metrics)) == [
        "order_value_count",
        "order_value_histogram",
        "order_value_sum",
        "single",
    ]
    assert counts(rule_metrics(metrics)) == {
        "order_value_count": (3.0, 3),
        "order_value_sum": (12.5, 2),
        "order_value_histogram": (12.5, 2),
        "single": (12.5, 2),
    }
    assert isinstance(metrics.metrics["order_value_histogram"], Histogram)


def test_a_rule_metric_appears_with_its_first_contribution() -> None:
    metrics = fed(
        [MetricRule("paid", X, sum=AMOUNT), MetricRule("n", Match(type="y"), count=True)],
        e(amount="no"),
        e(),
    )
    assert rule_metrics(metrics) == {}
    assert metrics.total_events == 2


# -- labels ---------------------------------------------------------------------------------


def test_one_label_names_series_by_the_value() -> None:
    metrics = fed(
        [
            MetricRule("by_plan", X, count=True, labels=(("plan", PLAN),)),
            MetricRule("by_city", X, count=True, labels=(("city", P("properties.geo.city")),)),
            MetricRule("by_user", X, count=True, labels=(("user", P("user_id")),)),
            MetricRule("by_session", X, count=True, labels=(("s", P("session_id")),)),
            MetricRule("by_type", Match(type_glob="*"), count=True, labels=(("t", P("type")),)),
        ],
        event(
            "x", user_id="u1", session_id="s1", properties={"plan": "pro", "geo": {"city": "Oslo"}}
        ),
        event("x", user_id="u1", properties={"plan": "a,b=c\\d", "geo": {"city": "Oslo"}}),
        event("y", user_id="u2", session_id="s1", properties={"plan": "pro"}),
    )
    assert counts(rule_metrics(metrics)) == {
        "by_plan:pro": (1.0, 1),
        "by_plan:a,b=c\\d": (1.0, 1),  # one label: the value as is
        "by_city:Oslo": (2.0, 2),
        "by_user:u1": (2.0, 2),
        "by_session:s1": (1.0, 1),
        "by_type:x": (2.0, 2),
        "by_type:y": (1.0, 1),
    }


def test_several_labels_name_series_in_label_name_order_escaped() -> None:
    rules = Rules(
        (
            MetricRule(
                "views",
                Match(type_glob="*"),
                count=True,
                labels=(("zone", P("properties.zone")), ("app", P("type")), ("m", P("user_id"))),
            ),
            MetricRule(
                "paid",
                X,
                sum=AMOUNT,
                labels=(("plan", PLAN), ("country", P("properties.c"))),
            ),
        )
    )
    metrics = fed(
        rules,
        e(user="u", zone="eu", amount=1, plan="pro", c="no"),
        e(user="u", zone="eu", amount=2, plan="pro", c="no"),
        e("y", user="a=b", zone="x,y\\z"),
        e(user="u", amount=4, plan="p=1,q", c="\\"),
    )
    assert counts(rule_metrics(metrics)) == {
        "views:app=x,m=u,zone=eu": (2.0, 2),  # (the last event has no zone)
        "views:app=y,m=a\\=b,zone=x\\,y\\\\z": (1.0, 1),
        "paid:country=no,plan=pro": (3.0, 2),
        "paid:country=\\\\,plan=p\\=1\\,q": (4.0, 1),
    }
    # parse_series_key gives back the label values.
    parsed = {}
    for name in rule_metrics(metrics):
        base, _, key = name.partition(":")
        family = rules.family(base)
        assert family is not None
        parsed[name] = parse_series_key(key, family.labels)
    assert parsed == {
        "views:app=x,m=u,zone=eu": {"app": "x", "m": "u", "zone": "eu"},
        "views:app=y,m=a\\=b,zone=x\\,y\\\\z": {"app": "y", "m": "a=b", "zone": "x,y\\z"},
        "paid:country=no,plan=pro": {"country": "no", "plan": "pro"},
        "paid:country=\\\\,plan=p\\=1\\,q": {"country": "\\", "plan": "p=1,q"},
    }


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        ({}, "missing_label"),
        ({"plan": None}, "missing_label"),
        ({"plan": 3}, "mistyped_label"),
        ({"plan": 2.5}, "mistyped_label"),
        ({"plan": True}, "mistyped_label"),
        ({"plan": ["pro"]}, "mistyped_label"),
        ({"plan": {"name": "pro"}}, "mistyped_label"),
    ],
    ids=repr,
)
def test_label_values_must_be_strings(properties: dict[str, Any], reason: str) -> None:
    rules = Rules(
        (
            MetricRule("by_plan", X, count=True, labels=(("plan", PLAN),)),
            MetricRule("paid", X, sum=AMOUNT, labels=(("plan", PLAN), ("t", P("type")))),
            MetricRule("all", X, count=True),
        )
    )
    event_ = e(amount=5, **properties)
    assert skips(rules, event_, e(plan="pro", amount=1)) == {
        ("by_plan", reason): 1,
        ("paid", reason): 1,
    }
    metrics = fed(rules, event_, e(plan="pro", amount=1))
    assert counts(rule_metrics(metrics)) == {
        "by_plan:pro": (1.0, 1),
        "paid:plan=pro,t=x": (1.0, 1),
        "all": (2.0, 2),  # other rules are unaffected
    }


def test_a_nested_label_path_through_a_non_object_is_missing() -> None:
    rules = Rules(
        (MetricRule("by_city", X, count=True, labels=(("c", P("properties.geo.city")),)),)
    )
    assert skips(rules, e(geo="Oslo"), e(geo=["x"]), e(geo={}), e(geo={"city": 1})) == {
        ("by_city", "missing_label"): 3,
        ("by_city", "mistyped_label"): 1,
    }


def test_a_labelled_rule_keeps_only_its_series_unless_total() -> None:
    plan = (("plan", PLAN),)
    metrics = fed(
        [
            MetricRule("only_series", X, count=True, sum=AMOUNT, labels=plan),
            MetricRule("with_total", X, count=True, sum=AMOUNT, labels=plan, total=True),
            MetricRule("spread", X, histogram=AMOUNT, labels=plan, total=True),
        ],
        e(plan="pro", amount=1),
        e(plan="pro", amount=2),
        e(plan=7, amount=4),
        e(amount=8),
        e(plan="team"),
    )
    assert counts(rule_metrics(metrics)) == {
        "only_series_count:pro": (2.0, 2),
        "only_series_count:team": (1.0, 1),
        "only_series_sum:pro": (3.0, 2),
        # The total: every matched event, labelled or not (a count), every valid value.
        "with_total_count": (5.0, 5),
        "with_total_count:pro": (2.0, 2),
        "with_total_count:team": (1.0, 1),
        "with_total_sum": (15.0, 4),
        "with_total_sum:pro": (3.0, 2),
        "spread": (15.0, 4),
        "spread:pro": (3.0, 2),
    }
    assert "only_series_count" not in metrics.metrics
    assert isinstance(metrics.metrics["spread:pro"], Histogram)


# -- bounds ---------------------------------------------------------------------------------


def test_max_series_bounds_each_rule_and_counts_overflow() -> None:
    rules = Rules(
        (
            MetricRule("by_plan", X, count=True, labels=(("plan", PLAN),), max_series=2),
            MetricRule("paid", X, sum=AMOUNT, labels=(("plan", PLAN),), max_series=1),
            MetricRule("default_bound", X, count=True, labels=(("plan", PLAN),)),
        )
    )
    events = [
        e(plan="a", amount=1),
        e(plan="b", amount=2),
        e(plan="c", amount=4),
        e(plan="a", amount=8),
        e(plan="__other__", amount=16),  # the bucket's name: into the bucket
        e(plan="d", amount=32),
    ]
    metrics = fed(rules, *events, limit=3)
    assert counts(rule_metrics(metrics)) == {
        "by_plan:a": (2.0, 2),
        "by_plan:b": (1.0, 1),
        "by_plan:__other__": (3.0, 3),
        "paid:a": (9.0, 2),
        "paid:__other__": (54.0, 4),
        # No max_series: the set's max_dimension_values (3).
        "default_bound:a": (2.0, 2),
        "default_bound:b": (1.0, 1),
        "default_bound:c": (1.0, 1),
        "default_bound:__other__": (2.0, 2),
    }
    assert metrics.overflow_by_base() == {
        "events_by_type": 0,
        "by_plan": 3,
        "paid": 4,
        "default_bound": 2,
    }
    agg = aggregator(rules, limit=3)
    agg.add_many(events[:3], T0)
    agg.add_many(events[3:], T0 + 1)
    stats = agg.stats(T0 + 1)
    assert dict(stats.dimension_overflow_by_base) == metrics.overflow_by_base()
    assert stats.dimension_overflow == 9 + stats.window_dimension_overflow
    assert {n: s.count for n, s in agg.metrics("by_plan:").items()} == {
        "by_plan:a": 2,
        "by_plan:b": 1,
        "by_plan:__other__": 3,
    }


def test_max_series_bounds_every_kind_of_labelled_metric() -> None:
    city = (("city", P("properties.city")),)
    rules = (
        MetricRule("h", X, histogram=AMOUNT, labels=city, max_series=1),
        MetricRule("u", X, unique=P("user_id"), labels=city, max_series=1),
        MetricRule("g", X, gauge=AMOUNT, labels=city, max_series=1),
    )
    metrics = metric_set(*rules)
    for i, (city_, user, amount) in enumerate(
        [("a", "u1", 1), ("b", "u2", 2), ("c", "u3", 3), ("a", "u4", 4)]
    ):
        metrics.add(e(at=T0 + i, user=user, city=city_, amount=amount), T0 + i)
    made = rule_metrics(metrics)
    assert sorted(made) == ["g:__other__", "g:a", "h:__other__", "h:a", "u:__other__", "u:a"]
    assert {n: type(m) for n, m in made.items() if n.endswith("__other__")} == {
        "h:__other__": Histogram,
        "u:__other__": Unique,
        "g:__other__": Gauge,
    }
    assert (made["h:__other__"].sum, made["h:a"].sum) == (5.0, 5.0)  # type: ignore[union-attr]
    assert (made["u:__other__"].estimate, made["u:a"].estimate) == (2, 2)  # type: ignore[union-attr]
    assert (made["g:__other__"].value, made["g:a"].value) == (3.0, 4.0)
    assert metrics.overflow_by_base() == {"events_by_type": 0, "h": 2, "u": 2, "g": 2}


# -- skips ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aggregation", "value", "reason"),
    [
        ("sum", 2, None),
        ("sum", 0.5, None),
        ("sum", 0, None),
        ("sum", None, "missing"),
        ("sum", "absent", "missing"),
        ("sum", "2", "mistyped"),
        ("sum", True, "mistyped"),
        ("sum", [1], "mistyped"),
        ("sum", {"v": 1}, "mistyped"),
        ("sum", -1, "out_of_range"),
        ("sum", -0.5, "out_of_range"),
        ("sum", 10**400, "out_of_range"),
        ("sum", math.inf, "out_of_range"),
        ("sum", math.nan, "out_of_range"),
        ("histogram", -1, None),
        ("histogram", 1e300, None),
        ("histogram", None, "missing"),
        ("histogram", "1", "mistyped"),
        ("histogram", False, "mistyped"),
        ("histogram", 10**400, "out_of_range"),
        ("histogram", -(10**400), "out_of_range"),
        ("histogram", -math.inf, "out_of_range"),
        ("gauge", -40, None),
        ("gauge", 0.25, None),
        ("gauge", "absent", "missing"),
        ("gauge", "hot", "mistyped"),
        ("gauge", True, "mistyped"),
        ("gauge", 10**400, "out_of_range"),
        ("gauge", math.nan, "out_of_range"),
        ("unique", "a", None),
        ("unique", "", None),
        ("unique", None, "missing"),
        ("unique", 1, "mistyped"),
        ("unique", 10**400, "mistyped"),
        ("unique", ["a"], "mistyped"),
    ],
    ids=repr,
)
def test_skips(aggregation: str, value: Any, reason: str | None) -> None:
    path = P("properties.v")
    rules = Rules(
        (
            MetricRule("ruled", X, **{aggregation: path}),
            MetricRule("labelled", X, **{aggregation: path}, labels=(("t", P("type")),)),
            MetricRule("events", X, count=True),
            MetricRule("other", X, sum=AMOUNT),
        )
    )
    properties = {} if value == "absent" else {"v": value}
    events = [e(amount=1, **properties), e(amount=2, **properties)]
    agg = aggregator(rules)
    agg.add_many(events, T0)  # never raises
    expected = {} if reason is None else {("ruled", reason): 2, ("labelled", reason): 2}
    assert dict(agg.stats(T0).rule_skips) == expected
    metrics = agg.metrics()
    assert ("ruled" in metrics, "labelled:x" in metrics) == (reason is None, reason is None)
    # The other rules on the same events are unaffected.
    assert (metrics["events"].count, metrics["other"].value, metrics["total_events"].count) == (
        2,
        3.0,
        2,
    )


def test_skips_add_up_across_batches_and_rules() -> None:
    rules = Rules(
        (
            MetricRule("paid", X, sum=AMOUNT, histogram=AMOUNT),
            MetricRule("seen", X, unique=AMOUNT, labels=(("plan", PLAN),)),
        )
    )
    agg = aggregator(rules)
    agg.add_many([e(amount=-1, plan="a"), e(amount="x")], T0)
    agg.add(e(amount=-2), T0 + 1)
    assert dict(agg.stats(T0 + 1).rule_skips) == {
        # per metric: -1 and -2 fail the sum only; "x" fails both.
        ("paid", "out_of_range"): 2,
        ("paid", "mistyped"): 2,
        ("seen", "mistyped"): 2,  # -1 and -2 are no strings
        ("seen", "missing_label"): 1,  # "x" has no plan
    }


# -- matching: where, globs, drops ----------------------------------------------------------


def test_where_conditions_use_json_equality() -> None:
    def where(*conditions: tuple[str, tuple[Any, ...]]) -> Match:
        return Match(type="x", where=tuple(Condition(P(f), v) for f, v in conditions))

    metrics = fed(
        [
            MetricRule("ok", where(("properties.ok", (True,))), count=True),
            MetricRule("one", where(("properties.n", (1,))), count=True),
            MetricRule("eu", where(("properties.c", ("fr", "de"))), count=True),
            MetricRule("none", where(("properties.c", (None,))), count=True),
            MetricRule(
                "both",
                where(("properties.ok", (True,)), ("properties.c", ("fr",))),
                sum=AMOUNT,
            ),
            MetricRule("by_user", where(("user_id", ("u1",))), count=True),
        ],
        e(ok=True, n=1, c="fr", amount=1, user="u1"),
        e(ok=1, n=1.0, c="de", amount=2),
        e(ok=1.0, n=True, c="us", amount=4),
        e(ok="true", n="1", c="FR", amount=8, user="u2"),
        e(ok=True, n=2, amount=16),
        e("y", ok=True, n=1, c="fr", user="u1"),
    )
    assert counts(rule_metrics(metrics)) == {
        "ok": (2.0, 2),  # 1 and 1.0 are not true
        "one": (2.0, 2),  # 1.0 is 1, true is not
        "eu": (2.0, 2),
        "none": (1.0, 1),  # a missing field is null
        "both": (1.0, 1),
        "by_user": (1.0, 1),
    }


def test_type_globs_are_case_sensitive_fnmatch() -> None:
    metrics = fed(
        [
            MetricRule("pages", Match(type_glob="page*"), count=True),
            MetricRule("one_char", Match(type_glob="?lick"), count=True),
            MetricRule("set", Match(type_glob="[ab]uy"), count=True),
            MetricRule("exact", Match(type="page*"), count=True),
        ],
        *(e(t) for t in ["pageview", "page_exit", "page", "PageView", "apage"]),
        *(e(t) for t in ["click", "Click", "clicks", "buy", "auy", "cuy", "page*"]),
    )
    assert counts(rule_metrics(metrics)) == {
        "pages": (4.0, 4),  # pageview, page_exit, page, page*
        "one_char": (2.0, 2),  # click, Click
        "set": (2.0, 2),
        "exact": (1.0, 1),
    }


def test_dropped_events_feed_nothing_and_are_counted() -> None:
    rules = Rules(
        (
            MetricRule("all", Match(type_glob="*"), count=True, sum=AMOUNT),
            MetricRule("by_type", Match(type_glob="*"), count=True, labels=(("t", P("type")),)),
        ),
        drops=(
            DropRule(Match(type="bot")),
            DropRule(Match(type_glob="debug*", where=(Condition(P("properties.env"), ("test",)),))),
        ),
    )
    agg = aggregator(rules)
    agg.add_many(
        [
            e("bot", user="b", amount=1),
            e("debug.x", env="test", amount="bad"),
            e("debug.x", env="prod", user="u", amount=2),
            e("Bot", amount=4),
        ],
        T0,
    )
    agg.add(e("bot", user="b2", amount=-1), T0 + 1)
    agg.add_many([e("bot"), e("debug", env="test")], T0 + 2)  # nothing kept at all
    stats = agg.stats(T0 + 2)
    assert (stats.events_dropped, stats.total_events, stats.unique_users) == (5, 2, 1)
    assert dict(stats.rule_skips) == {}  # a dropped event is not even skipped
    assert {n: s.count for n, s in agg.metrics().items()} == {
        "all_count": 2,
        "all_sum": 2,
        "by_type:Bot": 1,
        "by_type:debug.x": 1,
        "events_by_type:Bot": 1,
        "events_by_type:debug.x": 1,
        "total_events": 2,
        "unique_sessions": 0,
        "unique_users": 1,
    }
    [window] = agg.open_windows()
    assert window.metrics["total_events"].count == 2
    assert "events_by_type:bot" not in window.metrics


def test_a_drop_rule_without_events_to_keep_publishes_nothing() -> None:
    agg = aggregator(Rules((), drops=(DropRule(Match(type_glob="*")),)))
    agg.add_many([e(), e("y")], T0)
    assert agg.metrics() == {}
    assert agg.open_windows() == []
    assert agg.stats(T0).events_dropped == 2


# -- gauges across batches and merges -------------------------------------------------------


def test_gauge_across_batches_windows_and_merges() -> None:
    rules = Rules(
        (
            MetricRule(
                "temp",
                Match(type="r"),
                gauge=P("properties.t"),
                labels=(("room", P("properties.room")),),
                total=True,
            ),
        )
    )
    agg = aggregator(rules)
    agg.add_many([e("r", T0 + 30, room="a", t=1), e("r", T0 + 10, room="b", t=2)], T0 + 31)
    agg.add(e("r", T0 + 20, room="a", t=3), T0 + 32)  # older than a's value: ignored
    agg.add(e("r", T0 + 10, room="b", t=4), T0 + 33)  # a tie: the later arrival wins
    latest = {n: s.value for n, s in agg.metrics("temp").items()}
    assert latest == {"temp": 1.0, "temp:a": 1.0, "temp:b": 4.0}
    gauge = agg.global_metric_states()["temp"]
    assert isinstance(gauge, Gauge)
    assert gauge.at == T0 + 30

    # Merges keep the value of the later event time; on a tie the merged-in value wins.
    here, there = MetricSet(rules, 10, 10), MetricSet(rules, 10, 10)
    here.add(e("r", T0 + 5, room="a", t=10), T0)
    here.add(e("r", T0 + 5, room="b", t=11), T0)
    there.add(e("r", T0 + 3, room="a", t=20), T0 + 100)
    there.add(e("r", T0 + 5, room="b", t=21), T0 + 100)
    there.add(e("r", T0 + 1, room="c", t=22), T0 + 100)
    here.merge(there.metrics)
    merged = {n: (m.value, m.at) for n, m in here.metrics.items() if isinstance(m, Gauge)}
    assert merged == {
        "temp": (21.0, T0 + 5),
        "temp:a": (10.0, T0 + 5),
        "temp:b": (21.0, T0 + 5),
        "temp:c": (22.0, T0 + 1),
    }
    assert here.metrics["temp"].count == 5


# -- the built-in preset --------------------------------------------------------------------


def test_builtin_preset_makes_exactly_the_go_metrics() -> None:
    agg = Aggregator(window_sizes=(), grace=0.0, max_dimension_values=10, started_at=T0)
    assert agg.rules == DEFAULT_RULES
    agg.add_many(
        [
            e("pageview", user="u1", page="/home"),
            e("pageview", user="u2", page="/home"),
            e("pageview", page="/about"),
            e("pageview", page=7),
            e("pageview"),
            e("click", element="buy"),
            e("click", element=True),
            e("click"),
            e("purchase", amount=10),
            e("purchase", amount=0.5),
            e("purchase", amount=-3),
            e("purchase", amount="12"),
            e("purchase", revenue=5),
            e("signup", page="/x", element="y", amount=1),
        ],
        T0,
    )
    assert {n: (s.type, s.value, s.count) for n, s in agg.metrics().items()} == {
        "clicks": ("counter", 3.0, 3),  # every click
        "clicks:buy": ("counter", 1.0, 1),  # string elements only
        "events_by_type:click": ("counter", 3.0, 3),
        "events_by_type:pageview": ("counter", 5.0, 5),
        "events_by_type:purchase": ("counter", 5.0, 5),
        "events_by_type:signup": ("counter", 1.0, 1),
        "page_views:/about": ("counter", 1.0, 1),
        "page_views:/home": ("counter", 2.0, 2),
        "pageviews": ("counter", 5.0, 5),
        "purchases": ("counter", 5.0, 5),
        "revenue": ("counter", 10.5, 2),
        "revenue_histogram": ("histogram", 7.5, 3),  # any finite number
        "total_events": ("counter", 14.0, 14),
        "unique_pages": ("set", 2.0, 2),
        "unique_sessions": ("set", 0.0, 0),
        "unique_users": ("set", 2.0, 2),
    }
    assert dict(agg.stats(T0).rule_skips) == {
        ("page_views", "mistyped_label"): 1,
        ("page_views", "missing_label"): 1,
        ("unique_pages", "mistyped"): 1,
        ("unique_pages", "missing"): 1,
        ("clicks", "mistyped_label"): 1,
        ("clicks", "missing_label"): 1,
        ("revenue", "out_of_range"): 1,
        ("revenue", "mistyped"): 1,
        ("revenue", "missing"): 1,
        ("revenue_histogram", "mistyped"): 1,
        ("revenue_histogram", "missing"): 1,
    }
    histogram = agg.metric("revenue_histogram")
    assert histogram is not None
    assert (histogram.min, histogram.max) == (-3.0, 10.0)


# -- merging and loading ----------------------------------------------------------------------


LABELLED_KINDS = Rules(
    (
        MetricRule(
            "spent",
            X,
            count=True,
            sum=AMOUNT,
            histogram=AMOUNT,
            unique=P("user_id"),
            gauge=AMOUNT,
            labels=(("plan", PLAN),),
            max_series=2,
        ),
    )
)


def test_merge_bounds_labelled_series_of_every_kind_and_keeps_kinds() -> None:
    target, source = MetricSet(LABELLED_KINDS, 10, 10), MetricSet(LABELLED_KINDS, 10, 10)
    for plan, amount, user in [("a", 1, "u1"), ("b", 2, "u2")]:
        target.add(e(plan=plan, amount=amount, user=user), T0)
    for plan, amount, user in [("a", 4, "u3"), ("c", 8, "u4"), ("c", 16, "u5"), ("d", 32, "u6")]:
        source.add(e(at=T0 + 1, plan=plan, amount=amount, user=user), T0 + 1)
    before = {name: metric.to_bytes() for name, metric in source.metrics.items()}
    target.merge(source.metrics)
    assert {name: metric.to_bytes() for name, metric in source.metrics.items()} == before
    made = rule_metrics(target)
    for aggregation, kind in [
        ("count", Counter),
        ("sum", Counter),
        ("histogram", Histogram),
        ("unique", Unique),
        ("gauge", Gauge),
    ]:
        base = f"spent_{aggregation}"
        series = {n: m for n, m in made.items() if n.startswith(base + ":")}
        assert sorted(series) == [f"{base}:__other__", f"{base}:a", f"{base}:b"], base
        assert {type(m) for m in series.values()} == {kind}, base
        for name in series:  # nothing of the source is shared
            assert all(series[name] is not m for m in source.metrics.values())
    assert counts({n: m for n, m in made.items() if not n.startswith("spent_unique")}) == {
        "spent_count:a": (2.0, 2),
        "spent_count:b": (1.0, 1),
        "spent_count:__other__": (3.0, 3),
        "spent_sum:a": (5.0, 2),
        "spent_sum:b": (2.0, 1),
        "spent_sum:__other__": (56.0, 3),
        "spent_histogram:a": (5.0, 2),
        "spent_histogram:b": (2.0, 1),
        "spent_histogram:__other__": (56.0, 3),
        "spent_gauge:a": (4.0, 2),
        "spent_gauge:b": (2.0, 1),
        "spent_gauge:__other__": (32.0, 3),
    }
    uniques = {n: m.estimate for n, m in made.items() if isinstance(m, Unique)}
    assert uniques == {"spent_unique:a": 2, "spent_unique:b": 1, "spent_unique:__other__": 3}
    # Values and counts routed to the buckets: c's and d's (a unique series counts once).
    assert target.overflow_by_base() == {
        "events_by_type": 0,
        "spent_count": 3,
        "spent_sum": 3,
        "spent_histogram": 3,
        "spent_unique": 2,
        "spent_gauge": 3,
    }


def test_merge_rejects_another_kind_in_a_labelled_family() -> None:
    target = MetricSet(LABELLED_KINDS, 10, 10)
    with pytest.raises(TypeError, match="spent_histogram:a is a histogram, not a counter"):
        target.merge({"spent_histogram:a": Counter(1.0, 1, T0)})
    with pytest.raises(TypeError, match="spent_count:a is a counter, not a gauge"):
        target.merge({"spent_count:a": Gauge(1.0, 1, T0)})
    assert "spent_histogram:a" not in target.metrics


def test_load_tolerates_a_checkpoint_made_with_other_rules() -> None:
    old_rules = Rules(
        (
            MetricRule("by_plan", X, count=True, labels=(("plan", PLAN),), max_series=1),
            MetricRule("paid", X, sum=AMOUNT),
            MetricRule("seats", X, histogram=P("properties.n"), labels=(("plan", PLAN),)),
            MetricRule("kept", X, count=True, labels=(("plan", PLAN),), max_series=1),
            MetricRule("gone", X, count=True),
        )
    )
    old = MetricSet(old_rules, 10, 10)
    old.add_many([e(plan="a", amount=1, n=2), e(plan="b", amount=2, n=3)], T0)
    new_rules = Rules(
        (
            MetricRule("paid", X, histogram=AMOUNT),  # now a histogram
            MetricRule("seats", X, unique=P("properties.n"), labels=(("plan", PLAN),)),
            MetricRule("kept", X, count=True, labels=(("plan", PLAN),), max_series=1),
        )
    )
    new = MetricSet(new_rules, 10, 10)
    snapshot = [(name, metric.copy()) for name, metric in old.metrics.items()]
    new.load(snapshot, old.overflow_by_base(), published=True)
    assert sorted(new.metrics) == [
        # by_plan is no family now: its series stay, as plain metrics.
        "by_plan:__other__",
        "by_plan:a",
        "events_by_type:x",
        "gone",
        "kept:__other__",
        "kept:a",
        "total_events",
        "unique_sessions",
        "unique_users",
    ]  # paid (a counter, now a histogram) and seats:* (histograms, now sets) are left out
    assert new.overflow_by_base() == {"events_by_type": 0, "kept": 1, "seats": 0}
    assert new.total_events == 2
    new.add_many([e(plan="a", amount=5, n="s"), e(plan="c", amount=1, n="t")], T0 + 1)
    assert counts(rule_metrics(new)) == {
        "by_plan:a": (1.0, 1),  # no longer counted
        "by_plan:__other__": (1.0, 1),
        "gone": (2.0, 2),
        "kept:a": (2.0, 2),
        "kept:__other__": (2.0, 2),
        "paid": (6.0, 2),
        "seats:a": (1.0, 1),
        "seats:c": (1.0, 1),
    }
    assert new.overflow_by_base()["kept"] == 2
    assert new.total_events == 4


def test_load_only_into_an_empty_set() -> None:
    metrics = fed(LABELLED_KINDS, e(plan="a", amount=1))
    with pytest.raises(ValueError, match="empty"):
        metrics.load([], {}, published=False)
