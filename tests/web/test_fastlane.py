"""The fast ingest lane on a fake transport: what it answers itself, what it bridges to
twisted.web, and the connection rules it owns (order, limits, 100-continue, keep-alive)."""

from __future__ import annotations

import gzip
import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from tests.conftest import Daemon, make_daemon
from tests.contract import check as check_contract
from tests.helpers import site_of
from twisted_rta.web.fastlane import FastLane, FastLaneProtocol

ONE = b'{"type":"pageview","user_id":"u1"}'


class Connection:
    """One client connection to the daemon's fast lane."""

    def __init__(self, daemon: Daemon) -> None:
        factory = daemon.service.listeners[0].factory
        assert isinstance(factory, FastLane)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert isinstance(protocol, FastLaneProtocol)
        self.protocol = protocol
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def take(self) -> bytes:
        written = self.transport.value()
        self.transport.clear()
        return written


def post(path: bytes, body: bytes, *, version: bytes = b"1.1", extra: bytes = b"") -> bytes:
    return (
        b"POST " + path + b" HTTP/" + version + b"\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n"
        % len(body)
        + extra
        + b"\r\n"
        + body
    )


def responses(stream: bytes) -> list[tuple[int, dict[str, str], Any]]:
    """Split a stream of HTTP/1.x responses framed by Content-Length."""
    found = []
    while stream:
        head, rest = stream.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        body, stream = rest[:length], rest[length:]
        found.append((status, headers, json.loads(body) if body else None))
    return found


def test_ingest_is_answered_by_the_lane_and_the_event_is_queued() -> None:
    daemon = make_daemon(start=False)  # no worker takes from the queue
    connection = Connection(daemon)
    connection.send(post(b"/api/v1/events", ONE))
    [(status, headers, body)] = responses(connection.take())
    assert status == 202
    assert body["data"]["type"] == "pageview"
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["server"].startswith("TwistedWeb/")
    assert "date" in headers and "x-request-id" in headers
    assert daemon.service.queue.depth == 1
    assert not connection.transport.disconnecting  # kept alive


