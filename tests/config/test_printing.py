"""--print-config's YAML: every key in our vocabulary, each value in a form its parser takes
back (fed back, it gives an equal Config), secrets redacted."""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
import pytest
import yaml
from attrs import frozen

from twisted_rta.config import (
    Config,
    byte_size,
    config_and_notices_from_mapping,
    config_from_mapping,
    config_mapping,
    config_yaml,
    duration,
    integer,
    number,
    summary,
)
from twisted_rta.config.printing import REDACTED, duration_text, printed_value, size_text
from twisted_rta.config.schema import setting

PLAIN_KEY = "0123456789abcdef-plain-key"
READER_DIGEST = "AB" * 32

# Every section set away from its defaults, durations and sizes in every unit and shape.
RICH = f"""
server:
  listen:
    - "tcp:8123:interface=127.0.0.1"
    - 'tcp6:8124:interface=\\:\\:1'
    - "unix:/tmp/rta-print.sock"
  listen_backlog: 511
  shutdown_timeout: 1500ms
  request_timeout: 0.5
  write_timeout: 2m
  idle_timeout: 90s
  max_connections: 123
  fast_lane: false
  metrics_listen: ["tcp:9090:interface=127.0.0.1"]
  trusted_proxies: ["10.0.0.0/8", "::1"]
logging: {{level: debug, format: json, access_log: false, output: /var/log/rta/rta.log}}
processing: {{worker_count: 3, buffer_size: 5000, coalesce_requests: 10}}
windows:
  resolutions:
    - {{size: 10s, retention: 1h}}
    - {{size: 1m, retention: 2w}}
    - {{size: 1h, retention: 1y}}
    - {{size: 1d, retention: 800d}}
  figures:
    - {{size: 1m, figures: [count, sum, avg]}}
    - {{size: 1h, figures: [p95, p99], of: revenue_histogram}}
  sliding:
    - {{size: 5m, step: 1m, figures: [rate, unique]}}
    - {{size: 30s, step: 10s}}
  flush_interval: 250ms
  grace: 0
  keep_closed: 0
limits:
  max_body_bytes: 2MB
  max_batch_events: 500
  max_event_bytes: 1000
  max_properties: 10
  max_property_depth: 3
  max_property_key_length: 64
  max_string_length: 100
  max_future_skew: 0.75
  max_event_age: 1.5h
  max_dimension_values: 77
store:
  url: "sqlite:///tmp/rta-print/rta.sqlite3"
  data_dir: /tmp/rta-print
  node_id: node-a
  max_connections: 2
  max_pending_windows: 99
  retry_initial: 10ms
  retry_max: 3600
  retention_interval: 36h
  retention_batch: 10
journal: {{enabled: true, fsync: always, fsync_interval: 1ms, max_bytes: 3GiB,
          segment_bytes: 100001}}
dedup: {{enabled: false, horizon: 36h, max_ids: 5000}}
cors:
  ingest: {{allowed_origins: ["https://a.example"]}}
  query: {{allowed_origins: ["https://b.example", "https://c.example"]}}
auth:
  keys:
    - {{name: ingest, key: "{PLAIN_KEY}", scopes: [ingest]}}
    - {{name: reader, sha256: "{READER_DIGEST}", scopes: [read, admin], sites: [a.example]}}
  public_metrics: true
rate_limits:
  enabled: false
  ingest: {{requests_per_second: 12.5, requests_burst: 30, events_per_second: 0,
           events_burst: 1}}
  read: {{requests_per_second: 0.25, requests_burst: 2}}
  max_clients: 7
metrics:
  builtin: true
  web: false
  rules:
    - name: orders
      when:
        type: order
        where:
          properties.currency: [EUR, USD]
          properties.test: {{present: false}}
          properties.amount: 1.5
          properties.flag: [true, null, 3]
      count: true
      sum: properties.amount
      histogram: properties.cart.total
      labels: {{country: properties.country, plan: properties.plan}}
      max_series: 50
      total: true
    - name: signups
      when: {{type_glob: "signup_*"}}
      unique: user_id
    - action: drop
      when: {{type: debug}}
privacy: {{salt_rotation: 12h, honor_do_not_track: true}}
tracker: {{script_path: /js/stats.js, endpoint_path: /api/collect}}
"""


