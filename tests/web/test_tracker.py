"""The tracker script route and the renameable tracker paths: the script as served (size,
caching, the endpoint written in), the renamed endpoint answered as /api/event on both lanes,
and the config's checks of the two paths."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from tests.conftest import Daemon, make_daemon
from tests.helpers import HttpClient, raw_http, site_of
from twisted_rta.config import ConfigError, config_from_mapping, merge_reloadable
from twisted_rta.web.fastlane import fast_paths
from twisted_rta.web.routes import (
    PLAUSIBLE_PATH,
    PLAUSIBLE_RULE,
    POSTHOG_PATHS,
    SCRIPT_RULE,
    SEGMENT_CALLS,
    TRACKER,
    route_table,
)
from twisted_rta.web.routes import (
    SEGMENT_CALL_ALIASES as SHORT_CALLS,
)
from twisted_rta.web.tracker import TrackerApp, etag_matches, tracker_script

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
RENAMED = {"tracker": {"script_path": "/assets/s.js", "endpoint_path": "/in/collect"}}
KEYS = {"auth": {"keys": [{"name": "r", "key": "read-key-0123456789ab", "scopes": ["read"]}]}}


def settle(daemon: Daemon) -> None:
    for _ in range(50):
        daemon.reactor.advance(0)


def pageviews(daemon: Daemon) -> int:
    reply = daemon.http.get("/api/v1/metrics/events_by_type:pageview")
    return int(reply.json["data"]["value"]) if reply.status == 200 else 0


def hit(page: str) -> bytes:
    body = {"n": "pageview", "u": f"https://example.com{page}", "d": "example.com"}
    return json.dumps(body).encode()


def raw_post(daemon: Daemon, path: str, body: bytes) -> bytes:
    """A POST over a real connection of the listener: the fast lane when it is on."""
    request = (
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: rta.test\r\n"
        b"Content-Type: text/plain\r\nUser-Agent: " + FIREFOX.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    written, _ = raw_http(daemon.service.listeners[0].factory, request)
    settle(daemon)
    return written


# -- the script ------------------------------------------------------------------------------


def test_the_script_is_served_open_cacheable_and_at_most_2_kib_gzipped() -> None:
    daemon = make_daemon(KEYS)  # keys configured: the script still needs none
    reply = daemon.http.get("/js/rta.js")
    assert reply.status == 200
    assert reply.header("content-type") == "application/javascript; charset=utf-8"
    assert reply.header("cache-control") == "public, max-age=3600"
    assert reply.header("x-content-type-options") == "nosniff"
    assert reply.header("set-cookie") is None
    assert len(gzip.compress(reply.body)) <= 2048, len(gzip.compress(reply.body))
    # The default endpoint: the script's own origin + the configured path.
    assert b'new URL(script.src).origin : "") + "/api/event"' in reply.body
    assert route_table().match(b"/js/rta.js").open  # no key, no rate limit


def test_a_matching_etag_is_answered_304_without_the_script() -> None:
    daemon = make_daemon()
    etag = daemon.http.get("/js/rta.js").header("etag")
    assert etag is not None and etag.startswith('"')
    again = daemon.http.get("/js/rta.js", headers={"If-None-Match": f'"other", W/{etag}'})
    assert (again.status, again.body, again.header("etag")) == (304, b"", etag)
    stale = daemon.http.get("/js/rta.js", headers={"If-None-Match": '"other"'})
    assert stale.status == 200 and stale.body


def test_etag_matching() -> None:
    assert etag_matches(b'"a", "b"', b'"b"')
    assert etag_matches(b'W/"b"', b'"b"') and etag_matches(b"*", b'"b"')
    assert not etag_matches(b'"ab"', b'"b"') and not etag_matches(None, b'"b"')


def test_the_endpoint_path_is_written_into_the_script_once() -> None:
    default = tracker_script(PLAUSIBLE_PATH)
    renamed = tracker_script("/in/collect")
    assert renamed == default.replace(b'"/api/event"', b'"/in/collect"')
    assert b"/api/event" not in renamed
    # A different script, a different ETag.
    assert TrackerApp(endpoint_path="/a").etag != TrackerApp(endpoint_path="/b").etag


# -- renamed paths ---------------------------------------------------------------------------


def test_renamed_paths_serve_the_script_and_take_events_as_api_event() -> None:
    daemon = make_daemon(RENAMED)
    http = HttpClient(site_of(daemon.service.listeners[0].factory).resource, contract=False)
    script = http.get("/assets/s.js")
    assert script.status == 200
    assert b'"/in/collect"' in script.body and b"/api/event" not in script.body
    assert http.get("/js/rta.js").status == 404  # renamed, not kept
    # Through the edge and the Klein app (twisted.web's lane)...
    taken = http.post("/in/collect", hit("/a"), headers={"User-Agent": FIREFOX})
    assert (taken.status, taken.body) == (202, b"ok")
    # ...and through the fast lane, which answers it itself.
    assert raw_post(daemon, "/in/collect", hit("/b")).startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert raw_post(daemon, PLAUSIBLE_PATH, hit("/c")).startswith(b"HTTP/1.1 202 ")  # stays
    settle(daemon)
    assert pageviews(daemon) == 3


@pytest.mark.parametrize("fast_lane", [True, False])
def test_the_renamed_endpoint_answers_exactly_as_api_event_on_both_lanes(
    fast_lane: bool,
) -> None:
    daemon = make_daemon({**RENAMED, "server": {"fast_lane": fast_lane}})

    def answer(path: str, body: bytes) -> bytes:
        head, _, rest = raw_post(daemon, path, body).partition(b"\r\n\r\n")
        lines = [line for line in head.split(b"\r\n") if not line.startswith((b"Date:", b"X-"))]
        return b"\r\n".join(lines) + b"\r\n\r\n" + rest

    for body in (hit("/x"), b"{", b'{"n": "pageview"}'):
        assert answer("/in/collect", body) == answer(PLAUSIBLE_PATH, body), body
    assert pageviews(daemon) == 2


def test_the_fast_lane_answers_every_ingest_path_of_the_table() -> None:
    config = config_from_mapping(RENAMED)
    assert fast_paths(route_table(config.tracker)) == {
        b"/api/v1/events": "single",
        b"/api/v1/events/batch": "batch",
        b"/api/event": "plausible",
        b"/in/collect": "plausible",
        **{f"/v1/{call}".encode(): f"segment_{call}" for call in SEGMENT_CALLS},
        b"/v1/b": "segment_batch",
        **{f"/v1/{short}".encode(): f"segment_{call}" for short, call in SHORT_CALLS.items()},
        **{f"{path}{slash}".encode(): "posthog" for path in POSTHOG_PATHS for slash in ("", "/")},
    }
    assert b"/in/collect" not in fast_paths(route_table())


def test_the_table_maps_renamed_paths_onto_the_apps_rules() -> None:
    table = route_table(config_from_mapping(RENAMED).tracker)
    script = table.match(b"/assets/s.js")
    assert (script.app, script.klein_rule, script.open) == (TRACKER, SCRIPT_RULE, True)
    endpoint, plausible = table.match(b"/in/collect"), table.match(PLAUSIBLE_PATH.encode())
    assert endpoint.klein_rule == plausible.klein_rule == PLAUSIBLE_RULE
    policy = ("app", "scope", "cors", "rate_limit", "key_in_query", "allow")
    assert [getattr(endpoint, name) for name in policy] == [
        getattr(plausible, name) for name in policy
    ]
    assert table.match(b"/js/rta.js").app is None  # the default path is free again


# -- the config ------------------------------------------------------------------------------


def test_the_defaults() -> None:
    tracker = config_from_mapping({}).tracker
    assert (tracker.script_path, tracker.endpoint_path) == ("/js/rta.js", "/api/event")


def test_the_paths_change_only_at_a_restart() -> None:
    current = config_from_mapping({})
    assert merge_reloadable(current, config_from_mapping(RENAMED)).tracker == current.tracker


@pytest.mark.parametrize(
    ("tracker", "expected"),
    [
        ({"script_path": "js/rta.js"}, "tracker.script_path: must be a path such as"),
        ({"script_path": "/js/rta.js?v=1"}, "tracker.script_path: must be a path such as"),
        ({"endpoint_path": "/e#x"}, "tracker.endpoint_path: must be a path such as"),
        ({"endpoint_path": "/e/{x}"}, "tracker.endpoint_path: must be a path such as"),
        ({"endpoint_path": "/a//b"}, "tracker.endpoint_path: must be a path such as"),
        ({"endpoint_path": "/a/../b"}, "tracker.endpoint_path: must be a path such as"),
        ({"endpoint_path": "/%61"}, "tracker.endpoint_path: must be a path such as"),
        ({"script_path": 7}, "tracker.script_path: must be a non-empty string"),
        (
            {"script_path": "/api/v1/metrics/x.js"},
            "tracker.script_path: is already taken by the route /api/v1/metrics/{name}",
        ),
        ({"endpoint_path": "/health"}, "tracker.endpoint_path: is already taken by the route"),
        ({"script_path": "/api/event"}, "tracker.script_path: is already taken by the route"),
        (
            {"script_path": "/t", "endpoint_path": "/t"},
            "tracker.endpoint_path: is already taken by tracker.script_path",
        ),
        ({"scriptpath": "/t"}, "tracker.scriptpath: unknown key"),
    ],
)
def test_bad_paths_are_refused_with_their_key_path(tracker: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"tracker": tracker})
    assert str(caught.value).startswith(expected), str(caught.value)
