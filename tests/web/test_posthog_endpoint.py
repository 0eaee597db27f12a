"""PostHog's capture routes through the real composition root: every path, the body shapes,
project keys, gzip-js, clock skew, historical imports and de-duplication by uuid."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import Daemon, make_daemon
from tests.helpers import NOW, Reply

INGEST_KEY = "phc_ingest_key_0123456789"
ADMIN_KEY = "phc_admin_key_0123456789"
READ_KEY = "posthog-read-key-0123456789"
KEYS: dict[str, Any] = {
    "auth": {
        "keys": [
            {"name": "app", "key": INGEST_KEY, "scopes": ["ingest"]},
            {"name": "importer", "key": ADMIN_KEY, "scopes": ["admin"]},
            {"name": "grafana", "key": READ_KEY, "scopes": ["read"]},
        ]
    }
}
PATHS = ("/capture", "/capture/", "/batch", "/batch/", "/e", "/e/", "/i/v0/e", "/i/v0/e/")
TEN_DAYS_AGO = NOW - 10 * 86400


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def settle(daemon: Daemon) -> None:
    for _ in range(50):
        daemon.reactor.advance(0)


def send(
    daemon: Daemon, body: Any, path: str = "/batch/", headers: dict[str, str] | None = None
) -> Reply:
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    reply = daemon.http.post(
        path, raw, headers={"Content-Type": "application/json", **(headers or {})}
    )
    settle(daemon)
    return reply


def value(daemon: Daemon, name: str) -> Any:
    reply = daemon.http.get(f"/api/v1/metrics/{quote(name)}", headers={"X-API-Key": READ_KEY})
    return reply.json["data"]["value"] if reply.status == 200 else None


def event(name: str = "signed_up", **fields: Any) -> dict[str, Any]:
    return {"event": name, "distinct_id": "user-1", "properties": {}, **fields}


@pytest.fixture
def daemon() -> Daemon:
    return make_daemon(KEYS)


def test_every_capture_path_answers_as_posthog_does_and_counts(daemon: Daemon) -> None:
    for path in PATHS:
        reply = send(daemon, {"api_key": INGEST_KEY, **event("opened")}, path)
        assert (reply.status, reply.json) == (200, {"status": 1}), path
    assert value(daemon, "events_by_type:opened") == len(PATHS)


def test_the_body_shapes_posthog_sdks_send(daemon: Daemon) -> None:
    # posthog-python: a batch object with the key and sent_at
    batch = {"api_key": INGEST_KEY, "batch": [event(), event()], "sent_at": iso(NOW)}
    assert send(daemon, batch).json == {"status": 1}
    # posthog-js: an array whose events carry the key in properties.token
    page = {
        "event": "$pageview",
        "properties": {
            "token": INGEST_KEY,
            "distinct_id": "anon-7",
            "$current_url": "https://shop.example/cart?x=1",
            "$session_id": "s-1",
        },
    }
    assert send(daemon, [page], "/e/").json == {"status": 1}
    assert value(daemon, "events_by_type:signed_up") == 2
    assert value(daemon, "pageviews") == 1
    assert value(daemon, "page_views:/cart") == 1


def test_gzip_js_and_base64_forms_are_read(daemon: Daemon) -> None:
    body = gzip.compress(json.dumps([{**event("zipped"), "api_key": INGEST_KEY}]).encode())
    reply = send(
        daemon, body, "/e/?compression=gzip-js&ver=1.200.0&_=1", {"Content-Type": "text/plain"}
    )
    assert reply.json == {"status": 1}
    data = base64.b64encode(json.dumps({**event("legacy"), "api_key": INGEST_KEY}).encode())
    form = "data=" + quote(data.decode())
    reply = send(
        daemon,
        form,
        "/e/?compression=base64",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.json == {"status": 1}
    # posthog-js 1.449 gzips its /e/ bodies and says so only by the magic bytes.
    sniffed = gzip.compress(
        json.dumps({"api_key": INGEST_KEY, "batch": [event("zipped")]}).encode()
    )
    assert send(daemon, sniffed, "/e/", {"Content-Type": "text/plain"}).json == {"status": 1}
    assert value(daemon, "events_by_type:zipped") == 2
    assert value(daemon, "events_by_type:legacy") == 1


@pytest.mark.parametrize(
    ("key", "status", "code"),
    [(None, 401, "unauthorized"), ("wrong", 401, "unauthorized"), (READ_KEY, 403, "forbidden")],
)
def test_a_project_key_is_checked_as_the_edge_checks_a_header_key(
    daemon: Daemon, key: str | None, status: int, code: str
) -> None:
    body = {**({"api_key": key} if key else {}), "batch": [event()]}
    reply = send(daemon, body)
    assert (reply.status, reply.json["code"]) == (status, code)
    unreadable = send(daemon, "{not json")
    assert (unreadable.status, unreadable.json["code"]) == (401, "unauthorized")
    header = send(daemon, {"batch": [event()]}, headers={"X-API-Key": INGEST_KEY})
    assert header.status == 200


def test_errors_name_the_field_as_sent(daemon: Daemon) -> None:
    single = send(daemon, {"api_key": INGEST_KEY, "event": "x"}, "/capture/")
    assert (single.status, single.json["code"], single.json["field"]) == (
        400,
        "missing_field",
        "distinct_id",
    )
    batch = send(daemon, {"api_key": INGEST_KEY, "batch": [{"distinct_id": "u"}, event("ok")]})
    assert batch.status == 200
    [error] = batch.json["errors"]
    assert (error["index"], error["field"]) == (0, "event")
    none = send(daemon, {"api_key": INGEST_KEY, "batch": [{"distinct_id": "u"}]})
    assert (none.status, none.json["code"]) == (400, "no_valid_events")


def test_a_client_clock_an_hour_fast_is_corrected_by_sent_at(daemon: Daemon) -> None:
    fast = NOW + 3600
    skewed = {"api_key": INGEST_KEY, "batch": [event("skewed", timestamp=iso(fast))]}
    assert send(daemon, {**skewed, "sent_at": iso(fast)}).status == 200
    uncorrected = send(daemon, skewed)
    assert (uncorrected.status, uncorrected.json["code"]) == (400, "no_valid_events")
    assert uncorrected.json["errors"][0]["code"] == "timestamp_in_future"
    assert value(daemon, "events_by_type:skewed") == 1
    # In the window of its real time (the server's now), not an hour ahead.
    minute = NOW - NOW % 60
    query = f"from={quote(iso(minute))}&to={quote(iso(minute + 7200))}&resolution=1m"
    reply = daemon.http.get(
        f"/api/v1/metrics/events_by_type:skewed/series?{query}", headers={"X-API-Key": READ_KEY}
    )
    points = {point["start"]: point["metric"]["value"] for point in reply.json["data"]["points"]}
    assert points == {iso(minute).replace("+00:00", ".000Z"): 1}


def test_historical_migration_is_for_keys_that_may_import(daemon: Daemon) -> None:
    old = [event("imported", timestamp=iso(TEN_DAYS_AGO))]
    refused = send(daemon, {"api_key": INGEST_KEY, "batch": old, "historical_migration": True})
    assert refused.json["errors"][0]["code"] == "timestamp_too_old"
    plain = send(daemon, {"api_key": ADMIN_KEY, "batch": old})
    assert plain.json["errors"][0]["code"] == "timestamp_too_old"
    taken = send(daemon, {"api_key": ADMIN_KEY, "batch": old, "historical_migration": True})
    assert taken.json == {"status": 1}
    too_old = [event("imported", timestamp=iso(NOW - 3 * 365 * 86400))]  # past every retention
    beyond = send(daemon, {"api_key": ADMIN_KEY, "batch": too_old, "historical_migration": True})
    assert beyond.json["errors"][0]["code"] == "timestamp_too_old"
    assert value(daemon, "events_by_type:imported") == 1
    # It lands in the windows of its day, once the flush has merged the late window.
    daemon.reactor.advance(daemon.config.windows.flush_interval)
    settle(daemon)
    day = TEN_DAYS_AGO - TEN_DAYS_AGO % 86400
    query = f"from={quote(iso(day))}&to={quote(iso(day + 86400))}&resolution=1d"
    reply = daemon.http.get(
        f"/api/v1/metrics/events_by_type:imported/series?{query}",
        headers={"X-API-Key": READ_KEY},
    )
    assert reply.status == 200
    assert [point["metric"]["value"] for point in reply.json["data"]["points"]] == [1]


def test_segment_import_is_historical_for_an_admin_key(daemon: Daemon) -> None:
    def segment(path: str, key: str) -> Reply:
        message = {"type": "track", "event": "Imported", "userId": "u"}
        body = {"batch": [{**message, "timestamp": iso(TEN_DAYS_AGO)}], "writeKey": key}
        return send(daemon, body, path)

    assert segment("/v1/import", ADMIN_KEY).json == {"success": True}
    for path, key in (("/v1/import", INGEST_KEY), ("/v1/batch", ADMIN_KEY)):
        reply = segment(path, key)
        assert reply.json["errors"][0]["code"] == "timestamp_too_old", path


def test_a_resent_uuid_is_acknowledged_and_counted_once(daemon: Daemon) -> None:
    body = {"api_key": INGEST_KEY, "batch": [event("retried", uuid="0190-aaaa")]}
    for _ in range(3):
        assert send(daemon, body).json == {"status": 1}
    assert value(daemon, "events_by_type:retried") == 1
    metrics = daemon.http.get("/metrics", headers={"X-API-Key": READ_KEY}).body.decode()
    assert 'rta_events_deduplicated_total{endpoint="posthog"} 2.0' in metrics
    assert 'rta_events_accepted_total{endpoint="posthog"} 1.0' in metrics


def test_without_keys_configured_every_caller_may_import() -> None:
    daemon = make_daemon()
    old = [event("open_import", timestamp=iso(TEN_DAYS_AGO))]
    reply = send(daemon, {"api_key": "anything", "batch": old, "historical_migration": True})
    assert reply.json == {"status": 1}
    assert daemon.http.get("/api/v1/metrics/events_by_type:open_import").json["data"]["value"] == 1