def test_pipelined_requests_are_answered_in_order_across_both_lanes() -> None:
    daemon = make_daemon(start=False)
    connection = Connection(daemon)
    connection.send(
        post(b"/api/v1/events", ONE)
        + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        + post(b"/api/v1/events/batch", b"[" + ONE + b"," + ONE + b"]")
        + b"GET /api/v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    answers = responses(connection.take())
    assert [status for status, _, _ in answers] == [202, 200, 202, 404]
    assert answers[1][2]["status"] == "healthy"  # bridged to twisted.web
    assert answers[2][2]["data"]["accepted"] == 2
    assert daemon.service.queue.depth == 3


def test_a_request_split_across_reads_is_answered_once_whole() -> None:
    daemon = make_daemon()
    connection = Connection(daemon)
    request = post(b"/api/v1/events", ONE)
    for index in range(len(request)):
        assert connection.take() == b""
        connection.send(request[index : index + 1])
    [(status, _, _)] = responses(connection.take())
    assert status == 202


def test_http_1_0_is_answered_as_1_0_and_closed() -> None:
    daemon = make_daemon()
    connection = Connection(daemon)
    connection.send(post(b"/api/v1/events", ONE, version=b"1.0"))
    written = connection.take()
    assert written.startswith(b"HTTP/1.0 202 Accepted\r\n")
    assert connection.transport.disconnecting


def test_connection_close_is_honoured_and_announced() -> None:
    daemon = make_daemon()
    connection = Connection(daemon)
    connection.send(post(b"/api/v1/events", ONE, extra=b"Connection: close\r\n"))
    [(status, headers, _)] = responses(connection.take())
    assert (status, headers["connection"]) == (202, "close")
    assert connection.transport.disconnecting


def test_expect_100_continue_gets_the_interim_answer_before_the_body() -> None:
    daemon = make_daemon()
    connection = Connection(daemon)
    head, body = post(b"/api/v1/events", ONE, extra=b"Expect: 100-continue\r\n").split(
        b"\r\n\r\n", 1
    )
    connection.send(head + b"\r\n\r\n")
    assert connection.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    connection.send(body)
    [(status, _, _)] = responses(connection.take())
    assert status == 202


def test_a_declared_body_over_the_limit_is_413_before_any_body_byte() -> None:
    daemon = make_daemon({"limits": {"max_body_bytes": 1024}})
    connection = Connection(daemon)
    connection.send(
        b"POST /api/v1/events/batch HTTP/1.1\r\nHost: x\r\nX-Request-ID: mine-1\r\n"
        b"Content-Length: 5000\r\n\r\n"
    )
    [(status, headers, body)] = responses(connection.take())
    assert (status, body["code"]) == (413, "body_too_large")
    assert headers["x-request-id"] == "mine-1"
    assert connection.transport.disconnecting


def test_a_chunked_body_over_the_limit_is_413_while_streaming() -> None:
    daemon = make_daemon({"limits": {"max_body_bytes": 1024}})
    connection = Connection(daemon)
    connection.send(
        b"POST /api/v1/events/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    for _ in range(3):
        connection.send(b"200\r\n" + b"x" * 512 + b"\r\n")
    [(status, _, body)] = responses(connection.take())
    assert (status, body["code"]) == (413, "body_too_large")
    assert connection.transport.disconnecting


def test_a_chunked_body_within_the_limit_is_decoded() -> None:
    daemon = make_daemon()
    connection = Connection(daemon)
    connection.send(
        b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(ONE)
        + ONE
        + b"\r\n0\r\n\r\n"
    )
    [(status, _, _)] = responses(connection.take())
    assert status == 202


def test_unparseable_input_gets_twisteds_bare_400_and_a_close() -> None:
    daemon = make_daemon()
    connection = Connection(daemon)
    connection.send(b"POST /api/v1/events HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
    assert connection.take() == b"HTTP/1.1 400 Bad Request\r\n\r\n"
    assert connection.transport.disconnecting


def test_a_bad_request_after_a_good_one_is_answered_after_it() -> None:
    daemon = make_daemon()
    connection = Connection(daemon)
    connection.send(post(b"/api/v1/events", ONE) + b"\x00garbage\r\n\r\n")
    written = connection.take()
    assert written.startswith(b"HTTP/1.1 202 ")
    assert written.endswith(b"HTTP/1.1 400 Bad Request\r\n\r\n")


def test_a_full_queue_refuses_from_content_length_without_keeping_the_body() -> None:
    daemon = make_daemon(
        {"processing": {"buffer_size": 2}, "limits": {"max_batch_events": 2}}, start=False
    )
    connection = Connection(daemon)
    batch = b"[" + b",".join([ONE] * 2) + b"]"
    connection.send(post(b"/api/v1/events/batch", batch))
    assert responses(connection.take())[0][0] == 202  # the queue is now full
    head, body = post(b"/api/v1/events/batch", batch).split(b"\r\n\r\n", 1)
    connection.send(head + b"\r\n\r\n")
    message = connection.protocol._message
    assert message is not None and message.refusal is not None  # decided from the head
    connection.send(body)
    assert message.body == []  # the refused body was never kept
    [(status, headers, answer)] = responses(connection.take())
    assert (status, answer["code"], headers["retry-after"]) == (503, "queue_full", "1")
    assert not connection.transport.disconnecting


def test_the_access_log_and_the_http_metrics_see_fast_answers(
    captured_logs: list[dict[str, Any]],
) -> None:
    daemon = make_daemon()
    connection = Connection(daemon)
    connection.send(post(b"/api/v1/events?api_key=secret", ONE))
    [line] = [e for e in captured_logs if e.get("log_namespace") == "twisted_rta.access"]
    assert (line["method"], line["path"], line["status"]) == (
        "POST",
        "/api/v1/events?api_key=***",
        202,
    )
    metrics = daemon.http.get("/metrics").body.decode()
    assert 'rta_http_requests_total{route="/api/v1/events",status="202"} 1.0' in metrics


def test_the_connection_cap_counts_fast_lane_connections() -> None:
    daemon = make_daemon({"server": {"listen": ["tcp:0"], "max_connections": 1}})
    factory = daemon.service.listeners[0].factory
    first = Connection(daemon)
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001)) is None
    assert site_of(factory).connections.refused == 1
    first.protocol.connectionLost(None)
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40002)) is not None


def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() -> None:
    daemon = make_daemon({"server": {"listen": ["tcp:0"], "idle_timeout": "10s"}})
    connection = Connection(daemon)
    connection.send(post(b"/api/v1/events", ONE))
    daemon.reactor.advance(9.9)
    assert not connection.transport.disconnecting
    daemon.reactor.advance(0.2)
    assert connection.transport.disconnecting


def test_a_query_with_non_ascii_bytes_is_parsed_as_twisted_web_does() -> None:
    daemon = make_daemon(
        {"auth": {"keys": [{"name": "site", "key": "k" * 20, "scopes": ["ingest"]}]}}
    )
    connection = Connection(daemon)
    connection.send(post(b"/api/v1/events?api_key=%C3%A9%FF", ONE))
    [(status, _, body)] = responses(connection.take())
    assert (status, body["code"]) == (401, "unauthorized")


