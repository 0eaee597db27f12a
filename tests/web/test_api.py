"""The /api/v1 routes over HTTP (StubTreq), through the real composition root."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.conftest import Daemon, make_daemon
from tests.helpers import NOW, raw_http

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def pageview(user: str = "u1", page: str = "/home", **extra: Any) -> dict[str, Any]:
    return {"type": "pageview", "user_id": user, "properties": {"page": page}, **extra}


def total_events(daemon: Daemon) -> int:
    return int(daemon.http.get("/api/v1/stats").json["data"]["total_events"])


def settle(daemon: Daemon) -> None:
    """Let the workers' cooperative loops run to completion on the memory reactor."""
    for _ in range(50):
        daemon.reactor.advance(0)


# -- single events --------------------------------------------------------------------


def test_single_event_accepted_with_generated_id(daemon: Daemon) -> None:
    reply = daemon.http.post("/api/v1/events", pageview())
    assert reply.status == 202
    assert reply.json["status"] == "accepted"
    assert reply.json["message"] == "event queued for processing"
    assert reply.json["data"]["type"] == "pageview"
    assert UUID4.match(reply.json["data"]["event_id"])
    settle(daemon)
    assert total_events(daemon) == 1


def test_single_event_keeps_client_id(daemon: Daemon) -> None:
    reply = daemon.http.post("/api/v1/events", {"type": "click", "id": "evt-42"})
    assert reply.json["data"] == {"event_id": "evt-42", "type": "click"}


def test_single_event_field_error_names_code_and_field(daemon: Daemon) -> None:
    reply = daemon.http.post("/api/v1/events", {"type": "   "})
    assert reply.status == 400
    assert reply.json["error"] is True
    assert reply.json["code"] == "empty_field"
    assert reply.json["field"] == "type"
    assert "type" in reply.json["message"]
    missing = daemon.http.post("/api/v1/events", {"user_id": "u"})
    assert (missing.status, missing.json["code"], missing.json["field"]) == (
        400,
        "missing_field",
        "type",
    )
    assert daemon.service.queue.depth == 0


def test_single_event_body_errors(daemon: Daemon) -> None:
    cases = {
        b"": "empty_body",
        b"{not json": "invalid_json",
        b'{"type":"click"} junk': "trailing_data",
        b"[1,2]": "invalid_body",
        b"null": "invalid_body",
    }
    for body, code in cases.items():
        reply = daemon.http.post("/api/v1/events", body)
        assert (reply.status, reply.json["code"]) == (400, code), body


def test_timestamps_out_of_bounds_are_rejected(daemon: Daemon) -> None:
    future = daemon.http.post("/api/v1/events", {"type": "x", "timestamp": (NOW + 600) * 1000})
    assert (future.status, future.json["code"]) == (400, "timestamp_in_future")
    old = daemon.http.post("/api/v1/events", {"type": "x", "timestamp": "0001-01-01T00:00:00Z"})
    assert (old.status, old.json["code"]) == (400, "timestamp_too_old")


def test_single_event_larger_than_event_limit_is_413() -> None:
    daemon = make_daemon({"limits": {"max_event_bytes": 100}})
    reply = daemon.http.post("/api/v1/events", pageview(page="/" + "x" * 200))
    assert (reply.status, reply.json["code"]) == (413, "event_too_large")


def test_queue_full_single_is_503_with_retry_after() -> None:
    # Not started: no worker takes from the queue, so it stays full.
    daemon = make_daemon(
        {"processing": {"buffer_size": 1}, "limits": {"max_batch_events": 1}}, start=False
    )
    assert daemon.http.post("/api/v1/events", {"type": "a"}).status == 202
    reply = daemon.http.post("/api/v1/events", {"type": "b"})
    assert reply.status == 503
    assert reply.json["code"] == "queue_full"
    assert reply.header("Retry-After") == "1"
    assert daemon.service.queue.depth == 1


# -- batches ----------------------------------------------------------------------------


def test_batch_partial_acceptance_with_real_indexes(daemon: Daemon) -> None:
    body = [pageview(), {"user_id": "no type"}, {"type": "click", "id": "c1"}, 7]
    reply = daemon.http.post("/api/v1/events/batch", body)
    assert reply.status == 202
    data = reply.json["data"]
    assert (data["accepted"], data["rejected"], data["total"]) == (2, 2, 4)
    assert data["event_ids"][1] == "c1"
    assert [(e["index"], e["code"]) for e in data["errors"]] == [
        (1, "missing_field"),
        (3, "invalid_type"),
    ]
    assert reply.json["message"] == "batch processed: 4 events"
    settle(daemon)
    assert total_events(daemon) == 2


