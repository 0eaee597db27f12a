"""Reload marks: the schema alone says which keys a SIGHUP applies and what keeps running."""

from __future__ import annotations

import pytest

from twisted_rta.config import (
    Config,
    ConfigError,
    config_from_mapping,
    merge_reloadable,
    reloadable_keys,
    summary,
)

# The settings the running daemon takes without a restart, spelled out once more on purpose:
# a new key in a reloadable section must be added here, after checking that wiring's apply
# function really swaps it in (max_dimension_values and max_clients size structures made once).
RELOADABLE = {
    "logging.level",
    "logging.format",
    "logging.access_log",
    "cors.ingest.allowed_origins",
    "cors.query.allowed_origins",
    "limits.max_body_bytes",
    "limits.max_batch_events",
    "limits.max_event_bytes",
    "limits.max_properties",
    "limits.max_property_depth",
    "limits.max_property_key_length",
    "limits.max_string_length",
    "limits.max_future_skew",
    "limits.max_event_age",
    "auth.keys",
    "auth.public_metrics",
    "rate_limits.enabled",
    "rate_limits.ingest.requests_per_second",
    "rate_limits.ingest.requests_burst",
    "rate_limits.ingest.events_per_second",
    "rate_limits.ingest.events_burst",
    "rate_limits.read.requests_per_second",
    "rate_limits.read.requests_burst",
    "server.trusted_proxies",
}


def test_the_reloadable_keys_derived_from_the_schema_are_the_documented_ones() -> None:
    assert reloadable_keys() == RELOADABLE
    every_key = set(summary(Config()))
    assert reloadable_keys() <= every_key
    # The rule as stated: these sections whole, but for three keys, plus one server key.
    by_rule = {
        key
        for key in every_key
        if key.startswith(("logging.", "cors.", "limits.", "auth.", "rate_limits."))
        and key not in {"limits.max_dimension_values", "rate_limits.max_clients", "logging.output"}
    } | {"server.trusted_proxies"}
    assert reloadable_keys() == by_rule


# Every section differs from the defaults in at least one key, on both sides of the line.
NEW = {
    "server": {"listen": ["tcp:9999"], "trusted_proxies": ["10.0.0.0/8"]},
    "logging": {"level": "debug", "format": "json"},
    "processing": {"worker_count": 3, "buffer_size": 50_000},
    "windows": {"grace": "20s"},
    "limits": {"max_batch_events": 10, "max_dimension_values": 5},
    "store": {"url": "memory:"},
    "cors": {"query": {"allowed_origins": ["https://new.example"]}},
    "auth": {"keys": [{"name": "k", "key": "a-long-enough-secret", "scopes": ["read"]}]},
    "rate_limits": {"read": {"requests_burst": 7}, "max_clients": 9},
}


def test_merge_takes_reloadable_keys_from_new_and_the_rest_from_current() -> None:
    current, new = Config(), config_from_mapping(NEW)
    merged = summary(merge_reloadable(current, new), redact=False)
    old_values, new_values = summary(current, redact=False), summary(new, redact=False)
    assert merged.keys() == old_values.keys()
    for key, value in merged.items():
        source = new_values if key in reloadable_keys() else old_values
        assert value == source[key], key
    changed = {key for key in merged if old_values[key] != new_values[key]}
    assert changed & reloadable_keys()
    assert changed - reloadable_keys()  # the test covers both sides


def test_merge_of_equal_configs_is_the_current_one() -> None:
    current = Config()
    assert merge_reloadable(current, Config()) is current


def test_a_merge_that_breaks_a_rule_between_keys_is_refused() -> None:
    # buffer_size needs a restart, max_batch_events does not: the new file is valid on its
    # own, but the mix a reload would run could never queue a full batch.
    current = config_from_mapping({"processing": {"buffer_size": 1000}})
    new = config_from_mapping(
        {"processing": {"buffer_size": 5000}, "limits": {"max_batch_events": 5000}}
    )
    with pytest.raises(ConfigError, match=r"^processing\.buffer_size: .*\(5000\).*got 1000$"):
        merge_reloadable(current, new)


def test_metric_rules_wait_for_a_restart() -> None:
    rule = {"name": "signups", "when": {"type": "signup"}, "count": True}
    current = Config()
    new = config_from_mapping({"metrics": {"builtin": False, "rules": [rule]}})
    assert not {key for key in reloadable_keys() if key.startswith("metrics.")}
    merged = merge_reloadable(current, new)
    assert merged.metrics == current.metrics
