"""The Go service's window-metric names and the metrics of ours they read (pure)."""

from __future__ import annotations

from twisted_rta.aggregation.rules import Match, MetricRule, Rules, builtin_rules
from twisted_rta.query.aliases import alias_target, aliases_of, family_alias_target

RULES = Rules(builtin_rules())


def test_go_names_read_ours() -> None:
    assert alias_target("events", RULES) == "total_events"
    assert alias_target("active_users", RULES) == "unique_users"
    assert alias_target("events:purchase", RULES) == "events_by_type:purchase"
    assert alias_target("events:a:b", RULES) == "events_by_type:a:b"
    assert family_alias_target("events", RULES) == "events_by_type"


def test_other_names_are_no_aliases() -> None:
    for name in ("total_events", "eventsx", "events_by_type:x", "unique_users", "pageviews"):
        assert alias_target(name, RULES) is None
    assert family_alias_target("page_views", RULES) is None


def test_a_window_lists_each_go_name_of_its_metrics() -> None:
    names = ["events_by_type:click", "pageviews", "total_events", "unique_users"]
    assert aliases_of(names, RULES) == [
        ("events:click", "events_by_type:click"),
        ("events", "total_events"),
        ("active_users", "unique_users"),
    ]
    assert aliases_of([], RULES) == []


def test_a_metric_under_a_go_name_is_never_shadowed() -> None:
    rules = Rules(
        (
            *builtin_rules(),
            MetricRule("events", Match(type="purchase"), count=True),
        )
    )
    assert alias_target("events", rules) is None
    assert alias_target("active_users", rules) == "unique_users"
    names = ["events", "total_events", "unique_users"]
    assert aliases_of(names, rules) == [("active_users", "unique_users")]
    # A window that (from a stored row) already holds a metric under the Go name keeps it.
    assert aliases_of(["active_users", "unique_users"], RULES) == []
