"""The rule language as values: field paths, matches, conditions, rules, names and keys."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from tests.aggregation.factories import event
from twisted_rta.aggregation.fields import FieldPath
from twisted_rta.aggregation.rules import (
    DEFAULT_RULES,
    OTHER,
    Condition,
    DropRule,
    Match,
    MetricRule,
    Rules,
    as_amount,
    as_number,
    builtin_rules,
    parse_series_key,
    series_key,
)

P = FieldPath.parse
VIEW = Match(type="pageview")


def rule(name: str = "r", **kwargs: Any) -> MetricRule:
    kwargs.setdefault("count", True)
    return MetricRule(name, kwargs.pop("when", VIEW), **kwargs)


# -- field paths --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "root", "keys", "top"),
    [
        ("type", "type", (), None),
        ("user_id", "user_id", (), None),
        ("session_id", "session_id", (), None),
        ("properties.page", "properties", ("page",), "page"),
        ("properties.cart.total", "properties", ("cart", "total"), None),
        ("properties.a-b.c_d.1", "properties", ("a-b", "c_d", "1"), None),
    ],
)
def test_field_path_parse(text: str, root: str, keys: tuple[str, ...], top: str | None) -> None:
    path = P(text)
    assert (path.text, path.root, path.keys, path.top_property) == (text, root, keys, top)
    assert str(path) == text
    assert P(text) == path
    assert hash(P(text)) == hash(path)


@pytest.mark.parametrize(
    "text",
    [
        "properties",
        "properties.",
        ".properties",
        "properties..a",
        "properties.a.",
        "properties.a b",
        "properties.a\tb",
        "foo.bar",
        "foo",
        "",
        "type.x",
        "user_id.x",
        "Properties.a",
        "timestamp",
        "id",
        5,
        None,
        ["properties", "a"],
        b"properties.a",
    ],
    ids=repr,
)
def test_field_path_parse_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        P(text)


def test_field_path_read() -> None:
    e = event(
        "click",
        user_id="u",
        session_id=None,
        properties={"a": {"b": {"c": 3}}, "s": "x", "l": [1], "n": None, "t": "str"},
    )
    assert P("type").read(e) == "click"
    assert P("user_id").read(e) == "u"
    assert P("session_id").read(e) is None
    assert P("properties.s").read(e) == "x"
    assert P("properties.a").read(e) == {"b": {"c": 3}}
    assert P("properties.a.b.c").read(e) == 3
    assert P("properties.a.b.c.d").read(e) is None  # crosses a number
    assert P("properties.a.x.c").read(e) is None  # absent on the way
    assert P("properties.l.0").read(e) is None  # a list is not an object
    assert P("properties.t.x").read(e) is None  # nor a string
    assert P("properties.n").read(e) is None
    assert P("properties.missing").read(e) is None


# -- conditions and matches ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "value", "holds"),
    [
        ((1,), 1, True),
        ((1,), 1.0, True),  # one JSON number
        ((1.0,), 1, True),
        ((1,), True, False),  # 1 is not true
        ((True,), 1, False),
        ((True,), 1.0, False),
        ((True,), True, True),
        ((False,), 0, False),
        ((0,), False, False),
        (("1",), 1, False),
        ((1,), "1", False),
        (("a", "b"), "b", True),
        (("a", "b"), "c", False),
        ((None,), None, True),  # null matches a missing field too
        ((None,), "", False),
        (("",), None, False),
        ((2,), 2.5, False),
        ((), "a", False),
        ((1,), [1], False),
    ],
)
def test_condition_uses_json_equality(values: tuple[Any, ...], value: Any, holds: bool) -> None:
    assert Condition(P("properties.x"), values).holds(value) is holds


@pytest.mark.parametrize(
    ("present", "value", "holds"),
    [
        (True, "a", True),
        (True, 0, True),
        (True, False, True),
        (True, "", True),
        (True, None, False),  # absent or null
        (False, None, True),
        (False, "a", False),
    ],
)
def test_presence_condition(present: bool, value: Any, holds: bool) -> None:
    condition = Condition(P("properties.x"), present=present)
    assert condition.holds(value) is holds
    assert condition.as_config() == {"present": present}


def test_a_condition_takes_values_or_presence() -> None:
    with pytest.raises(ValueError, match="either values or present"):
        Condition(P("properties.x"), ("a",), present=True)


def test_match_needs_exactly_one_of_type_and_glob() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Match()
    with pytest.raises(ValueError, match="exactly one"):
        Match(type="a", type_glob="a*")
    with pytest.raises(ValueError, match="exactly one"):
        Match(where=(Condition(P("type"), ("a",)),))


@pytest.mark.parametrize(
    ("match", "event_type", "takes"),
    [
        (Match(type="click"), "click", True),
        (Match(type="click"), "Click", False),
        (Match(type="click"), "clicks", False),
        (Match(type="cli*"), "click", False),  # an exact type is not a glob
        (Match(type="cli*"), "cli*", True),
        (Match(type_glob="cli*"), "click", True),
        (Match(type_glob="cli*"), "cli", True),
        (Match(type_glob="cli*"), "Click", False),  # case-sensitive on every platform
        (Match(type_glob="*"), "", True),
        (Match(type_glob="?"), "ab", False),
        (Match(type_glob="?"), "a", True),
        (Match(type_glob="[ab]*"), "buy", True),
        (Match(type_glob="[ab]*"), "cart", False),
        (Match(type_glob="[!ab]*"), "cart", True),
        (Match(type_glob="*.view"), "page.view", True),
        (Match(type_glob="*.view"), "pageview", False),
    ],
)
def test_match_takes_type(match: Match, event_type: str, takes: bool) -> None:
    assert match.takes_type(event_type) is takes


def test_matches_and_conditions_are_hashable_values() -> None:
    one = Match(type="a", where=(Condition(P("properties.x"), (1, "b")),))
    two = Match(type="a", where=(Condition(P("properties.x"), (1, "b")),))
    assert one == two
    assert hash(one) == hash(two)
    assert one != Match(type="a", where=(Condition(P("properties.x"), (1,)),))
    assert len({one, two, Match(type="a")}) == 2


# -- metric rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": False}, "needs an aggregation"),
        ({"name": ""}, "name"),
        ({"name": "1abc"}, "name"),
        ({"name": "a b"}, "name"),
        ({"name": "a:b"}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"labels": tuple((f"l{i}", P(f"properties.l{i}")) for i in range(4))}, "at most 3"),
        ({"labels": (("a-b", P("properties.a")),)}, "label name"),
        ({"labels": (("1a", P("properties.a")),)}, "label name"),
        ({"labels": (("", P("properties.a")),)}, "label name"),
        ({"labels": (("a", P("properties.a")), ("a", P("properties.b")))}, "twice"),
        ({"total": True}, "total only applies"),
        ({"max_series": 0, "labels": (("a", P("properties.a")),)}, "max_series"),
        ({"max_series": -3}, "max_series"),
    ],
)
def test_metric_rule_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rule(**kwargs)


def test_metric_rule_accepts_the_edges() -> None:
    labels = tuple((f"l_{i}", P(f"properties.l{i}")) for i in range(3))
    assert len(rule("_a.b-c", labels=labels, max_series=1, total=True).labels) == 3
    assert rule("x" * 128).name == "x" * 128


def test_one_aggregation_makes_the_metric_name() -> None:
    [spec] = rule("signups").metrics()
    assert (spec.rule, spec.name, spec.aggregation, spec.kind, spec.value) == (
        "signups",
        "signups",
        "count",
        "counter",
        None,
    )
    assert spec.total
    assert spec.labels == ()
    [spec] = MetricRule("seats", VIEW, histogram=P("properties.seats")).metrics()
    assert (spec.name, spec.kind, spec.value) == ("seats", "histogram", P("properties.seats"))


def test_several_aggregations_make_name_underscore_aggregation_in_a_fixed_order() -> None:
    amount = P("properties.amount")
    order = MetricRule(
        "order_value",
        Match(type="purchase"),
        gauge=amount,
        unique=P("properties.sku"),
        histogram=amount,
        sum=amount,
        count=True,
    )
    assert [(s.name, s.aggregation, s.kind) for s in order.metrics()] == [
        ("order_value_count", "count", "counter"),
        ("order_value_sum", "sum", "counter"),
        ("order_value_histogram", "histogram", "histogram"),
        ("order_value_unique", "unique", "set"),
        ("order_value_gauge", "gauge", "gauge"),
    ]
    assert {s.rule for s in order.metrics()} == {"order_value"}


def test_specs_sort_labels_by_name_and_keep_the_total_flag() -> None:
    labelled = rule(
        "x",
        labels=(("zone", P("properties.z")), ("app", P("user_id")), ("m", P("type"))),
        max_series=7,
    )
    [spec] = labelled.metrics()
    assert spec.label_names == ("app", "m", "zone")
    assert spec.labels[0] == ("app", P("user_id"))
    assert (spec.total, spec.max_series) == (False, 7)
    [with_total] = rule("x", labels=(("a", P("type")),), total=True).metrics()
    assert with_total.total
    assert with_total.max_series is None


# -- rules as a whole -----------------------------------------------------------------------


LABEL = (("page", P("properties.page")),)
N = P("properties.n")


@pytest.mark.parametrize(
    "rules",
    [
        # A generic metric's name, unlabelled or as a series family.
        pytest.param((rule("total_events"),), id="total_events"),
        pytest.param((rule("unique_users"),), id="unique_users"),
        pytest.param((rule("unique_sessions"),), id="unique_sessions"),
        pytest.param((rule("events_by_type"),), id="events_by_type"),
        pytest.param((rule("events_by_type", labels=LABEL),), id="events_by_type-family"),
        pytest.param((rule("total_events", labels=LABEL),), id="total_events-family"),
        pytest.param((rule("unique_users", labels=LABEL, total=True),), id="unique_users-total"),
        # Another rule's metric.
        pytest.param((rule("a"), rule("a")), id="same-name"),
        pytest.param((rule("a"), MetricRule("a", Match(type="x"), sum=N)), id="same-name-kinds"),
        pytest.param((MetricRule("o", VIEW, count=True, sum=N), rule("o_sum")), id="o_sum"),
        pytest.param((rule("o_count"), MetricRule("o", VIEW, count=True, sum=N)), id="o_count"),
        # Another rule's series family, or the metric it keeps.
        pytest.param((rule("a", labels=LABEL), rule("a", labels=LABEL)), id="two-families"),
        pytest.param((rule("a", labels=LABEL), rule("a")), id="family-then-metric"),
        pytest.param((rule("a"), rule("a", labels=LABEL)), id="metric-then-family"),
        pytest.param((rule("a"), rule("a", labels=LABEL, total=True)), id="metric-then-total"),
        pytest.param((rule("a", labels=LABEL, total=True), rule("a")), id="total-then-metric"),
        pytest.param(
            (rule("a", labels=LABEL), MetricRule("a", VIEW, sum=N, labels=LABEL)),
            id="family-kinds",
        ),
    ],
)
def test_rules_reject_name_collisions(rules: tuple[MetricRule, ...]) -> None:
    with pytest.raises(ValueError, match="already made by"):
        Rules(rules)


def test_rules_with_distinct_names_and_shared_fields_are_fine() -> None:
    rules = Rules(
        (
            rule("views"),
            rule("views_by_page", labels=LABEL),
            MetricRule("pages", VIEW, unique=P("properties.page")),
            MetricRule("o", VIEW, count=True, sum=N, labels=LABEL, total=True),
            MetricRule("o_gauge", VIEW, gauge=N),  # no rule makes o_gauge but this one
            MetricRule("unique", VIEW, unique=N, labels=LABEL),  # no generic name
            rule("total_events_2"),
        ),
        drops=(DropRule(Match(type_glob="bot*")),),
    )
    assert [spec.name for spec in rules.specs] == [
        "views",
        "views_by_page",
        "pages",
        "o_count",
        "o_sum",
        "o_gauge",
        "unique",
        "total_events_2",
    ]
    assert rules.drops == (DropRule(Match(type_glob="bot*")),)
    assert list(rules.families()) == [
        "events_by_type",
        "views_by_page",
        "o_count",
        "o_sum",
        "unique",
    ]
    family = rules.family("o_sum")
    assert family is not None
    assert (family.base, family.kind, family.labels, family.max_series) == (
        "o_sum",
        "counter",
        ("page",),
        None,
    )
    assert rules.family("views") is None
    specs = {spec.name: spec for spec in rules.specs}
    assert (specs["o_sum"].rule, specs["o_sum"].aggregation) == ("o", "sum")
    assert "o" not in specs


def test_rules_are_values() -> None:
    assert Rules(builtin_rules()) == DEFAULT_RULES
    assert hash(Rules(builtin_rules())) == hash(DEFAULT_RULES)
    assert Rules((rule("a"),)) != Rules((rule("b"),))
    assert Rules([rule("a")]).metrics == (rule("a"),)  # any iterable, kept as a tuple


def test_expected_kinds() -> None:
    rules = Rules(
        (
            *builtin_rules(),
            MetricRule("temp", Match(type="reading"), gauge=N, labels=LABEL, total=True),
            MetricRule("seen", Match(type="reading"), unique=P("user_id"), labels=LABEL),
        )
    )
    for name, kind in [
        ("total_events", "counter"),
        ("unique_users", "set"),
        ("unique_sessions", "set"),
        ("events_by_type:click", "counter"),
        ("pageviews", "counter"),
        ("page_views:/home", "counter"),
        ("page_views:__other__", "counter"),
        ("unique_pages", "set"),
        ("clicks", "counter"),
        ("clicks:buy", "counter"),
        ("purchases", "counter"),
        ("revenue", "counter"),
        ("revenue_histogram", "histogram"),
        ("temp", "gauge"),
        ("temp:/a", "gauge"),
        ("seen:/a", "set"),
        ("seen", None),  # a labelled rule without total keeps no metric of its name
        ("page_views", None),
        ("events_by_type", None),
        ("pageviews:/x", None),  # not a family
        ("something_else", None),
    ]:
        assert rules.expected_kind(name) == kind, name


def test_builtin_preset() -> None:
    specs = {spec.name: spec for spec in DEFAULT_RULES.specs}
    assert list(specs) == [
        "pageviews",
        "page_views",
        "unique_pages",
        "clicks",
        "purchases",
        "revenue",
        "revenue_histogram",
    ]
    assert {name: spec.aggregation for name, spec in specs.items()} == {
        "pageviews": "count",
        "page_views": "count",
        "unique_pages": "unique",
        "clicks": "count",
        "purchases": "count",
        "revenue": "sum",
        "revenue_histogram": "histogram",
    }
    assert specs["page_views"].labels == (("page", P("properties.page")),)
    assert not specs["page_views"].total
    assert specs["clicks"].labels == (("element", P("properties.element")),)
    assert specs["clicks"].total
    assert specs["revenue"].value == specs["revenue_histogram"].value == P("properties.amount")
    assert all(spec.max_series is None for spec in specs.values())
    assert DEFAULT_RULES.drops == ()
    assert list(DEFAULT_RULES.families()) == ["events_by_type", "page_views", "clicks"]


# -- series keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "key"),
    [
        ([("page", "/home")], "/home"),
        ([("page", "a,b=c\\d")], "a,b=c\\d"),  # one label: the value itself
        ([("page", "")], ""),
        ([("a", "1"), ("b", "2")], "a=1,b=2"),
        ([("a", "x,y"), ("b", "k=v")], "a=x\\,y,b=k\\=v"),
        ([("a", "back\\slash"), ("b", "")], "a=back\\\\slash,b="),
        ([("a", "="), ("b", ","), ("c", "\\")], "a=\\=,b=\\,,c=\\\\"),
        ([("a", "__other__"), ("b", "x")], "a=__other__,b=x"),
    ],
)
def test_series_key(pairs: list[tuple[str, str]], key: str) -> None:
    assert series_key(pairs) == key
    labels = tuple(label for label, _ in pairs)
    assert parse_series_key(key, labels) == dict(pairs)


def test_parse_series_key_rejects_other_shapes() -> None:
    assert parse_series_key(OTHER, ("page",)) is None
    assert parse_series_key(OTHER, ("a", "b")) is None
    assert parse_series_key("a=1", ("a", "b")) is None
    assert parse_series_key("b=1,a=2", ("a", "b")) is None  # not in label-name order
    assert parse_series_key("a=1,c=2", ("a", "b")) is None
    assert parse_series_key("a=1=2,b=3", ("a", "b")) is None
    assert parse_series_key("a=1,b", ("a", "b")) is None
    assert parse_series_key("a=1,b=2,c=3", ("a", "b")) is None
    assert parse_series_key("/x", ("page",)) == {"page": "/x"}


@pytest.mark.parametrize("seed", range(5))
def test_parse_series_key_inverts_series_key(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = "ab,=\\ _:é"
    for _ in range(300):
        labels = sorted(rng.sample(["a", "b", "c", "zone", "l_1"], rng.randint(1, 3)))
        pairs = [
            (label, "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))))
            for label in labels
        ]
        key = series_key(pairs)
        assert parse_series_key(key, tuple(labels)) == dict(pairs), (pairs, key)
        if len(pairs) > 1:
            # Distinct label values, distinct keys.
            other = [(label, value + "x") for label, value in pairs]
            assert series_key(other) != key


# -- value checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "amount", "number"),
    [
        (3, 3.0, 3.0),
        (0, 0.0, 0.0),
        (2.5, 2.5, 2.5),
        (-0.5, None, -0.5),  # a sum counter never decreases
        (-1, None, -1.0),
        (10**300, 1e300, 1e300),
        (10**400, None, None),  # beyond float range
        (-(10**400), None, None),
        (math.nan, None, None),
        (math.inf, None, None),
        (-math.inf, None, None),
        (True, None, None),
        (False, None, None),
        ("3", None, None),
        (None, None, None),
        ([1], None, None),
        ({"a": 1}, None, None),
    ],
    ids=repr,
)
def test_as_amount_and_as_number(value: Any, amount: float | None, number: float | None) -> None:
    assert as_amount(value) == amount
    assert as_number(value) == number
    for converted in (as_amount(value), as_number(value)):
        assert converted is None or type(converted) is float
