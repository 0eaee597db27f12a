"""The Go service's config vocabulary: its upstream file loads verbatim; each Go key maps to
ours or is reported as having no effect; wrong values and settings given twice are errors
naming the Go key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from twisted_rta.config import (
    Config,
    ConfigError,
    config_and_notices_from_mapping,
    config_from_mapping,
    load_config_and_notices,
)
from twisted_rta.config.go_vocabulary import default_retention, go_duration
from twisted_rta.query.figures import SlidingFigures, WindowFigures

# The Go service's upstream config/config.yaml, verbatim in shape (issue 17).
UPSTREAM = """\
server: {host: "0.0.0.0", port: 8080, read_timeout: 30s, write_timeout: 30s, idle_timeout: 120s,
         shutdown_timeout: 10s, mode: "release"}
processing: {worker_count: 10, buffer_size: 10000, batch_size: 100, flush_interval: 5s}
storage:
  postgres: {host: "localhost", port: 5432, database: "analytics", user: "youruser",
             password: "yourpassword", max_connections: 25}
  redis: {address: "localhost:6379", password: "", db: 0, pool_size: 50}
window:
  tumbling: [{size: 1m, metrics: [count, sum, avg]}, {size: 5m, metrics: [count, p95, p99]}]
  sliding: [{size: 5m, step: 1m, metrics: [rate, unique]}]
