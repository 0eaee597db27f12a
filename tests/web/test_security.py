"""API keys, scopes, rate limits, client addresses, slow clients and connection caps over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from tests.conftest import Daemon, make_daemon
from tests.helpers import raw_http, site_of
from twisted_rta.web.edge import ClientAddresses

INGEST_KEY = "ingest-key-0123456789"
READ_KEY = "read-key-0123456789ab"
ADMIN_KEY = "admin-key-0123456789a"

KEYS = {
    "auth": {
        "keys": [
            {"name": "site", "key": INGEST_KEY, "scopes": ["ingest"]},
            {"name": "dash", "key": READ_KEY, "scopes": ["read"]},
            {"name": "ops", "key": ADMIN_KEY, "scopes": ["admin"]},
        ]
    }
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_keys_everything_is_open(daemon: Daemon) -> None:
    assert daemon.http.post("/api/v1/events", {"type": "x"}).status == 202
    assert daemon.http.get("/api/v1/stats").status == 200
    assert daemon.http.get("/metrics").status == 200


def test_no_keys_logs_a_warning(captured_logs: list[dict[str, Any]]) -> None:
    make_daemon()
    assert any("no API keys configured" in str(e.get("log_format")) for e in captured_logs)


def test_missing_key_is_401_with_www_authenticate() -> None:
    daemon = make_daemon(KEYS)
    for method, path in (
        ("POST", "/api/v1/events"),
        ("GET", "/api/v1/metrics"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/nope"),
    ):
        reply = daemon.http.request(method, path, {"type": "x"} if method == "POST" else None)
        assert reply.status == 401, path
        assert reply.json["code"] == "unauthorized"
        assert reply.header("WWW-Authenticate") == 'Bearer realm="rta"'
    wrong = daemon.http.get("/api/v1/stats", headers=bearer("not-a-key"))
    assert (wrong.status, wrong.json["message"]) == (401, "unknown API key")


def test_health_ready_and_preflight_stay_open() -> None:
    daemon = make_daemon(KEYS)
    assert daemon.http.get("/health").status == 200
    assert daemon.http.get("/ready").status == 200
    assert (
        daemon.http.request(
            "OPTIONS", "/api/v1/events", headers={"Origin": "https://a.example"}
        ).status
        == 204
    )


def test_scopes() -> None:
    daemon = make_daemon(KEYS)
    assert (
        daemon.http.post("/api/v1/events", {"type": "x"}, headers=bearer(INGEST_KEY)).status == 202
    )
    denied = daemon.http.get("/api/v1/stats", headers=bearer(INGEST_KEY))
    assert (denied.status, denied.json["code"]) == (403, "forbidden")
    assert "'read'" in denied.json["message"]
    assert daemon.http.get("/api/v1/stats", headers=bearer(READ_KEY)).status == 200
    assert daemon.http.post("/api/v1/events", {"type": "x"}, headers=bearer(READ_KEY)).status == 403
    assert daemon.http.get("/api/v1/stats", headers={"X-API-Key": ADMIN_KEY}).status == 200
    assert (
        daemon.http.post("/api/v1/events", {"type": "x"}, headers={"X-API-Key": ADMIN_KEY}).status
        == 202
    )


def test_query_parameter_key_only_on_ingest_routes() -> None:
    daemon = make_daemon(KEYS)
    assert daemon.http.post(f"/api/v1/events?api_key={INGEST_KEY}", {"type": "x"}).status == 202
    assert daemon.http.get(f"/api/v1/stats?api_key={READ_KEY}").status == 401


def test_public_metrics() -> None:
    daemon = make_daemon({**KEYS, "auth": {**KEYS["auth"], "public_metrics": True}})
    assert daemon.http.get("/metrics").status == 200
    assert daemon.http.get("/api/v1/stats").status == 401


def test_access_log_names_the_key_never_the_key_itself(
    captured_logs: list[dict[str, Any]],
) -> None:
    daemon = make_daemon(KEYS)
    body = b'{"type":"x"}'
    raw_http(
        daemon.service.listeners[0].factory,
        b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + INGEST_KEY.encode()
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body,
    )
    lines = [e for e in captured_logs if e.get("log_namespace") == "twisted_rta.access"]
    assert lines[-1]["key"] == "site"
    assert all(INGEST_KEY not in repr(event) for event in captured_logs)


def test_request_rate_limit_is_429_with_retry_after() -> None:
    daemon = make_daemon({"rate_limits": {"read": {"requests_per_second": 1, "requests_burst": 2}}})
    assert [daemon.http.get("/api/v1/stats").status for _ in range(2)] == [200, 200]
    limited = daemon.http.get("/api/v1/stats")
    assert (limited.status, limited.json["code"]) == (429, "rate_limited")
    assert limited.header("Retry-After") == "1"
    assert daemon.http.get("/health").status == 200  # open routes are never limited
    daemon.reactor.advance(1.0)
    assert daemon.http.get("/api/v1/stats").status == 200


def test_event_rate_limit_refuses_the_whole_batch() -> None:
    daemon = make_daemon({"rate_limits": {"ingest": {"events_per_second": 10, "events_burst": 5}}})
    assert daemon.http.post("/api/v1/events/batch", [{"type": "a"}] * 4).status == 202
    limited = daemon.http.post("/api/v1/events/batch", [{"type": "a"}] * 3)
    assert (limited.status, limited.json["code"]) == (429, "rate_limited")
    assert limited.header("Retry-After") == "1"
    daemon.reactor.advance(1.0)
    assert daemon.http.post("/api/v1/events/batch", [{"type": "a"}] * 3).status == 202


def test_limits_are_per_key_when_keys_are_used() -> None:
    daemon = make_daemon(
        {**KEYS, "rate_limits": {"read": {"requests_per_second": 1, "requests_burst": 1}}}
    )
    assert daemon.http.get("/api/v1/stats", headers=bearer(READ_KEY)).status == 200
    assert daemon.http.get("/api/v1/stats", headers=bearer(READ_KEY)).status == 429
    assert daemon.http.get("/api/v1/stats", headers=bearer(ADMIN_KEY)).status == 200


def request_from(site: Any, peer: str, forwarded: str | None) -> bytes:
    channel = site.buildProtocol(IPv4Address("TCP", peer, 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 40000))
    channel.makeConnection(transport)
    header = f"X-Forwarded-For: {forwarded}\r\n" if forwarded else ""
    channel.dataReceived(f"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\n{header}\r\n".encode())
    return transport.value()


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    daemon = make_daemon(
        {
            "server": {"listen": ["tcp:0"], "trusted_proxies": ["10.0.0.0/8"]},
            "rate_limits": {"read": {"requests_per_second": 1, "requests_burst": 1}},
        }
    )
    site = daemon.service.listeners[0].factory
    # Behind the proxy, two clients get a bucket each.
    assert request_from(site, "10.1.1.1", "203.0.113.5").startswith(b"HTTP/1.1 200")
    assert request_from(site, "10.1.1.1", "203.0.113.6").startswith(b"HTTP/1.1 200")
    assert request_from(site, "10.1.1.1", "203.0.113.5").startswith(b"HTTP/1.1 429")
    # A client spoofing the header without a trusted proxy is just its own address.
    assert request_from(site, "198.51.100.7", "203.0.113.9").startswith(b"HTTP/1.1 200")
    assert request_from(site, "198.51.100.7", "203.0.113.10").startswith(b"HTTP/1.1 429")


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("127.0.0.1", True),
        ("10.2.3.4", True),
        ("11.0.0.1", False),
        ("2001:db8::5", True),
        ("2001:db9::5", False),
        ("::1", False),
        ("::ffff:10.0.0.1", False),  # an IPv4-mapped address is IPv6, as ipaddress says
        ("010.0.0.1", False),  # leading zeros are not an address
        ("unknown", False),
        ("10.0.0.1\x00", False),
        ("", False),
    ],
)
def test_which_addresses_are_trusted_proxies(address: str, trusted: bool) -> None:
    addresses = ClientAddresses(("127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32"))
    assert addresses._trusted(address) is trusted


@pytest.mark.parametrize("fast_lane", [True, False])
def test_a_slow_client_is_disconnected_after_the_request_timeout(fast_lane: bool) -> None:
    daemon = make_daemon(
        {"server": {"listen": ["tcp:0"], "fast_lane": fast_lane, "request_timeout": "2s"}}
    )
    site = daemon.service.listeners[0].factory
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\n")
    for _ in range(3):  # a byte now and then never resets the deadline
        daemon.reactor.advance(0.5)
        channel.dataReceived(b"X")
    assert not transport.disconnected
    daemon.reactor.advance(0.6)
    assert transport.disconnected  # aborted
    assert site_of(site).connections.slow_requests == 1


@pytest.mark.parametrize("fast_lane", [True, False])
def test_a_complete_request_cancels_the_deadline(fast_lane: bool) -> None:
    daemon = make_daemon(
        {"server": {"listen": ["tcp:0"], "fast_lane": fast_lane, "request_timeout": "2s"}}
    )
    site = daemon.service.listeners[0].factory
    written, closed = raw_http(site, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert written.startswith(b"HTTP/1.1 200") and not closed
    daemon.reactor.advance(5.0)
    assert site_of(site).connections.slow_requests == 0


@pytest.mark.parametrize("fast_lane", [True, False])
def test_connections_beyond_the_cap_are_refused(fast_lane: bool) -> None:
    daemon = make_daemon(
        {"server": {"listen": ["tcp:0"], "fast_lane": fast_lane, "max_connections": 2}}
    )
    site = daemon.service.listeners[0].factory
    channels = []
    for _ in range(2):
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        channel.makeConnection(StringTransport())
        channels.append(channel)
    assert site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001)) is None
    assert site_of(site).connections.refused == 1
    channels[0].connectionLost(None)
    assert site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40002)) is not None


@pytest.mark.parametrize("fast_lane", [True, False])
def test_header_flood_is_refused(fast_lane: bool) -> None:
    daemon = make_daemon({"server": {"listen": ["tcp:0"], "fast_lane": fast_lane}})
    site = daemon.service.listeners[0].factory
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    written, closed = raw_http(site, b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert written.startswith(b"HTTP/1.1 400")
    assert closed


def test_api_keys_in_the_query_never_reach_the_access_log(
    captured_logs: list[dict[str, Any]],
) -> None:
    from twisted_rta.web.site import loggable_path

    assert loggable_path(b"/api/v1/events?x=1&api_key=secret&y=2") == (
        b"/api/v1/events?x=1&api_key=***&y=2"
    )
    daemon = make_daemon(KEYS)
    body = b'{"type":"x"}'
    raw_http(
        daemon.service.listeners[0].factory,
        b"POST /api/v1/events?api_key=" + INGEST_KEY.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body,
    )
    lines = [e for e in captured_logs if e.get("log_namespace") == "twisted_rta.access"]
    assert lines[-1]["path"] == "/api/v1/events?api_key=***"
    assert all(INGEST_KEY not in repr(event) for event in captured_logs)


@pytest.mark.parametrize("fast_lane", [True, False])
def test_a_new_connection_that_sends_nothing_is_closed_at_the_request_timeout(
    fast_lane: bool,
) -> None:
    daemon = make_daemon(
        {"server": {"listen": ["tcp:0"], "fast_lane": fast_lane, "request_timeout": "2s"}}
    )
    site = daemon.service.listeners[0].factory
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    daemon.reactor.advance(1.9)
    assert not transport.disconnected
    daemon.reactor.advance(0.1)  # not idle_timeout (60 s): the request deadline
    assert transport.disconnected
    assert site_of(site).connections.slow_requests == 1


@pytest.mark.parametrize("fast_lane", [True, False])
def test_a_kept_alive_connection_waits_for_the_idle_timeout_after_a_response(
    fast_lane: bool,
) -> None:
    daemon = make_daemon(
        {
            "server": {
                "listen": ["tcp:0"],
                "fast_lane": fast_lane,
                "request_timeout": "2s",
                "idle_timeout": "10s",
            }
        }
    )
    site = daemon.service.listeners[0].factory
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    daemon.reactor.advance(1.0)
    channel.dataReceived(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200")
    daemon.reactor.advance(5.0)  # past request_timeout: a kept-alive connection stays
    assert not transport.disconnecting and not transport.disconnected
    assert site_of(site).connections.slow_requests == 0
    daemon.reactor.advance(5.0)  # idle_timeout after the response
    assert transport.disconnecting or transport.disconnected
    assert site_of(site).connections.slow_requests == 0
