"""The metrics section: rules from YAML, errors naming the key path, the rules that run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from twisted_rta.aggregation.rules import DropRule, MetricRule
from twisted_rta.config import ConfigError, config_from_mapping, load_config, rules_of


def rules_config(*rules: Any, builtin: bool = True) -> dict[str, Any]:
    return {"metrics": {"builtin": builtin, "rules": list(rules)}}


def test_the_issue_example_loads_into_rules() -> None:
    config = config_from_mapping(
        rules_config(
            {
                "name": "signups",
                "when": {"type": "signup", "where": {"properties.source": ["web", "app"]}},
                "count": True,
                "labels": {"plan": "properties.plan"},
                "max_series": 1000,
            },
            {
                "name": "order_value",
                "when": {"type": "purchase"},
                "sum": "properties.amount",
                "histogram": "properties.amount",
                "labels": {"currency": "properties.currency"},
            },
            {"name": "active_accounts", "when": {"type_glob": "*"}, "unique": "properties.id"},
            {"name": "queue_depth", "when": {"type": "heartbeat"}, "gauge": "properties.depth"},
            {"action": "drop", "when": {"type_glob": "debug.*"}},
        )
    )
    entries = config.metrics.rules
    assert [type(entry) for entry in entries] == [MetricRule] * 4 + [DropRule]
    rules = rules_of(config.metrics.builtin, entries)
    names = [spec.name for spec in rules.specs]
    assert names[:7] == [
        "pageviews",
        "page_views",
        "unique_pages",
        "clicks",
        "purchases",
        "revenue",
        "revenue_histogram",
    ]
    assert names[7:] == [
        "signups",
        "order_value_sum",
        "order_value_histogram",
        "active_accounts",
        "queue_depth",
    ]
    assert rules.expected_kind("signups:pro") == "counter"
    assert rules.expected_kind("order_value_histogram:EUR") == "histogram"
    assert rules.expected_kind("active_accounts") == "set"
    assert rules.expected_kind("queue_depth") == "gauge"
    assert len(rules.drops) == 1
    signups = entries[0]
    assert isinstance(signups, MetricRule)
    assert signups.when.where[0].values == ("web", "app")


def test_builtin_false_drops_the_preset_but_not_the_generic_metrics() -> None:
    config = config_from_mapping(
        rules_config({"name": "clicks", "when": {"type": "click"}, "count": True}, builtin=False)
    )
    rules = rules_of(config.metrics.builtin, config.metrics.rules)
    assert [spec.name for spec in rules.specs] == ["clicks"]
    assert rules.expected_kind("total_events") == "counter"
    assert rules.expected_kind("page_views:/x") is None


@pytest.mark.parametrize(
    ("rule", "path", "words"),
    [
        (
            {"name": "x", "when": {"type": "a"}, "avg": "properties.a"},
            "metrics.rules[1].avg",
            "unknown key",
        ),
        ({"name": "x", "when": {"type": "a"}}, "metrics.rules[1]", "needs an aggregation"),
        (
            {"name": "x", "when": {"type": "a"}, "count": True, "labels": {"p": "properties..x"}},
            "metrics.rules[1].labels.p",
            "not a field path",
        ),
        (
            {"name": "x", "when": {"type": "a"}, "count": True, "labels": {"p": "page"}},
            "metrics.rules[1].labels.p",
            "not a field path",
        ),
        (
            {"name": "clicks", "when": {"type": "a"}, "count": True},
            "metrics.rules[1].name",
            "built-in",
        ),
        (
            {"name": "revenue_histogram", "when": {"type": "a"}, "count": True},
            "metrics.rules[1].name",
            "built-in",
        ),
        (
            {"name": "ok", "when": {"type": "z"}, "count": True},
            "metrics.rules[1].name",
            "already made",
        ),
        (
            {"name": "total_events", "when": {"type": "a"}, "count": True},
            "metrics.rules[1].name",
            "generic",
        ),
        ({"name": "9x", "when": {"type": "a"}, "count": True}, "metrics.rules[1].name", "letters"),
        ({"when": {"type": "a"}, "count": True}, "metrics.rules[1].name", "is required"),
        ({"name": "x", "count": True}, "metrics.rules[1].when", "is required"),
        (
            {"name": "x", "when": {"type": "a", "type_glob": "b*"}, "count": True},
            "metrics.rules[1].when",
            "exactly one",
        ),
        (
            {"name": "x", "when": {"type": "a", "colour": 1}, "count": True},
            "metrics.rules[1].when.colour",
            "unknown key",
        ),
        (
            {"name": "x", "when": {"type": "a", "where": {"properties.a": []}}, "count": True},
            "metrics.rules[1].when.where.properties.a",
            "non-empty",
        ),
        (
            {
                "name": "x",
                "when": {"type": "a", "where": {"properties.a": [{"b": 1}]}},
                "count": True,
            },
            "metrics.rules[1].when.where.properties.a",
            "values must be",
        ),
        (
            {"name": "x", "when": {"type": "a"}, "count": "yes"},
            "metrics.rules[1].count",
            "true or false",
        ),
        (
            {"name": "x", "when": {"type": "a"}, "count": True, "max_series": 0},
            "metrics.rules[1].max_series",
            "from 1",
        ),
        (
            {"name": "x", "when": {"type": "a"}, "count": True, "total": True},
            "metrics.rules[1].total",
            "labels",
        ),
        (
            {
                "name": "x",
                "when": {"type": "a"},
                "count": True,
                "labels": {f"l{i}": "type" for i in range(4)},
            },
            "metrics.rules[1].labels",
            "at most 3",
        ),
        (
            {"name": "x", "when": {"type": "a"}, "count": True, "labels": {"from": "type"}},
            "metrics.rules[1].labels.from",
            "query parameter",
        ),
        (
            {"action": "drop", "when": {"type": "a"}, "count": True},
            "metrics.rules[1].count",
            "drop rule",
        ),
        (
            {"action": "explode", "when": {"type": "a"}},
            "metrics.rules[1].action",
            "aggregate or drop",
        ),
        ("signups", "metrics.rules[1]", "must be a mapping"),
    ],
)
def test_a_bad_rule_is_one_error_naming_its_key_path(rule: Any, path: str, words: str) -> None:
    ok = {"name": "ok", "when": {"type": "z"}, "count": True}
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(rules_config(ok, rule))
    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}: ")
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_two_aggregations_of_one_kind_in_a_file_are_an_error(tmp_path: Path) -> None:
    config = tmp_path / "rta.yaml"
    config.write_text(
        "metrics:\n"
        "  rules:\n"
        "    - name: x\n"
        "      when: {type: a}\n"
        "      sum: properties.a\n"
        "      sum: properties.b\n"
    )
    with pytest.raises(ConfigError, match=r"^metrics\.rules\[0\]\.sum: is given twice$"):
        load_config(config)


def test_a_repeated_key_anywhere_in_the_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "rta.yaml"
    config.write_text("logging:\n  level: info\n  level: debug\n")
    with pytest.raises(ConfigError, match=r"^logging\.level: is given twice$"):
        load_config(config)


def test_the_summary_shows_rules_as_written() -> None:
    from twisted_rta.config import summary

    rule = {
        "name": "signups",
        "when": {"type": "signup", "where": {"properties.source": ["web"]}},
        "count": True,
        "labels": {"plan": "properties.plan"},
        "max_series": 10,
        "total": True,
    }
    drop = {"action": "drop", "when": {"type_glob": "debug.*"}}
    flat = summary(config_from_mapping(rules_config(rule, drop)))
    assert flat["metrics.rules"] == [rule, drop]
    assert flat["metrics.builtin"] is True
    # As written, so the summary loads back into the same config.
    again = config_from_mapping(rules_config(*flat["metrics.rules"]))
    assert again.metrics == config_from_mapping(rules_config(rule, drop)).metrics


def test_where_present_loads_and_anything_else_in_a_mapping_is_an_error() -> None:
    config = config_from_mapping(
        rules_config(
            {
                "name": "campaigns",
                "when": {
                    "type": "pageview",
                    "where": {"properties.utm_campaign": {"present": True}},
                },
                "count": True,
                "labels": {"campaign": "properties.utm_campaign"},
            }
        )
    )
    (entry,) = config.metrics.rules
    assert isinstance(entry, MetricRule)
    assert entry.as_config()["when"]["where"] == {"properties.utm_campaign": {"present": True}}
    with pytest.raises(ConfigError) as raised:
        config_from_mapping(
            rules_config(
                {
                    "name": "x",
                    "when": {"type": "a", "where": {"properties.c": {"present": "yes"}}},
                    "count": True,
                }
            )
        )
    assert "metrics.rules[0].when.where.properties.c" in str(raised.value)
    assert "{present: true}" in str(raised.value)
