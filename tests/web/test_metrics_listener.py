"""server.metrics_listen: /metrics on ports of its own, with the main port's rules for it,
404 for everything else; bound at start like the main listeners, stopped with them."""

from __future__ import annotations

import io
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, StringTransport

from tests.conftest import Daemon, make_daemon
from tests.helpers import NOW, HttpClient, site_of
from twisted_rta.config import Config, config_from_mapping
from twisted_rta.ops.logs import make_observer
from twisted_rta.web.edge import EdgeResource
from twisted_rta.web.listeners import HTTPListener, StartupFailed
from twisted_rta.web.site import RTASite
from twisted_rta.wiring import build_daemon

METRICS_ENDPOINT = "tcp:9090:interface=127.0.0.1"
READ_KEY = "read-key-0123456789ab"
INGEST_KEY = "ingest-key-0123456789"
KEYS = {
    "keys": [
        {"name": "prometheus", "key": READ_KEY, "scopes": ["read"]},
        {"name": "site", "key": INGEST_KEY, "scopes": ["ingest"]},
    ]
}


def daemon_with(**config: Any) -> Daemon:
    server = {"listen": ["tcp:8080:interface=127.0.0.1"], "metrics_listen": [METRICS_ENDPOINT]}
    return make_daemon({"server": {**server, **config.pop("server", {})}, **config})


def metrics_listener(daemon: Daemon) -> HTTPListener:
    found = [
        listener
        for listener in daemon.service.listeners
        if listener.description == METRICS_ENDPOINT
    ]
    assert len(found) == 1
    return found[0]


def metrics_client(daemon: Daemon, *, contract: bool = True) -> HttpClient:
    site = metrics_listener(daemon).factory
    assert isinstance(site, RTASite)  # twisted.web alone: no fast lane on this port
    return HttpClient(site.resource, contract=contract)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_the_endpoint_is_bound_at_start_after_the_main_listener() -> None:
    daemon = daemon_with()
    main, metrics = daemon.service.listeners
    assert main.description == "tcp:8080:interface=127.0.0.1"
    assert metrics.description == METRICS_ENDPOINT
    bound = {
        (port, interface): factory for port, factory, _, interface in daemon.reactor.tcpServers
    }
    assert bound[(9090, "127.0.0.1")] is metrics.factory
    assert bound[(8080, "127.0.0.1")] is main.factory
    assert metrics.factory is not site_of(main.factory)  # a Site of its own
    # Readiness counts it among the listeners.
    ready = daemon.http.get("/ready").json
    assert ready["checks"]["listening"]["status"] == "ok"
    assert "2 of 2 listeners bound" in ready["checks"]["listening"]["detail"]


def test_without_the_key_nothing_more_is_bound() -> None:
    daemon = make_daemon({"server": {"listen": ["tcp:8080:interface=127.0.0.1"]}})
    assert len(daemon.service.listeners) == 1
    assert len(daemon.reactor.tcpServers) == 1


def test_metrics_is_answered_and_every_other_path_is_404() -> None:
    daemon = daemon_with()
    reply = metrics_client(daemon).get("/metrics")
    assert reply.status == 200
    assert (reply.header("Content-Type") or "").startswith("text/plain")
    assert "rta_queue_depth" in reply.body.decode()
    off = metrics_client(daemon, contract=False)
    for path in ("/api/v1/stats", "/health", "/ready", "/", "/metrics/x", "/openapi.json"):
        missing = off.get(path)
        assert (missing.status, missing.json["code"]) == (404, "not_found"), path
    assert off.post("/api/v1/events", {"type": "x"}).status == 404
    assert daemon.service.queue.depth == 0


def test_the_same_auth_rules_as_on_the_main_port() -> None:
    daemon = daemon_with(auth=KEYS)
    client = metrics_client(daemon)
    anonymous = client.get("/metrics")
    assert (anonymous.status, anonymous.json["code"]) == (401, "unauthorized")
    assert anonymous.header("WWW-Authenticate") == 'Bearer realm="rta"'
    assert client.get("/metrics", headers={"X-API-Key": "wrong"}).status == 401
    assert client.get("/metrics", headers=bearer(INGEST_KEY)).status == 403  # no read scope
    assert client.get("/metrics", headers=bearer(READ_KEY)).status == 200
    # Other paths: 404 with a key or without (the port has nothing else to hide).
    assert metrics_client(daemon, contract=False).get("/api/v1/stats").status == 404
    assert daemon.http.get("/api/v1/stats", headers=bearer(READ_KEY)).status == 200


def test_public_metrics_opens_it_as_on_the_main_port() -> None:
    daemon = daemon_with(auth={**KEYS, "public_metrics": True})
    assert metrics_client(daemon).get("/metrics").status == 200
    assert daemon.http.get("/metrics").status == 200


def test_a_real_connection_is_answered_and_logged_under_the_route() -> None:
    daemon = daemon_with()
    site = metrics_listener(daemon).factory
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert channel is not None
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200 OK")
    transport.clear()
    channel.dataReceived(b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 404")
    text = daemon.http.get("/metrics").body.decode()
    assert 'rta_http_requests_total{route="/metrics",status="200"} 1.0' in text
    assert 'rta_http_requests_total{route="other",status="404"} 1.0' in text


def test_a_port_in_use_fails_the_start_with_one_line(captured_logs: list[dict[str, Any]]) -> None:
    class Busy(MemoryReactorClock):
        def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
            if port == 9090:
                raise CannotListenError(interface, port, OSError(98, "Address already in use"))
            return super().listenTCP(port, factory, backlog, interface)

    config = config_from_mapping(
        {
            "server": {
                "listen": ["tcp:8080:interface=127.0.0.1"],
                "metrics_listen": [METRICS_ENDPOINT],
            },
            "store": {"url": "memory:", "node_id": "n"},
            "journal": {"enabled": False},
        }
    )
    service = build_daemon(config, Busy(), log_observer=None).service
    with pytest.raises(StartupFailed) as failed:
        service.privilegedStartService()
    assert METRICS_ENDPOINT in str(failed.value)
    lines = [e for e in captured_logs if e.get("log_format") == "cannot start: {reason}"]
    assert len(lines) == 1 and METRICS_ENDPOINT in lines[0]["reason"]


def test_stopping_stops_the_metrics_listener_with_the_others() -> None:
    daemon = daemon_with()
    listener = metrics_listener(daemon)
    assert listener.port is not None
    stopped = daemon.service.stopService()
    for _ in range(50):
        daemon.reactor.advance(0.1)
    assert stopped.called
    assert listener.port is None and listener.state.address is None


def test_a_reload_applies_the_new_keys_on_the_metrics_port_too() -> None:
    def config(auth: dict[str, Any]) -> Config:
        return config_from_mapping(
            {
                "server": {"listen": ["tcp:0"], "metrics_listen": [METRICS_ENDPOINT]},
                "store": {"url": "memory:", "node_id": "n"},
                "journal": {"enabled": False},
                "auth": auth,
            }
        )

    reactor = MemoryReactorClock()
    reactor.advance(NOW)
    observer = make_observer(io.StringIO(), log_format="console", level="info")
    built = build_daemon(config({}), reactor, observer, reload_config=lambda: config(KEYS))
    built.service.privilegedStartService()
    built.service.startService()
    site = built.service.listeners[1].factory
    assert isinstance(site, RTASite) and isinstance(site.resource, EdgeResource)
    client = HttpClient(site.resource)
    assert client.get("/metrics").status == 200
    assert built.reloader.reload().ok
    assert client.get("/metrics").status == 401
    assert client.get("/metrics", headers=bearer(READ_KEY)).status == 200
