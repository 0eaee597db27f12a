from __future__ import annotations

import math
from typing import Any

import pytest

from tests.aggregation.factories import T0, aggregator, event
from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.aggregation.rules import (
    DEFAULT_RULES,
    AmountRule,
    DimensionRule,
    Rules,
    TypeRule,
    as_amount,
)

GENERIC = ["events_by_type:{}", "total_events", "unique_sessions", "unique_users"]


def fed(*events: Any) -> Aggregator:
    agg = aggregator()
    agg.add_many(events, T0)
    return agg


def names(agg: Aggregator) -> list[str]:
    return list(agg.metrics())


def test_pageview_with_page_string() -> None:
    agg = fed(
        event("pageview", properties={"page": "/home"}),
        event("pageview", properties={"page": "/home"}),
        event("pageview", properties={"page": "/about"}),
    )
    metrics = agg.metrics()
    assert metrics["pageviews"].count == 3
    assert metrics["page_views:/home"].value == 2.0
    assert metrics["page_views:/about"].value == 1.0
    assert metrics["unique_pages"].value == 2.0
    assert metrics["events_by_type:pageview"].count == 3


@pytest.mark.parametrize("properties", [{}, {"page": 42}, {"page": None}, {"page": ["/x"]}])
def test_pageview_without_page_string(properties: dict[str, Any]) -> None:
    agg = fed(event("pageview", properties=properties))
    assert agg.metric("pageviews") is not None
    assert names(agg) == sorted([n.format("pageview") for n in GENERIC] + ["pageviews"])


def test_click_element() -> None:
    agg = fed(
        event("click", properties={"element": "buy-button"}),
        event("click", properties={"element": 7}),
    )
    assert agg.metrics()["clicks"].count == 2
    assert agg.metrics()["clicks:buy-button"].count == 1
    assert list(agg.metrics(prefix="clicks:")) == ["clicks:buy-button"]


@pytest.mark.parametrize(
    ("amounts", "revenue"),
    [([10], 10.0), ([19.99, 0.01], 20.0), ([5, 0], 5.0), ([0], 0.0)],
    ids=["int", "floats", "some-and-zero", "zero"],
)
def test_purchase_amounts_feed_revenue_and_histogram(amounts: list[float], revenue: float) -> None:
    agg = fed(*(event("purchase", properties={"amount": a}) for a in amounts))
    metrics = agg.metrics()
    assert metrics["purchases"].count == len(amounts)
    assert metrics["revenue"].value == pytest.approx(revenue)
    assert metrics["revenue"].count == len(amounts)
    assert metrics["revenue_histogram"].count == len(amounts)
    assert metrics["revenue_histogram"].min == min(amounts)


@pytest.mark.parametrize(
    "amount", ["12", True, False, None, math.inf, math.nan, 10**400, -5, -0.5], ids=repr
)
def test_purchase_ignores_non_numbers_and_negatives(amount: Any) -> None:
    agg = fed(event("purchase", properties={"amount": amount}))
    assert agg.metrics()["purchases"].count == 1
    assert agg.metric("revenue") is None
    assert agg.metric("revenue_histogram") is None


def test_purchase_reads_amount_not_revenue_property() -> None:
    agg = fed(event("purchase", properties={"revenue": 5}))
    assert agg.metric("revenue") is None


def test_unknown_type_feeds_only_generic_metrics() -> None:
    agg = fed(event("signup", user_id="u1", session_id="s1", properties={"page": "/x"}))
    assert names(agg) == sorted(n.format("signup") for n in GENERIC)


def test_type_matching_is_case_sensitive() -> None:
    agg = fed(event("PageView", properties={"page": "/x"}))
    assert agg.metric("pageviews") is None
    assert agg.metric("events_by_type:PageView") is not None


def test_user_and_session_uniques_ignore_missing_and_empty_ids() -> None:
    agg = fed(
        event(user_id="u1", session_id="s1"),
        event(user_id="u1", session_id="s2"),
        event(user_id="u2"),
        event(user_id="", session_id=""),
        event(),
    )
    assert agg.metrics()["unique_users"].value == 2.0
    assert agg.metrics()["unique_sessions"].count == 2
    assert agg.metrics()["total_events"].count == 5


def test_as_amount() -> None:
    assert as_amount(3) == 3.0
    assert isinstance(as_amount(3), float)
    assert as_amount(0) == 0.0
    assert as_amount(-0.5) is None  # a sum counter never decreases
    assert as_amount(-1) is None
    assert as_amount(math.nan) is None
    assert as_amount(10**400) is None
    assert as_amount(True) is None
    assert as_amount("3") is None
    assert as_amount(-math.inf) is None


def test_negative_amounts_never_decrease_a_sum_counter() -> None:
    # The decoder rejects such purchases; for any other rule the aggregation ignores them.
    rules = Rules(
        (TypeRule("refund", "refunds", amounts=(AmountRule("amount", sum_counter="refunded"),)),)
    )
    agg = Aggregator(window_sizes=(), grace=0.0, max_dimension_values=1, started_at=T0, rules=rules)
    agg.add_many(
        [
            event("refund", properties={"amount": 5}),
            event("refund", properties={"amount": -3}),
            event("refund", properties={"amount": 2.5}),
        ],
        T0,
    )
    assert agg.metrics()["refunded"].value == 7.5
    assert agg.metrics()["refunded"].count == 2
    assert agg.metrics()["refunds"].count == 3


def test_rules_are_data_and_drive_the_aggregator() -> None:
    rules = Rules(
        (
            TypeRule(
                "signup",
                "signups",
                dimensions=(DimensionRule("plan", counter_prefix="plans", unique="plan_set"),),
                amounts=(AmountRule("seats", histogram="seats_histogram"),),
            ),
        )
    )
    agg = Aggregator(window_sizes=(), grace=0.0, max_dimension_values=1, started_at=T0, rules=rules)
    agg.add(event("signup", properties={"plan": "pro", "seats": 3}), T0)
    agg.add(event("signup", properties={"plan": "team", "seats": 5}), T0)
    agg.add(event("pageview", properties={"page": "/x"}), T0)
    metrics = agg.metrics()
    assert metrics["signups"].count == 2
    assert metrics["plans:pro"].count == 1
    assert metrics["plans:__other__"].count == 1
    assert metrics["plan_set"].count == 2
    assert metrics["seats_histogram"].sum == 8.0
    assert "pageviews" not in metrics
    assert agg.stats(T0).dimension_overflow_by_base["plans"] == 1


def test_default_rules_expected_kinds() -> None:
    assert DEFAULT_RULES.expected_kind("total_events") == "counter"
    assert DEFAULT_RULES.expected_kind("unique_pages") == "set"
    assert DEFAULT_RULES.expected_kind("revenue_histogram") == "histogram"
    assert DEFAULT_RULES.expected_kind("page_views:/home") == "counter"
    assert DEFAULT_RULES.expected_kind("events_by_type:click") == "counter"
    assert DEFAULT_RULES.expected_kind("clicks") == "counter"
    assert DEFAULT_RULES.expected_kind("something_else") is None


def test_rules_reject_duplicate_types_and_kind_clashes() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Rules((TypeRule("a", "x"), TypeRule("a", "y")))
    with pytest.raises(ValueError, match="both"):
        Rules((TypeRule("a", "x", amounts=(AmountRule("n", histogram="x"),)),))
    with pytest.raises(ValueError, match="both"):
        Rules((TypeRule("a", "unique_users"),))
