"""POST /v1/*: Segment's HTTP Tracking API through the real composition root: the calls and
their mapping, write keys (Basic auth, writeKey in the body), clock skew, batches, limits."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import Daemon, make_daemon
from tests.helpers import NOW, Reply

INGEST_KEY = "segment-write-key-0123456789"
READ_KEY = "segment-read-key-0123456789"
KEYS: dict[str, Any] = {
    "auth": {
        "keys": [
            {"name": "app", "key": INGEST_KEY, "scopes": ["ingest"]},
            {"name": "grafana", "key": READ_KEY, "scopes": ["read"]},
        ]
    }
}


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def settle(daemon: Daemon) -> None:
    for _ in range(50):
        daemon.reactor.advance(0)


def send(daemon: Daemon, call: str, body: Any, headers: dict[str, str] | None = None) -> Reply:
    raw = body if isinstance(body, bytes) else json.dumps(body)
    reply = daemon.http.post(
        f"/v1/{call}",
        raw,
        headers={"Content-Type": "application/json", **basic(INGEST_KEY), **(headers or {})},
    )
    settle(daemon)
    return reply


def value(daemon: Daemon, name: str) -> Any:
    reply = daemon.http.get(f"/api/v1/metrics/{name}", headers={"X-API-Key": READ_KEY})
    return reply.json["data"]["value"] if reply.status == 200 else None


@pytest.fixture
def daemon() -> Daemon:
    return make_daemon(KEYS)


def test_every_call_is_answered_as_segment_does_and_counted(daemon: Daemon) -> None:
    calls = {
        "track": {"event": "Signed Up", "userId": "u1", "properties": {"plan": "pro"}},
        "page": {"anonymousId": "a1", "name": "Pricing", "properties": {"path": "/pricing"}},
        "screen": {"userId": "u1", "name": "Home"},
        "identify": {"userId": "u1", "traits": {"email": "x@example.com"}},
        "group": {"userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}},
        "alias": {"userId": "u1", "previousId": "a1"},
    }
    for call, body in calls.items():
        reply = send(daemon, call, body)
        assert (reply.status, reply.json) == (200, {"success": True}), call
    assert value(daemon, "events_by_type:Signed Up") == 1
    assert value(daemon, "pageviews") == 1
    assert value(daemon, "page_views:/pricing") == 1
    for kind in ("screen", "identify", "group", "alias"):
        assert value(daemon, f"events_by_type:{kind}") == 1, kind


def test_page_takes_the_path_of_the_context_url_when_properties_have_none(
    daemon: Daemon,
) -> None:
    body = {"userId": "u1", "context": {"page": {"url": "https://example.com/docs?x=1"}}}
    assert send(daemon, "page", body).status == 200
    assert value(daemon, "page_views:/docs") == 1


def test_batch_and_its_aliases_take_each_message(daemon: Daemon) -> None:
    for path in ("batch", "import", "b"):
        body = {
            "batch": [
                {"type": "track", "event": "Clicked", "userId": "u1"},
                {"type": "page", "anonymousId": "a1", "properties": {"url": "https://e.com/a"}},
            ],
            "sentAt": iso(NOW),
        }
        reply = send(daemon, path, body)
        assert (reply.status, reply.json) == (200, {"success": True}), path
    assert value(daemon, "events_by_type:Clicked") == 3
    assert value(daemon, "page_views:/a") == 3


def test_a_batch_lists_its_invalid_messages_and_takes_the_rest(daemon: Daemon) -> None:
    body = {
        "batch": [
            {"type": "track", "userId": "u1"},
            {"type": "track", "event": "Ok", "userId": "u"},
        ]
    }
    reply = send(daemon, "batch", body)
    assert reply.status == 200
    assert reply.json["success"] is True
    [error] = reply.json["errors"]
    assert (error["index"], error["code"], error["field"]) == (0, "missing_field", "event")
    assert value(daemon, "events_by_type:Ok") == 1


def test_a_batch_with_no_valid_message_is_a_400(daemon: Daemon) -> None:
    reply = send(daemon, "batch", {"batch": [{"type": "nope", "userId": "u1"}]})
    assert (reply.status, reply.json["code"]) == (400, "no_valid_events")
    assert reply.json["errors"][0]["field"] == "type"


def test_an_invalid_call_is_a_400_naming_the_field(daemon: Daemon) -> None:
    reply = send(daemon, "track", {"event": "x"})
    assert (reply.status, reply.json["code"], reply.json["field"]) == (
        400,
        "missing_field",
        "userId",
    )
    reply = send(daemon, "track", b"{not json")
    assert (reply.status, reply.json["code"]) == (400, "invalid_json")


def test_the_write_key_may_come_in_the_body(daemon: Daemon) -> None:
    body = {"event": "Body Key", "userId": "u1", "writeKey": INGEST_KEY}
    reply = daemon.http.post("/v1/track", json.dumps(body), headers={"Content-Type": "text/plain"})
    settle(daemon)
    assert (reply.status, reply.json) == (200, {"success": True})
    assert value(daemon, "events_by_type:Body Key") == 1


@pytest.mark.parametrize(
    ("key", "status", "code"),
    [(None, 401, "unauthorized"), ("wrong", 401, "unauthorized"), (READ_KEY, 403, "forbidden")],
)
def test_a_body_key_is_refused_as_the_edge_refuses_a_header_key(
    daemon: Daemon, key: str | None, status: int, code: str
) -> None:
    body = {"event": "x", "userId": "u1", **({"writeKey": key} if key else {})}
    reply = daemon.http.post("/v1/track", json.dumps(body))
    assert (reply.status, reply.json["code"]) == (status, code)
    if status == 401:
        assert reply.header("WWW-Authenticate") == 'Bearer realm="rta"'
    header = daemon.http.post("/v1/track", json.dumps(body), headers=basic(key or ""))
    assert (header.status, header.json["code"]) == (status, code)


def test_an_unreadable_body_without_a_key_is_a_401_not_a_400(daemon: Daemon) -> None:
    reply = daemon.http.post("/v1/track", "{not json")
    assert (reply.status, reply.json["code"]) == (401, "unauthorized")


def test_basic_auth_works_on_our_own_routes_too(daemon: Daemon) -> None:
    reply = daemon.http.post(
        "/api/v1/events", json.dumps({"type": "basic"}), headers=basic(INGEST_KEY)
    )
    assert reply.status == 202
    assert daemon.http.get("/api/v1/stats", headers=basic(READ_KEY)).status == 200


def test_without_keys_configured_keys_are_ignored() -> None:
    daemon = make_daemon()
    body = {"event": "Open", "userId": "u1", "writeKey": "anything"}
    reply = daemon.http.post("/v1/track", json.dumps(body), headers=basic("whatever"))
    settle(daemon)
    assert reply.status == 200
    assert daemon.http.get("/api/v1/metrics/events_by_type:Open").json["data"]["value"] == 1


def test_a_client_clock_an_hour_fast_is_corrected_by_sent_at(daemon: Daemon) -> None:
    fast = NOW + 3600
    corrected = send(
        daemon,
        "track",
        {"event": "Skewed", "userId": "u", "timestamp": iso(fast), "sentAt": iso(fast)},
    )
    assert corrected.status == 200
    uncorrected = send(daemon, "track", {"event": "Skewed", "userId": "u", "timestamp": iso(fast)})
    assert (uncorrected.status, uncorrected.json["code"]) == (400, "timestamp_in_future")
    assert uncorrected.json["field"] == "timestamp"
    assert value(daemon, "events_by_type:Skewed") == 1


def test_segment_size_limits_answer_413(daemon: Daemon) -> None:
    big = {"event": "Big", "userId": "u", "properties": {"s": "x" * 40_000}}
    reply = send(daemon, "track", big)
    assert (reply.status, reply.json["code"]) == (413, "event_too_large")
    many = {
        "batch": [{"type": "track", "event": "E", "userId": "u", "properties": {"s": "x" * 30_000}}]
        * 18
    }
    reply = send(daemon, "batch", many)
    assert (reply.status, reply.json["code"]) == (413, "body_too_large")


def test_a_gzip_body_is_taken(daemon: Daemon) -> None:
    body = gzip.compress(json.dumps({"event": "Zipped", "userId": "u"}).encode())
    reply = send(daemon, "track", body, headers={"Content-Encoding": "gzip"})
    assert reply.status == 200
    assert value(daemon, "events_by_type:Zipped") == 1


def test_analytics_next_one_letter_paths_are_the_calls(daemon: Daemon) -> None:
    bodies = {
        "t": {"event": "Short", "userId": "u"},
        "p": {"userId": "u", "properties": {"path": "/short"}},
        "s": {"userId": "u", "name": "Home"},
        "i": {"userId": "u"},
        "g": {"userId": "u", "groupId": "g"},
        "a": {"userId": "u", "previousId": "p"},
    }
    for path, body in bodies.items():
        assert send(daemon, path, body).json == {"success": True}, path
    assert value(daemon, "events_by_type:Short") == 1
    assert value(daemon, "page_views:/short") == 1
    for kind in ("screen", "identify", "group", "alias"):
        assert value(daemon, f"events_by_type:{kind}") == 1, kind