logging: {level: "info", format: "json", output: "stdout"}
monitoring: {prometheus: {enabled: true, port: 9090, path: "/metrics"}}
"""
MINUTE, DAY = 60.0, 86400.0


def upstream() -> dict[str, Any]:
    raw = yaml.safe_load(UPSTREAM)
    assert isinstance(raw, dict)
    return raw


def error_of(raw: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(raw)
    return str(caught.value)


def test_the_upstream_file_loads_verbatim_and_maps_every_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(UPSTREAM)
    config, notices = load_config_and_notices(path)
    server = config.server
    assert server.listen == ("tcp:8080:interface=0.0.0.0",)
    assert (server.request_timeout, server.write_timeout) == (30.0, 30.0)
    assert (server.idle_timeout, server.shutdown_timeout) == (120.0, 10.0)
    assert server.metrics_listen == ("tcp:9090:interface=0.0.0.0",)
    processing = config.processing
    assert (processing.worker_count, processing.buffer_size) == (10, 10000)
    assert processing.coalesce_requests == 100
    assert config.windows.flush_interval == 5.0
    assert config.store.url == "postgresql://youruser:yourpassword@localhost:5432/analytics"
    assert config.store.max_connections == 25
    windows = config.windows
    assert [(r.size, r.retention) for r in windows.resolutions] == [
        (MINUTE, 2 * DAY),
        (5 * MINUTE, 2 * DAY),
    ]
    assert windows.figures == (
        WindowFigures(MINUTE, ("count", "sum", "avg")),
        WindowFigures(5 * MINUTE, ("count", "p95", "p99")),
    )
    assert windows.sliding == (SlidingFigures(5 * MINUTE, MINUTE, ("rate", "unique")),)
    assert (config.logging.level, config.logging.format, config.logging.output) == (
        "info",
        "json",
        "stdout",
    )
    # Exactly the keys without an effect, one line each, saying why.
    assert notices == (
        "server.mode: no effect (a setting of Gin, the Go web framework)",
        "storage.redis: no effect (twisted-rta needs no Redis: its state is in memory, the "
        "journal and the window store)",
    )


def test_our_own_file_has_no_notices_and_the_defaults_are_ours() -> None:
    config, notices = config_and_notices_from_mapping({"server": {"request_timeout": "5s"}})
    assert notices == () and config.server.request_timeout == 5.0
    assert config_from_mapping({}) == Config()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"server": {"port": 70000}}, "server.port: "),
        ({"server": {"read_timeout": "soon"}}, "server.read_timeout: must be a duration"),
        ({"server": {"read_timeout": "0s"}}, "server.read_timeout: must be a duration >= 0.1"),
        ({"server": {"mode": 3}}, "server.mode: "),
        ({"processing": {"batch_size": 0}}, "processing.batch_size: "),
        ({"processing": {"flush_interval": "1ms"}}, "processing.flush_interval: "),
        ({"storage": {"postgres": {"database": ""}}}, "storage.postgres.database: must not be"),
        ({"storage": {"postgres": {"port": "x"}}}, "storage.postgres.port: "),
        ({"storage": {"postgres": {"max_connections": 0}}}, "storage.postgres.max_connections: "),
        ({"storage": {"redis": {"db": -1}}}, "storage.redis.db: "),
        ({"storage": {"mongo": {}}}, "storage.mongo: unknown key (expected postgres, redis)"),
        (
            {"window": {"tumbling": [{"size": "1m", "metrics": ["median"]}]}},
            "window.tumbling[0].metrics[0]: must be one of count, sum, avg, p95, p99",
        ),
        (
            {"window": {"sliding": [{"size": "5m", "step": "1m", "metrics": ["p95"]}]}},
            "window.sliding[0].metrics[0]: must be one of rate, unique",
        ),
        ({"monitoring": {"prometheus": {"port": 0}}}, "monitoring.prometheus.port: "),
        (
            {"monitoring": {"prometheus": {"path": "/prom"}}},
            "monitoring.prometheus.path: must be /metrics",
        ),
    ],
)
def test_a_wrong_value_in_a_go_key_is_an_error_naming_it(
    change: dict[str, Any], expected: str
) -> None:
    raw = upstream()
    for section, values in change.items():
        if section == "storage" and "postgres" in values:
            raw[section]["postgres"] = {**raw[section]["postgres"], **values["postgres"]}
        elif section == "storage" and "redis" in values:
            raw[section]["redis"] = {**raw[section]["redis"], **values["redis"]}
        elif section == "monitoring":
            raw[section]["prometheus"] = {**raw[section]["prometheus"], **values["prometheus"]}
        else:
            raw[section] = {**raw.get(section, {}), **values}
    assert expected in error_of(raw)


def test_tumbling_sizes_that_do_not_nest_are_an_error_naming_the_key() -> None:
    raw = {"window": {"tumbling": [{"size": "2m"}, {"size": "3m", "metrics": ["count"]}]}}
    assert error_of(raw).startswith("window.tumbling[1].size: must be a whole multiple")
    # Given out of order, they are sorted: the finest window first.
    sorted_raw = {"window": {"tumbling": [{"size": "1h"}, {"size": "1m"}]}}
    sizes = [r.size for r in config_from_mapping(sorted_raw).windows.resolutions]
    assert sizes == [MINUTE, 3600.0]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"server": {"read_timeout": "1s", "request_timeout": "2s"}},
            "server.read_timeout: is the Go service's name of server.request_timeout",
        ),
        (
            {"processing": {"flush_interval": "1s"}, "windows": {"flush_interval": "2s"}},
            "processing.flush_interval: is the Go service's name of windows.flush_interval",
        ),
        (
            {"processing": {"batch_size": 5, "coalesce_requests": 6}},
            "processing.batch_size: is the Go service's name of processing.coalesce_requests",
        ),
        (
            {"storage": {"postgres": {"database": "a", "user": "u"}}, "store": {"url": "memory:"}},
            "storage.postgres: give store.url or storage.postgres, not both",
        ),
        (
            {"window": {"tumbling": [{"size": "1m"}]}, "windows": {"resolutions": []}},
            "window.tumbling: give windows.resolutions or window.tumbling",
        ),
        (
            {"monitoring": {"prometheus": {}}, "server": {"metrics_listen": ["tcp:1"]}},
            "monitoring.prometheus: give server.metrics_listen or monitoring.prometheus",
        ),
        (
            {"server": {"port": 8081, "listen": ["tcp:8082"]}},
            "server.listen: give either listen or host/port, not both",
        ),
    ],
)
def test_a_setting_given_both_ways_is_an_error(raw: dict[str, Any], expected: str) -> None:
    assert expected in error_of(raw)


def test_both_vocabularies_mix_and_ours_stay_strict() -> None:
    raw = {
        "server": {"port": 9000, "request_timeout": "7s", "mode": "debug"},
        "processing": {"batch_size": 10},
        "limits": {"max_batch_events": 500},
    }
    config, notices = config_and_notices_from_mapping(raw)
    assert config.server.listen == ("tcp:9000:interface=0.0.0.0",)
    assert (config.server.request_timeout, config.processing.coalesce_requests) == (7.0, 10)
    assert config.limits.max_batch_events == 500
    assert notices == ("server.mode: no effect (a setting of Gin, the Go web framework)",)
    assert "server.nonsense: unknown key" in error_of({"server": {"nonsense": 1}})
    assert "nonsense: unknown key" in error_of({"nonsense": {}})


def test_prometheus_goes_on_the_apis_interface_or_says_why_not() -> None:
    served = config_from_mapping(
        {"server": {"host": "127.0.0.1", "port": 8080}, "monitoring": {"prometheus": {}}}
    )
    assert served.server.metrics_listen == ("tcp:9090:interface=127.0.0.1",)
    ours = config_from_mapping(
        {"server": {"listen": ["tcp:8081:interface=10.0.0.2"]}, "monitoring": {"prometheus": {}}}
    )
    assert ours.server.metrics_listen == ("tcp:9090:interface=10.0.0.2",)
    off, notices = config_and_notices_from_mapping(
        {"monitoring": {"prometheus": {"enabled": False}}}
    )
    assert off.server.metrics_listen == ()
    assert notices[0].startswith("monitoring.prometheus.enabled: no effect (/metrics is always")
    same, notices = config_and_notices_from_mapping(
        {"server": {"port": 9090}, "monitoring": {"prometheus": {"port": 9090}}}
    )
    assert same.server.metrics_listen == ()
    assert notices[0].startswith("monitoring.prometheus.port: no effect (it is the API's port")


def test_postgres_credentials_are_quoted_into_the_url_and_a_password_may_be_absent() -> None:
    raw = {
        "storage": {
            "postgres": {"host": "::1", "database": "a/b", "user": "me@x", "password": "p:w@"}
        }
    }
    assert config_from_mapping(raw).store.url == "postgresql://me%40x:p%3Aw%40@[::1]:5432/a/b"
    bare = {"storage": {"postgres": {"database": "rta", "user": "rta", "password": ""}}}
    assert config_from_mapping(bare).store.url == "postgresql://rta@localhost:5432/rta"


def test_go_durations_and_default_retentions() -> None:
    assert go_duration("1m30s") == 90.0
    assert go_duration("250ms") == 0.25
    assert go_duration("1.5h") == 5400.0
    assert go_duration("2d") == "2d"  # not Go's: left for our parser
    assert go_duration(7) == 7
    assert config_from_mapping({"server": {"idle_timeout": "2m30s"}}).server.idle_timeout == 150
    assert default_retention(MINUTE) == 2 * DAY
    assert default_retention(5 * MINUTE) == 2 * DAY
    assert default_retention(3600.0) == 90 * DAY
    assert default_retention(7 * DAY) == 2 * 365 * DAY
    assert default_retention(10.0) == 2 * DAY
