"""SIGHUP reload: what may change is applied, the rest is reported, bad files change nothing."""

from __future__ import annotations

import io
from typing import Any

import attrs

from tests.helpers import NOW, HttpClient, site_of
from twisted_rta.config import Config, ConfigError, config_from_mapping
from twisted_rta.ops.logs import make_observer
from twisted_rta.ops.reload import Reloader
from twisted_rta.wiring import Daemon, build_daemon


def daemon_with(loader: Any, stream: io.StringIO | None = None) -> tuple[Daemon, HttpClient]:
    from twisted.internet.testing import MemoryReactorClock

    config = config_from_mapping(
        {
            "server": {"listen": ["tcp:0"]},
            "store": {"url": "memory:", "node_id": "n"},
            "journal": {"enabled": False},
            "cors": {"query": {"allowed_origins": ["https://old.example"]}},
        }
    )
    reactor = MemoryReactorClock()
    reactor.advance(NOW)
    observer = make_observer(stream or io.StringIO(), log_format="console", level="info")
    daemon = build_daemon(config, reactor, observer, reload_config=loader)
    daemon.service.privilegedStartService()
    daemon.service.startService()
    return daemon, HttpClient(site_of(daemon.service.listeners[0].factory).resource)


def test_reload_applies_runtime_settings_and_reports_the_rest() -> None:
    new = config_from_mapping(
        {
            "server": {"listen": ["tcp:9999"]},
            "store": {"url": "memory:", "node_id": "n"},
            "journal": {"enabled": False},
            "cors": {"query": {"allowed_origins": ["https://new.example"]}},
            "limits": {"max_batch_events": 2, "max_dimension_values": 5},
            "logging": {"format": "json", "level": "debug"},
        }
    )
    stream = io.StringIO()
    daemon, http = daemon_with(lambda: new, stream)
    assert (
        http.get("/health", headers={"Origin": "https://old.example"}).header(
            "Access-Control-Allow-Origin"
        )
        == "https://old.example"
    )
    outcome = daemon.reloader.reload()
    assert outcome.ok
    assert set(outcome.applied) == {
        "cors.query.allowed_origins",
        "limits.max_batch_events",
        "logging.format",
        "logging.level",
    }
    assert set(outcome.ignored) == {"server.listen", "limits.max_dimension_values"}
    new_origin = http.get("/health", headers={"Origin": "https://new.example"})
    assert new_origin.header("Access-Control-Allow-Origin") == "https://new.example"
    assert (
        http.get("/health", headers={"Origin": "https://old.example"}).header(
            "Access-Control-Allow-Origin"
        )
        is None
    )
    too_many = http.post("/api/v1/events/batch", [{"type": "a"}] * 3)
    assert (too_many.status, too_many.json["code"]) == (413, "batch_too_large")
    assert daemon.service.listeners[0].description == "tcp:0"  # needs a restart
    assert daemon.reloader.current.limits.max_dimension_values == 10_000


def test_a_bad_file_keeps_the_running_config_and_lists_every_error(
    captured_logs: list[dict[str, Any]],
) -> None:
    def broken() -> Config:
        return config_from_mapping(
            {"cors": {"query": {"allowed_origins": 5}}, "logging": {"level": "x"}}
        )

    daemon, http = daemon_with(broken)
    before = daemon.reloader.current
    outcome = daemon.reloader.reload()
    assert not outcome.ok
    assert len(outcome.errors) == 2
    assert daemon.reloader.current is before
    assert (
        http.get("/health", headers={"Origin": "https://old.example"}).header(
            "Access-Control-Allow-Origin"
        )
        == "https://old.example"
    )
    problems = [e["problem"] for e in captured_logs if "problem" in e]
    assert any(p.startswith("logging.level") for p in problems)
    assert any(p.startswith("cors.query.allowed_origins") for p in problems)


def test_reload_tells_systemd_before_and_after() -> None:
    calls: list[str] = []

    def failing() -> Config:
        raise ConfigError("", "cannot read config file")

    reloader = Reloader(
        load=failing,
        current=Config(),
        apply=lambda config: None,
        before=lambda: calls.append("RELOADING"),
        after=lambda: calls.append("READY"),
    )
    assert not reloader.reload().ok
    assert calls == ["RELOADING", "READY"]


def test_a_reload_whose_limits_outgrow_the_running_buffer_changes_nothing() -> None:
    # processing.buffer_size needs a restart; a reloaded max_batch_events above the running
    # buffer would make every full batch 503 forever, so the reload is refused whole.
    current = config_from_mapping({"processing": {"buffer_size": 1000}})
    new = config_from_mapping(
        {"processing": {"buffer_size": 5000}, "limits": {"max_batch_events": 5000}}
    )
    applied: list[Config] = []
    reloader = Reloader(load=lambda: new, current=current, apply=applied.append)
    outcome = reloader.reload()
    assert not outcome.ok
    assert applied == []
    assert reloader.current is current
    (problem,) = outcome.errors
    assert problem.startswith("processing.buffer_size: must be at least limits.max_batch_events")
    assert problem.endswith("(with the running values of the keys that need a restart)")


def test_a_new_secret_under_the_same_key_name_is_reported_as_applied() -> None:
    def with_key(secret: str) -> Config:
        return config_from_mapping(
            {"auth": {"keys": [{"name": "site", "key": secret, "scopes": ["ingest"]}]}}
        )

    new = with_key("the-new-secret-key-0002")
    applied: list[Config] = []
    reloader = Reloader(
        load=lambda: new, current=with_key("the-old-secret-key-0001"), apply=applied.append
    )
    outcome = reloader.reload()
    assert (outcome.ok, outcome.applied, outcome.ignored) == (True, ("auth.keys",), ())
    assert applied == [new]


def test_log_level_and_format_change_on_reload() -> None:
    stream = io.StringIO()
    new = attrs.evolve(Config(), logging=attrs.evolve(Config().logging, format="json"))
    daemon, _http = daemon_with(
        lambda: attrs.evolve(
            new,
            server=attrs.evolve(new.server, listen=("tcp:0",)),
            store=attrs.evolve(new.store, url="memory:", node_id="n"),
        ),
        stream,
    )
    daemon.reloader.reload()
    from twisted.logger import Logger, globalLogPublisher

    globalLogPublisher.addObserver(daemon.service.log_observer)
    try:
        Logger(namespace="probe").info("after reload")
    finally:
        globalLogPublisher.removeObserver(daemon.service.log_observer)
    assert '"message":"after reload"' in stream.getvalue()