def rich() -> Config:
    return config_from_mapping(yaml.safe_load(RICH))


def fed_back(printed: str) -> Config:
    return config_from_mapping(yaml.safe_load(printed))


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(Config(), id="defaults"),
        pytest.param(rich(), id="rich"),
        pytest.param(
            config_from_mapping({"store": {"url": "memory:"}, "metrics": {"rules": None}}),
            id="memory-store",
        ),
    ],
)
def test_printed_config_fed_back_is_the_same_config(config: Config) -> None:
    printed = config_yaml(config)
    assert fed_back(printed) == config
    # Printing is stable: the config fed back prints the same text.
    assert config_yaml(fed_back(printed)) == printed


def test_every_key_of_the_schema_is_printed() -> None:
    def flat(mapping: dict[str, Any], prefix: str = "") -> set[str]:
        keys: set[str] = set()
        for key, value in mapping.items():
            if isinstance(value, dict):
                keys |= flat(value, f"{prefix}{key}.")
            else:
                keys.add(prefix + key)
        return keys

    assert flat(config_mapping(Config())) == set(summary(Config()))


def test_values_are_written_as_the_config_writes_them() -> None:
    printed = config_mapping(rich())
    server, windows, limits = printed["server"], printed["windows"], printed["limits"]
    assert (server["shutdown_timeout"], server["request_timeout"]) == ("1500ms", "500ms")
    assert (server["write_timeout"], server["idle_timeout"]) == ("2m", "90s")
    assert server["listen"][1] == "tcp6:8124:interface=\\:\\:1"
    assert windows["resolutions"] == [
        {"size": "10s", "retention": "1h"},
        {"size": "1m", "retention": "2w"},
        {"size": "1h", "retention": "1y"},
        {"size": "1d", "retention": "800d"},
    ]
    assert windows["sliding"][1] == {"size": "30s", "step": "10s", "figures": ["rate", "unique"]}
    assert windows["figures"][0] == {
        "size": "1m",
        "figures": ["count", "sum", "avg"],
        "of": "revenue_histogram",
    }
    assert (windows["flush_interval"], windows["grace"]) == ("250ms", "0s")
    assert (limits["max_body_bytes"], limits["max_event_bytes"]) == ("2MB", "1KB")
    assert (limits["max_future_skew"], limits["max_event_age"]) == ("750ms", "90m")
    assert limits["max_properties"] == 10  # a count, not a size
    assert printed["journal"]["max_bytes"] == "3GiB"
    assert printed["journal"]["segment_bytes"] == 100001  # no unit divides it
    assert printed["store"]["retry_max"] == "1h"
    assert printed["rate_limits"]["ingest"]["requests_per_second"] == 12.5
    assert printed["rate_limits"]["ingest"]["requests_burst"] == 30
    # The metric rules as they are written.
    rules = printed["metrics"]["rules"]
    assert rules[0]["when"]["where"] == {
        "properties.currency": ["EUR", "USD"],
        "properties.test": {"present": False},
        "properties.amount": [1.5],
        "properties.flag": [True, None, 3],
    }
    assert rules[0]["labels"] == {"country": "properties.country", "plan": "properties.plan"}
    assert rules[1] == {
        "name": "signups",
        "when": {"type_glob": "signup_*"},
        "unique": "user_id",
        "max_series": rules[1]["max_series"],
    }
    assert rules[2] == {"action": "drop", "when": {"type": "debug"}}


