"""Fixtures: the real composition root on a MemoryReactorClock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogBeginner, globalLogPublisher

from tests.helpers import NOW, HttpClient, site_of
from twisted_rta.config import Config, config_from_mapping
from twisted_rta.service import RTAService
from twisted_rta.store.interface import WindowStore
from twisted_rta.wiring import build_daemon

# RTA_REQUIRE_ENVIRONMENT=1 (CI): a skipped test fails instead.
pytest_plugins = ("tests.environment",)


def pytest_configure(config: pytest.Config) -> None:
    # Without a log target twisted.logger buffers every event forever; logged failures
    # would then keep sketches alive past interpreter teardown (nanobind leak warnings).
    globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)


@attrs.define
class Daemon:
    reactor: MemoryReactorClock
    service: RTAService
    http: HttpClient
    config: Config


def make_daemon(
    raw_config: dict[str, Any] | None = None,
    *,
    start: bool = True,
    store: WindowStore | None = None,
) -> Daemon:
    raw = {
        "server": {"listen": ["tcp:0:interface=127.0.0.1"]},
        "store": {"url": "memory:", "node_id": "node-a"},
        # Unit tests keep nothing on disk; tests of the journal give it a directory.
        "journal": {"enabled": False},
        **(raw_config or {}),
    }
    config = config_from_mapping(raw)
    reactor = MemoryReactorClock()
    reactor.advance(NOW)
    service = build_daemon(config, reactor, log_observer=None, store=store).service
    if start:
        service.privilegedStartService()
        service.startService()
    http = HttpClient(site_of(service.listeners[0].factory).resource)
    return Daemon(reactor, service, http, config)


@pytest.fixture
def daemon_factory() -> Callable[..., Daemon]:
    return make_daemon


@pytest.fixture
def daemon() -> Daemon:
    return make_daemon()


@pytest.fixture
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)
