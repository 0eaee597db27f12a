"""HTTP basics shared by every route: envelopes, 404/405, CORS, request ids, health, ready."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import Daemon, make_daemon
from tests.helpers import raw_http, result_of, site_of
from twisted_rta.query.service import QueryService

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_health(daemon: Daemon) -> None:
    reply = daemon.http.get("/health")
    assert reply.status == 200
    assert reply.json == {"status": "healthy", "time": "2026-11-27T03:00:00.000Z"}
    assert reply.header("Content-Type") == "application/json; charset=utf-8"
    assert reply.header("X-Content-Type-Options") == "nosniff"
    assert reply.header("Cache-Control") == "no-store"


def detail(reply: Any, check: str) -> str:
    return str(reply.json["checks"][check]["detail"])


def failing(reply: Any) -> set[str]:
    return {name for name, check in reply.json["checks"].items() if check["status"] != "ok"}


def test_ready_checks_the_running_parts_with_figures(daemon: Daemon) -> None:
    reply = daemon.http.get("/ready")
    assert reply.status == 200
    assert reply.json["status"] == "ready"
    assert failing(reply) == set()
    assert set(reply.json["checks"]) == {
        "shutdown",
        "listening",
        "workers",
        "queue",
        "load",
        "flush",
        "store",
        "journal",
    }
    assert detail(reply, "workers") == "2 of 2 workers running"
    assert detail(reply, "journal").startswith("off: a crash loses")
    assert detail(reply, "listening") == "1 of 1 listeners bound"
    assert detail(reply, "queue") == "0 of 100000 events queued (0%; limit 90%)"
    assert detail(reply, "store") == "open; 0 windows waiting"


def test_not_ready_before_start() -> None:
    daemon = make_daemon(start=False)
    reply = daemon.http.get("/ready")
    assert reply.status == 503
    assert reply.json["status"] == "not_ready"
    assert detail(reply, "listening").endswith("not listening on tcp:0:interface=127.0.0.1")
    assert detail(reply, "workers") == "0 of 2 workers running"
    assert detail(reply, "flush") == "flush loop not running"
    assert failing(reply) == {"listening", "workers", "flush", "store"}


def test_not_ready_when_the_flush_loop_stops(daemon: Daemon) -> None:
    daemon.service.flush.stopService()
    reply = daemon.http.get("/ready")
    assert failing(reply) == {"flush"}
    assert detail(reply, "flush") == "flush loop not running"


def test_not_ready_once_shutdown_begins(daemon: Daemon) -> None:
    daemon.service.stopService()
    reply = daemon.http.get("/ready")
    assert reply.status == 503
    assert "shutdown" in failing(reply)
    assert detail(reply, "shutdown") == "shutting down"


def test_stale_flush_tick_makes_not_ready(daemon: Daemon) -> None:
    daemon.reactor.advance(5.0)  # one tick
    assert daemon.http.get("/ready").status == 200
    daemon.service.flush.periodic.last_tick_at = daemon.reactor.seconds() - 11.0
    reply = daemon.http.get("/ready")
    assert reply.status == 503
    assert failing(reply) == {"flush"}
    assert detail(reply, "flush") == "last tick 11.0s ago (limit 10s)"


def test_not_ready_when_the_queue_is_over_ninety_percent() -> None:
    daemon = make_daemon(
        {"processing": {"buffer_size": 10}, "limits": {"max_batch_events": 10}}, start=False
    )
    daemon.service.privilegedStartService()
    for child in daemon.service:
        if child is not daemon.service.workers:
            child.startService()  # everything but the workers, so the queue fills
    daemon.http.post("/api/v1/events/batch", [{"type": "x"}] * 9)
    assert daemon.http.get("/ready").json["checks"]["queue"]["status"] == "ok"
    daemon.http.post("/api/v1/events", {"type": "x"})
    reply = daemon.http.get("/ready")
    assert "queue" in failing(reply)
    assert detail(reply, "queue") == "10 of 10 events queued (100%; limit 90%)"


def test_not_ready_when_flushing_and_aggregating_take_most_of_the_interval(
    daemon: Daemon,
) -> None:
    daemon.service.workers.busy_seconds += 4.0  # 4s of a 5s interval spent aggregating
    daemon.reactor.advance(5.0)
    reply = daemon.http.get("/ready")
    assert failing(reply) == {"load"}
    assert detail(reply, "load").startswith("80% of the last flush interval")
    daemon.reactor.advance(5.0)  # an idle interval
    assert daemon.http.get("/ready").status == 200


def test_unknown_route_is_json_404(daemon: Daemon) -> None:
    for path in ("/nope", "/api/v1/nope", "/api/v2/events"):
        reply = daemon.http.get(path)
        assert reply.status == 404, path
        assert reply.json == {"error": True, "code": "not_found", "message": f"no route for {path}"}
        assert reply.header("X-Request-ID") is not None


def test_wrong_method_is_json_405_with_allow(daemon: Daemon) -> None:
    reply = daemon.http.get("/api/v1/events")
    assert reply.status == 405
    assert reply.header("Allow") == "POST"
    assert reply.json["code"] == "method_not_allowed"
    assert reply.json["allowed"] == ["POST"]
    reply = daemon.http.post("/health", {})
    assert reply.status == 405
    assert reply.header("Allow") == "GET, HEAD"


def test_preflight_options_answers_204_with_cors(daemon: Daemon) -> None:
    reply = daemon.http.request(
        "OPTIONS", "/api/v1/events", headers={"Origin": "https://a.example"}
    )
    assert reply.status == 204
    assert reply.body == b""
    assert reply.header("Access-Control-Allow-Origin") == "*"
    assert "POST" in (reply.header("Access-Control-Allow-Methods") or "")
    assert "Content-Type" in (reply.header("Access-Control-Allow-Headers") or "")
    assert reply.header("Access-Control-Max-Age") == "86400"


def test_cors_restricted_to_configured_origins() -> None:
    daemon = make_daemon({"cors": {"query": {"allowed_origins": ["https://shop.example"]}}})
    allowed = daemon.http.get("/health", headers={"Origin": "https://shop.example"})
    assert allowed.header("Access-Control-Allow-Origin") == "https://shop.example"
    assert allowed.header("Vary") == "Origin"
    other = daemon.http.get("/health", headers={"Origin": "https://evil.example"})
    assert other.header("Access-Control-Allow-Origin") is None
    preflight = daemon.http.request(
        "OPTIONS", "/api/v1/stats", headers={"Origin": "https://evil.example"}
    )
    assert (preflight.status, preflight.json["code"]) == (403, "origin_not_allowed")
    assert preflight.header("Access-Control-Allow-Methods") is None


def test_no_cors_headers_without_origin(daemon: Daemon) -> None:
    assert daemon.http.get("/health").header("Access-Control-Allow-Origin") is None


def test_request_id_kept_when_valid(daemon: Daemon) -> None:
    reply = daemon.http.get("/health", headers={"X-Request-ID": "abc.DEF_123-x"})
    assert reply.header("X-Request-ID") == "abc.DEF_123-x"


def test_request_id_replaced_when_invalid_or_missing(daemon: Daemon) -> None:
    for bad in ("has space", "x" * 129, "semi;colon", ""):
        reply = daemon.http.get("/health", headers={"X-Request-ID": bad})
        assert UUID4.match(reply.header("X-Request-ID") or ""), bad
    generated = {daemon.http.get("/health").header("X-Request-ID") for _ in range(3)}
    assert len(generated) == 3


def test_request_id_on_errors_and_preflight(daemon: Daemon) -> None:
    headers = {"X-Request-ID": "trace-1"}
    assert daemon.http.get("/nope", headers=headers).header("X-Request-ID") == "trace-1"
    options = daemon.http.request("OPTIONS", "/x", headers=headers)
    assert options.header("X-Request-ID") == "trace-1"


def test_access_log_line(daemon: Daemon, captured_logs: list[dict[str, Any]]) -> None:
    site = daemon.service.listeners[0].factory
    raw_http(site, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: req-7\r\n\r\n")
    lines = [e for e in captured_logs if e.get("log_namespace") == "twisted_rta.access"]
    assert len(lines) == 1
    line = lines[0]
    assert (line["method"], line["path"], line["status"]) == ("GET", "/health", 200)
    assert line["request_id"] == "req-7"
    assert line["bytes"] > 0
    assert line["duration_ms"] >= 0


def test_access_log_can_be_turned_off(captured_logs: list[dict[str, Any]]) -> None:
    daemon = make_daemon({"logging": {"access_log": False}})
    raw_http(daemon.service.listeners[0].factory, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not [e for e in captured_logs if e.get("log_namespace") == "twisted_rta.access"]


def test_unexpected_handler_error_is_a_500_envelope_without_traceback(
    daemon: Daemon, captured_logs: list[dict[str, Any]]
) -> None:
    def explode(self: object, prefix: object = None) -> object:
        raise RuntimeError("secret internals")

    original = QueryService.metrics
    QueryService.metrics = explode  # type: ignore[method-assign,assignment]
    try:
        reply = daemon.http.get("/api/v1/metrics")
    finally:
        QueryService.metrics = original  # type: ignore[method-assign]
    assert reply.status == 500
    assert reply.json == {
        "error": True,
        "code": "internal_error",
        "message": "internal server error",
    }
    assert b"secret" not in reply.body
    assert any("secret internals" in str(e.get("log_failure")) for e in captured_logs)


def test_stop_listening_is_observable(daemon: Daemon) -> None:
    result_of(daemon.service.listeners[0].stopService())
    assert "not listening on" in detail(daemon.http.get("/ready"), "listening")


def test_undecodable_path_is_a_json_400() -> None:
    from tests.helpers import HttpClient

    daemon = make_daemon()
    http = HttpClient(site_of(daemon.service.listeners[0].factory).resource, contract=False)
    reply = http.get("/api/v1/metrics/%ff")
    assert (reply.status, reply.json["code"]) == (400, "invalid_path")


def test_preflight_allow_lists_the_route_class_methods(daemon: Daemon) -> None:
    ingest = daemon.http.request("OPTIONS", "/api/v1/events", headers={"Origin": "https://a.b"})
    assert ingest.header("Allow") == "POST, OPTIONS"
    read = daemon.http.request("OPTIONS", "/health")
    assert read.header("Allow") == "GET, HEAD, OPTIONS"


def status_line(written: bytes) -> bytes:
    return written.split(b"\r\n", 1)[0]


def test_status_lines_carry_the_standard_reason_phrases() -> None:
    daemon = make_daemon(
        {
            "auth": {"keys": [{"name": "r", "key": "read-key-0123456789ab", "scopes": ["read"]}]},
            "rate_limits": {"ingest": {"requests_per_second": 1, "requests_burst": 1}},
        }
    )
    site = daemon.service.listeners[0].factory
    key = b"Authorization: Bearer read-key-0123456789ab\r\n"

    def head(request: bytes) -> bytes:
        written, _ = raw_http(site, request)
        return status_line(written)

    post = b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    assert head(post) == b"HTTP/1.1 401 Unauthorized"
    assert head(post.replace(b"Host: x\r\n", b"Host: x\r\n" + key)) == b"HTTP/1.1 403 Forbidden"
    assert head(post.replace(b"/events ", b"/events?api_key=x ")) == b"HTTP/1.1 401 Unauthorized"
    assert head(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") == b"HTTP/1.1 200 OK"
    assert head(b"OPTIONS /health HTTP/1.1\r\nHost: x\r\n\r\n") == b"HTTP/1.1 204 No Content"
    assert head(b"GET /nope HTTP/1.1\r\nHost: x\r\n" + key + b"\r\n") == b"HTTP/1.1 404 Not Found"
    assert head(b"DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n") == b"HTTP/1.1 405 Method Not Allowed"

    open_daemon = make_daemon(
        {"rate_limits": {"ingest": {"requests_per_second": 1, "requests_burst": 1}}}
    )
    site = open_daemon.service.listeners[0].factory
    body = b'{"type":"x"}'
    one = b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n" + body
    assert head(one) == b"HTTP/1.1 202 Accepted"
    assert head(one) == b"HTTP/1.1 429 Too Many Requests"
    open_daemon.reactor.advance(1.0)
    open_daemon.service.queue.close()
    assert head(one) == b"HTTP/1.1 503 Service Unavailable"
    too_big = b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"
    assert head(too_big) == b"HTTP/1.1 413 Content Too Large"