def test_api_keys_are_printed_as_their_digests() -> None:
    printed = config_yaml(rich())
    assert PLAIN_KEY not in printed
    keys = yaml.safe_load(printed)["auth"]["keys"]
    assert keys == [
        {
            "name": "ingest",
            "sha256": hashlib.sha256(PLAIN_KEY.encode()).hexdigest(),
            "scopes": ["ingest"],
        },
        {
            "name": "reader",
            "sha256": READER_DIGEST.lower(),
            "scopes": ["read", "admin"],
            "sites": ["a.example"],
        },
    ]


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (
            "postgresql://rta:s3cr%40t@db.example:5432/analytics",
            f"postgresql://rta:{REDACTED}@db.example:5432/analytics",
        ),
        (
            "postgresql://db.example/analytics?user=rta&password=s3cret&sslmode=require",
            f"postgresql://db.example/analytics?user=rta&password={REDACTED}&sslmode=require",
        ),
        (
            "host=db.example password='s3 cret' dbname=analytics",
            f"host=db.example password={REDACTED} dbname=analytics",
        ),
    ],
)
def test_a_store_password_is_redacted_and_said_to_be_filled_in(url: str, redacted: str) -> None:
    config = config_from_mapping({"store": {"url": url}})
    printed = config_yaml(config)
    assert "s3cr" not in printed
    store_section = printed[printed.index("\nstore:") - 200 : printed.index("\nstore:")]
    assert f"the password is replaced by {REDACTED}: fill it in" in store_section
    # Fed back, only the redacted URL differs.
    fed = fed_back(printed)
    assert fed.store.url == redacted
    assert fed == attrs.evolve(config, store=attrs.evolve(config.store, url=redacted))
    # Unredacted (never printed) it is the URL itself.
    assert config_mapping(config, redact=False)["store"]["url"] == url


def test_a_url_without_a_password_is_printed_whole_without_a_comment() -> None:
    url = "postgresql://rta@db.example:5432/analytics?sslmode=require"
    printed = config_yaml(config_from_mapping({"store": {"url": url}}))
    assert REDACTED not in printed
    assert yaml.safe_load(printed)["store"]["url"] == url


def test_the_go_services_file_prints_in_our_vocabulary() -> None:
    from tests.config.test_go_vocabulary import UPSTREAM

    config, notices = config_and_notices_from_mapping(yaml.safe_load(UPSTREAM))
    printed = config_yaml(config, notices=notices, source="config.yaml")
    raw = yaml.safe_load(printed)
    assert set(raw) == {spec.name for spec in attrs.fields(Config)}
    assert "storage" not in raw and "window" not in raw and "monitoring" not in raw
    assert "yourpassword" not in printed
    for notice in notices:
        assert f"#   {notice}\n" in printed
    redacted_url = raw["store"]["url"]
    assert f":{REDACTED}@" in redacted_url
    assert fed_back(printed) == attrs.evolve(
        config, store=attrs.evolve(config.store, url=redacted_url)
    )


def test_a_new_key_is_printed_from_its_parser_alone() -> None:
    @frozen
    class Section:
        timeout: float = setting(5400.0, duration())
        buffer: int = setting(2048, byte_size())
        count: int = setting(2048, integer())
        rate: float = setting(3600.0, number())

    assert config_mapping(Section()) == {
        "timeout": "90m",
        "buffer": "2KiB",
        "count": 2048,
        "rate": 3600,
    }


def test_a_value_no_form_gives_back_is_an_error_not_a_wrong_file() -> None:
    with pytest.raises(ValueError, match=r"section\.key: no printed form"):
        printed_value(2.5, lambda value, path: 0.0, "section.key")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.001, "1ms"),
        (0.2, "200ms"),
        (1.5, "1500ms"),
        (0.0005, "0.0005s"),
        (59.0, "59s"),
        (60.0, "1m"),
        (5400.0, "90m"),
        (86400.0, "1d"),
        (604800.0, "1w"),
        (365 * 86400.0, "1y"),
        (1e-05, None),
    ],
)
def test_duration_text(seconds: float, text: str | None) -> None:
    assert duration_text(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [(1024, "1KiB"), (1 << 20, "1MiB"), (3 << 30, "3GiB"), (2000, "2KB"), (1500, None)],
)
def test_size_text(size: int, text: str | None) -> None:
    assert size_text(size) == text