def test_batch_object_form(daemon: Daemon) -> None:
    reply = daemon.http.post("/api/v1/events/batch", {"events": [pageview(), pageview()]})
    assert reply.status == 202
    assert reply.json["data"]["accepted"] == 2


def test_batch_with_no_valid_event_is_400_with_errors(daemon: Daemon) -> None:
    reply = daemon.http.post("/api/v1/events/batch", [{"type": ""}, {"type": 5}])
    assert reply.status == 400
    assert reply.json["code"] == "no_valid_events"
    assert [e["index"] for e in reply.json["errors"]] == [0, 1]
    assert daemon.service.queue.depth == 0


def test_empty_batch(daemon: Daemon) -> None:
    for body in ([], {"events": []}, None):
        reply = daemon.http.post("/api/v1/events/batch", json.dumps(body))
        assert (reply.status, reply.json["code"]) == (400, "empty_batch"), body


def test_batch_over_event_limit_is_413() -> None:
    daemon = make_daemon({"limits": {"max_batch_events": 3}})
    reply = daemon.http.post("/api/v1/events/batch", [{"type": "a"}] * 4)
    assert (reply.status, reply.json["code"]) == (413, "batch_too_large")
    assert daemon.http.post("/api/v1/events/batch", [{"type": "a"}] * 3).status == 202


def test_batch_that_does_not_fit_is_refused_whole() -> None:
    daemon = make_daemon(
        {"processing": {"buffer_size": 5}, "limits": {"max_batch_events": 5}}, start=False
    )
    assert daemon.http.post("/api/v1/events/batch", [{"type": "a"}] * 3).status == 202
    reply = daemon.http.post("/api/v1/events/batch", [{"type": "a"}] * 3)
    assert reply.status == 503
    assert reply.json["code"] == "queue_full"
    assert reply.header("Retry-After") == "1"
    assert daemon.service.queue.depth == 3  # nothing of the refused batch went in


def test_ingest_after_shutdown_began_is_503_shutting_down(daemon: Daemon) -> None:
    daemon.service.stopService()
    reply = daemon.http.post("/api/v1/events", {"type": "late"})
    assert (reply.status, reply.json["code"]) == (503, "shutting_down")


# -- body limit before buffering ------------------------------------------------------


def test_declared_body_over_limit_gets_413_before_the_body_arrives() -> None:
    daemon = make_daemon({"limits": {"max_body_bytes": 64}})
    site = daemon.service.listeners[0].factory
    head = b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
    written, closed = raw_http(site, head)  # no body bytes sent at all
    assert written.startswith(b"HTTP/1.1 413 ")
    assert closed
    payload = json.loads(written.split(b"\r\n\r\n", 1)[1])
    assert payload["code"] == "body_too_large"
    assert payload["limit"] == 64
    assert daemon.service.queue.depth == 0


def test_chunked_body_over_limit_gets_413_while_streaming() -> None:
    daemon = make_daemon({"limits": {"max_body_bytes": 64}})
    site = daemon.service.listeners[0].factory
    chunk = b"x" * 50
    request = (
        b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"32\r\n"
        + chunk
        + b"\r\n"
        + b"32\r\n"
        + chunk
        + b"\r\n"
    )
    written, closed = raw_http(site, request)
    assert written.startswith(b"HTTP/1.1 413 ")
    assert closed