def test_an_error_in_a_handler_is_a_500_envelope_and_the_connection_lives_on(
    captured_logs: list[dict[str, Any]],
) -> None:
    daemon = make_daemon()
    connection = Connection(daemon)

    def broken(request: Any, body: bytes) -> bytes:
        raise RuntimeError("boom")

    connection.protocol._lane.handlers["single"] = broken
    connection.send(post(b"/api/v1/events", ONE) + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    answers = responses(connection.take())
    assert [
        (status, body["status"] if status == 200 else body["code"]) for status, _, body in answers
    ] == [
        (500, "internal_error"),
        (200, "healthy"),
    ]
    assert "boom" not in repr(answers)
    assert any("boom" in repr(event.get("log_failure")) for event in captured_logs)


def test_a_bug_in_the_lane_itself_ends_the_connection_instead_of_hanging_it() -> None:
    daemon = make_daemon()
    connection = Connection(daemon)

    def broken(message: Any) -> None:
        raise RuntimeError("bug")

    connection.protocol._answer_here = broken  # type: ignore[method-assign]
    connection.send(post(b"/api/v1/events", ONE))
    assert connection.transport.disconnecting or connection.transport.aborting  # type: ignore[attr-defined]


def test_every_fast_lane_answer_keeps_the_openapi_contract() -> None:
    key = "i" * 20
    daemon = make_daemon(
        {
            "auth": {
                "keys": [
                    {"name": "site", "key": key, "scopes": ["ingest"]},
                    {"name": "dash", "key": "r" * 20, "scopes": ["read"]},
                ]
            },
            "rate_limits": {"ingest": {"requests_per_second": 1, "requests_burst": 8}},
            "limits": {"max_body_bytes": 4096, "max_batch_events": 5},
            "processing": {"buffer_size": 5},
        },
        start=False,
    )
    bearer = b"Authorization: Bearer " + key.encode() + b"\r\n"
    cases = [
        (b"/api/v1/events", ONE, bearer),  # 202
        (b"/api/v1/events/batch", b"[" + ONE + b',{"type":""}]', bearer),  # 202, partial
        (b"/api/v1/events/batch", b'[{"type":""}]', bearer),  # 400 no valid events
        (b"/api/v1/events", b"{not json", bearer),  # 400
        (b"/api/v1/events", b"", bearer),  # 400 empty
        (b"/api/v1/events", ONE, b""),  # 401
        (b"/api/v1/events", ONE, b"Authorization: Bearer " + b"r" * 20 + b"\r\n"),  # 403
        (b"/api/v1/events/batch", b"[" + b",".join([ONE] * 6) + b"]", bearer),  # 413: too many
        (b"/api/v1/events/batch", b"[" + b",".join([ONE] * 4) + b"]", bearer),  # 503 full
        (b"/api/v1/events", gzip.compress(ONE), bearer + b"Content-Encoding: br\r\n"),  # 415
        (b"/api/v1/events", ONE, bearer + b"Content-Encoding: gzip\r\n"),  # 400 encoding
        # 413: 5000 bytes once inflated, over the 4096 limit
        (b"/api/v1/events", gzip.compress(b" " * 5000), bearer + b"Content-Encoding: gzip\r\n"),
    ]
    seen = set()
    for path, body, extra in cases + [(b"/api/v1/events", ONE, bearer)] * 4:  # then 429
        connection = Connection(daemon)
        connection.send(post(path, body, extra=extra))
        written = connection.take()
        head, payload = written.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, value = line.split(": ", 1)
            headers.setdefault(name.lower(), []).append(value)
        check_contract("POST", path.decode(), status, headers, payload)
        seen.add(status)
    assert seen == {202, 400, 401, 403, 413, 415, 429, 503}


def test_an_upgrade_request_is_answered_as_a_plain_one_and_http_goes_on() -> None:
    daemon = make_daemon()
    connection = Connection(daemon)
    upgrade = b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
    connection.send(
        b"GET /health HTTP/1.1\r\nHost: x\r\n" + upgrade + b"\r\n" + post(b"/api/v1/events", ONE)
    )
    connection.send(post(b"/api/v1/events", ONE))
    answers = responses(connection.take())
    assert [status for status, _, _ in answers] == [200, 202, 202]
    assert not connection.transport.disconnecting
    # With a body, llhttp would hand the body to the (absent) upgraded protocol: refused.
    connection.send(post(b"/api/v1/events", ONE, extra=upgrade))
    assert connection.take() == b"HTTP/1.1 400 Bad Request\r\n\r\n"
    assert connection.transport.disconnecting