def test_body_within_limit_goes_through_the_real_site() -> None:
    daemon = make_daemon({"limits": {"max_body_bytes": 64}})
    site = daemon.service.listeners[0].factory
    body = b'{"type":"click"}'
    request = (
        b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    written, _ = raw_http(site, request)
    assert written.startswith(b"HTTP/1.1 202 ")


# -- queries ----------------------------------------------------------------------------


def test_metrics_empty(daemon: Daemon) -> None:
    reply = daemon.http.get("/api/v1/metrics")
    assert reply.json == {"status": "success", "data": {}, "message": "no metrics yet"}


def test_metrics_after_ingest(daemon: Daemon) -> None:
    daemon.http.post(
        "/api/v1/events/batch",
        [
            pageview("u1", "/home"),
            pageview("u2", "/home"),
            pageview("u1", "/pricing"),
            {"type": "click", "user_id": "u1", "properties": {"element": "buy"}},
            {"type": "purchase", "user_id": "u2", "properties": {"amount": 19.5}},
            {"type": "purchase", "user_id": "u3", "properties": {"amount": 30}},
        ],
    )
    settle(daemon)
    reply = daemon.http.get("/api/v1/metrics")
    data = reply.json["data"]
    assert reply.json["message"] == f"retrieved {len(data)} metrics"
    assert data["total_events"]["value"] == 6
    assert data["total_events"]["type"] == "counter"
    assert data["pageviews"]["count"] == 3
    assert data["page_views:/home"]["value"] == 2
    assert data["clicks:buy"]["value"] == 1
    assert data["revenue"]["value"] == 49.5
    assert data["unique_users"] == {**data["unique_users"], "type": "set", "value": 3, "count": 3}
    histogram = data["revenue_histogram"]
    assert histogram["type"] == "histogram"
    assert (histogram["count"], histogram["sum"], histogram["min"], histogram["max"]) == (
        2,
        49.5,
        19.5,
        30,
    )
    assert histogram["mean"] == 24.75
    assert {"p50", "p90", "p95", "p99"} <= set(histogram)
    assert "values" not in histogram
    assert list(data["pageviews"])[:5] == ["name", "type", "value", "count", "timestamp"]
    assert data["pageviews"]["timestamp"] == "2026-11-27T03:00:00.000Z"


def test_metrics_prefix_filter(daemon: Daemon) -> None:
    daemon.http.post("/api/v1/events/batch", [pageview(page="/a"), pageview(page="/b")])
    settle(daemon)
    data = daemon.http.get("/api/v1/metrics?prefix=page_views:").json["data"]
    assert sorted(data) == ["page_views:/a", "page_views:/b"]


def test_metric_by_name_including_slashes(daemon: Daemon) -> None:
    daemon.http.post("/api/v1/events", pageview(page="/home/about"))
    settle(daemon)
    for path in (
        "/api/v1/metrics/page_views:/home/about",
        "/api/v1/metrics/page_views%3A%2Fhome%2Fabout",
    ):
        reply = daemon.http.get(path)
        assert reply.status == 200, path
        assert reply.json["data"]["name"] == "page_views:/home/about"
        assert reply.json["data"]["value"] == 1
        assert reply.json["message"] == "metric 'page_views:/home/about' found"


def test_unknown_metric_is_404(daemon: Daemon) -> None:
    reply = daemon.http.get("/api/v1/metrics/nope")
    assert reply.status == 404
    assert reply.json["code"] == "metric_not_found"


def test_stats_reports_real_unique_estimates(daemon: Daemon) -> None:
    daemon.http.post(
        "/api/v1/events/batch",
        [{"type": "x", "user_id": f"u{i}", "session_id": f"s{i % 2}"} for i in range(10)],
    )
    settle(daemon)
    daemon.reactor.advance(42.0)
    data = daemon.http.get("/api/v1/stats").json["data"]
    assert data["total_events"] == 10
    assert data["unique_users"] == 10
    assert data["unique_sessions"] == 2
    assert data["active_windows"] == 1
    assert data["late_events"] == 0
    assert data["queue_depth"] == 0
    assert data["uptime_seconds"] == 42.0
    assert data["metrics_count"] == len(daemon.http.get("/api/v1/metrics").json["data"])


def test_windows_lists_open_and_closed(daemon: Daemon) -> None:
    minute = NOW - NOW % 60
    daemon.http.post(
        "/api/v1/events/batch",
        [
            {"type": "x", "user_id": "a", "timestamp": (minute - 60) * 1000},
            {"type": "x", "user_id": "b", "timestamp": minute * 1000},
        ],
    )
    settle(daemon)
    daemon.reactor.advance(10.0)  # flush ticks at +5s and +10s: the earlier minute closes
    windows = [
        w
        for w in daemon.http.get("/api/v1/windows").json["data"]["windows"]
        if w["resolution_seconds"] == 60
    ]
    assert [(w["start"], w["closed"]) for w in windows] == [
        ("2026-11-27T02:59:00.000Z", True),
        ("2026-11-27T03:00:00.000Z", False),
    ]
    assert windows[0]["metrics"]["total_events"]["value"] == 1
    assert windows[0]["end"] == "2026-11-27T03:00:00.000Z"
    assert windows[0]["resolution_seconds"] == 60
