"""The dashboard: page and assets, and the Server-Sent Events stream driven over a real
HTTPChannel on a StringTransport with the daemon's MemoryReactorClock."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from tests.conftest import Daemon, make_daemon
from tests.contract import check
from tests.helpers import NOW
from twisted_rta.web.live import LiveFeed
from twisted_rta.web.routes import route_table

READ_KEY = "read-key-0123456789ab"
INGEST_KEY = "ingest-key-0123456789"
KEYS = {
    "auth": {
        "keys": [
            {"name": "dash", "key": READ_KEY, "scopes": ["read"]},
            {"name": "site", "key": INGEST_KEY, "scopes": ["ingest"]},
        ]
    }
}
_DATA = re.compile(rb"data: (\{.*?\})\n\n")
READ = {"Authorization": f"Bearer {READ_KEY}"}
# A labelled rule metric as a user writes it: series signups:country=<c>,plan=<p>.
SIGNUPS = {
    "metrics": {
        "rules": [
            {
                "name": "signups",
                "when": {"type": "signup"},
                "count": True,
                "labels": {"plan": "properties.plan", "country": "properties.country"},
            },
            {
                "name": "latency",
                "when": {"type": "request"},
                "histogram": "properties.ms",
                "labels": {"route": "properties.route"},
            },
        ]
    }
}


class Elements(HTMLParser):
    """Every element of a page with an id: id -> (tag, attributes), and the options of
    each select."""

    def __init__(self, page: bytes) -> None:
        super().__init__()
        self.by_id: dict[str, tuple[str, dict[str, str | None]]] = {}
        self.options: dict[str, list[str | None]] = {}
        self._select: str | None = None
        self.feed(page.decode("utf-8"))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.by_id[str(attributes["id"])] = (tag, attributes)
        if tag == "select":
            self._select = attributes.get("id")
            self.options[str(self._select)] = []
        elif tag == "option" and self._select is not None:
            self.options[self._select].append(attributes.get("value"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


class Stream:
    """One client of the stream on a real HTTPChannel of the daemon's site."""

    def __init__(self, daemon: Daemon, query: str = "") -> None:
        site = daemon.service.listeners[0].factory
        self.channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)
        self.channel.dataReceived(
            b"GET /api/v1/stream" + query.encode() + b" HTTP/1.1\r\nHost: rta.test\r\n\r\n"
        )

    def head(self) -> tuple[int, dict[str, str]]:
        raw, _, _ = self.transport.value().partition(b"\r\n\r\n")
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}

    def updates(self) -> list[dict[str, Any]]:
        return [json.loads(found) for found in _DATA.findall(self.transport.value())]

    def leave(self) -> None:
        self.channel.connectionLost(Failure(ConnectionDone()))


def feed_of(daemon: Daemon) -> LiveFeed:
    return next(m for m in daemon.service.monitors if isinstance(m, LiveFeed))


def settle(daemon: Daemon) -> None:
    """Let the worker loops aggregate what was queued (cooperative, on the fake reactor)."""
    for _ in range(50):
        daemon.reactor.advance(0)


def post_sample_events(daemon: Daemon) -> None:
    reply = daemon.http.post(
        "/api/v1/events/batch",
        [
            {
                "type": "pageview",
                "user_id": "u1",
                "session_id": "s1",
                "properties": {"page": "/home"},
            },
            {
                "type": "pageview",
                "user_id": "u2",
                "session_id": "s2",
                "properties": {"page": "/home"},
            },
            {"type": "click", "user_id": "u1", "properties": {"element": "buy"}},
            {"type": "purchase", "user_id": "u1", "properties": {"amount": 19.5}},
            {"type": "purchase", "user_id": "u3", "properties": {"amount": 30}},
        ],
    )
    assert reply.status == 202
    settle(daemon)


# -- page and assets -------------------------------------------------------------------------


def test_page_is_served_at_root_and_dashboard_with_a_strict_policy() -> None:
    daemon = make_daemon()
    for path in ("/", "/dashboard"):
        reply = daemon.http.get(path)  # contract-checked: text/html, documented headers
        assert reply.status == 200
        assert reply.headers["content-type"] == ["text/html; charset=utf-8"]
        assert b'src="/dashboard/assets/dashboard.js"' in reply.body
        policy = reply.headers["content-security-policy"][0]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
        assert b"http://" not in reply.body and b"https://" not in reply.body  # no CDN


def test_assets_are_served_from_the_package_and_nothing_else() -> None:
    daemon = make_daemon()
    script = daemon.http.get("/dashboard/assets/dashboard.js")
    assert script.status == 200
    assert script.headers["content-type"] == ["text/javascript; charset=utf-8"]
    assert b"EventSource" in script.body
    style = daemon.http.get("/dashboard/assets/dashboard.css")
    assert style.status == 200 and b"prefers-color-scheme: dark" in style.body
    for path in (
        "/dashboard/assets/missing.js",
        "/dashboard/assets/..%2Fopenapi.yaml",
        "/dashboard/assets/index.html",
    ):
        reply = daemon.http.get(path)
        assert (reply.status, reply.json["code"]) == (404, "not_found"), path


def test_page_and_assets_are_open_but_the_stream_needs_a_read_key() -> None:
    daemon = make_daemon(KEYS)
    assert route_table().match(b"/dashboard/assets/dashboard.js").open
    assert daemon.http.get("/").status == 200
    assert daemon.http.get("/dashboard/assets/dashboard.css").status == 200

    refused = Stream(daemon)
    status, headers = refused.head()
    assert status == 401 and headers["www-authenticate"] == 'Bearer realm="rta"'
    assert b'"unauthorized"' in refused.transport.value()
    assert Stream(daemon, f"?api_key={INGEST_KEY}").head()[0] == 403
    assert feed_of(daemon).subscribers == set()

    accepted = Stream(daemon, f"?api_key={READ_KEY}")
    assert accepted.head()[0] == 200
    assert len(feed_of(daemon).subscribers) == 1
    # The query-string key is for the stream only: other read routes still want a header.
    assert daemon.http.get(f"/api/v1/stats?api_key={READ_KEY}").status == 401
    accepted.leave()


def test_head_on_the_stream_answers_headers_and_ends() -> None:
    daemon = make_daemon()
    reply = daemon.http.request("HEAD", "/api/v1/stream")
    assert reply.status == 200 and reply.body == b""
    assert reply.headers["content-type"] == ["text/event-stream; charset=utf-8"]
    assert feed_of(daemon).subscribers == set()


def test_the_page_has_the_metric_picker_and_the_breakdown_panel() -> None:
    daemon = make_daemon()
    page = Elements(daemon.http.get("/dashboard").body)
    tag, _ = page.by_id["chart-metric"]
    assert tag == "select"
    assert page.options["chart-metric"] == ["total_events"]  # the default, before the list
    assert page.by_id["chart-title"][0] == "span"
    assert page.by_id["breakdown-family"][0] == "select"
    assert page.by_id["breakdown-by"][0] == "select"
    assert "hidden" in page.by_id["breakdown-by-picker"][1]  # until a family has labels
    assert page.by_id["bars-breakdown"][0] == "ol"
    for fixed in ("page_views", "clicks", "events_by_type"):  # the cards that were there
        assert page.by_id[f"bars-{fixed}"][0] == "ol"


def test_every_element_the_script_looks_up_is_on_the_page() -> None:
    daemon = make_daemon()
    ids = set(Elements(daemon.http.get("/dashboard").body).by_id)
    script = daemon.http.get("/dashboard/assets/dashboard.js").body.decode()
    looked_up = set(re.findall(r'\$\("([\w-]+)"\)', script))
    looked_up |= {f"bars-{base}" for base in re.findall(r'drawBars\("([\w-]+)"', script)}
    assert {"chart-metric", "breakdown-family", "breakdown-by", "bars-breakdown"} <= looked_up
    assert looked_up - ids == set()


def test_the_script_keeps_choices_in_the_hash_and_sends_the_key_to_every_query() -> None:
    script = make_daemon().http.get("/dashboard/assets/dashboard.js").body.decode()
    assert "location.hash" in script and "history.replaceState" in script
    assert "hashchange" in script
    for kept in ("localStorage", "document.cookie"):  # the hash only; the key: the session
        assert kept not in script
    # One way to the JSON API (the bearer key in a header), and the routes it pages through.
    assert script.count("await fetch(") == 1
    assert 'headers.Authorization = "Bearer " + key' in script
    assert "/api/v1/metrics?limit=" in script and '"&after="' in script
    assert "/series?from=" in script and "/api/v1/breakdown/" in script and '"&by="' in script


def post_signups(daemon: Daemon, headers: dict[str, str] | None = None) -> None:
    events = [
        {"type": "signup", "properties": {"plan": "pro", "country": "de"}},
        {"type": "signup", "properties": {"plan": "pro", "country": "x=1,y"}},
        {"type": "signup", "properties": {"plan": "free", "country": "de"}},
        {"type": "request", "properties": {"ms": 12, "route": "/a"}},
        {"type": "request", "properties": {"ms": 30, "route": "/a"}},
        {"type": "pageview", "properties": {"page": "/home"}},
    ]
    assert daemon.http.post("/api/v1/events/batch", events, headers=headers).status == 202
    settle(daemon)


def test_the_metric_list_pages_give_the_picker_its_counters_and_families() -> None:
    """What the script reads from GET /api/v1/metrics, page by page as it does (limit and
    meta.next), with the read key: counters by type, families by their series names."""
    daemon = make_daemon({**KEYS, **SIGNUPS})
    assert daemon.http.get("/api/v1/metrics?limit=2").status == 401  # the key is needed
    assert daemon.http.get("/api/v1/metrics?limit=2", READ).json["data"] == {}  # no metric
    post_signups(daemon, {"Authorization": f"Bearer {INGEST_KEY}"})
    views: dict[str, Any] = {}
    after: str | None = None
    pages = 0
    while True:
        path = "/api/v1/metrics?limit=2" + (f"&after={quote(after, safe='')}" if after else "")
        body = daemon.http.get(path, READ).json
        pages += 1
        views.update(body["data"])
        after = body["meta"]["next"]
        if after is None:
            break
    assert pages > 2
    assert views == daemon.http.get("/api/v1/metrics", READ).json["data"]  # nothing missed
    keys = {name.partition(":")[2] for name in views if name.startswith("signups:")}
    assert keys == {"country=de,plan=pro", "country=x\\=1\\,y,plan=pro", "country=de,plan=free"}
    assert {views[name]["type"] for name in views if name.startswith("signups:")} == {"counter"}
    assert {views[name]["type"] for name in views if name.startswith("latency:")} == {"histogram"}


def test_the_queries_of_the_chart_and_the_breakdown_answer_as_the_script_expects() -> None:
    daemon = make_daemon({**KEYS, **SIGNUPS})
    post_signups(daemon, {"Authorization": f"Bearer {INGEST_KEY}"})

    def get(path: str) -> Any:
        return daemon.http.get(path, READ)

    # The chart: a family's base merges its series (a counter: value is the sum).
    series = get("/api/v1/metrics/signups/series?from=-1h&resolution=1m").json["data"]
    assert sum(point["metric"]["value"] for point in series["points"]) == 3
    assert series["resolution_seconds"] == 60
    # events_by_type merged is total_events, which the picker offers instead.
    by_type = get("/api/v1/metrics/events_by_type/series?from=-1h").json["data"]["points"]
    totals = get("/api/v1/metrics/total_events/series?from=-1h").json["data"]["points"]
    assert [p["metric"]["value"] for p in by_type] == [p["metric"]["value"] for p in totals]

    # The breakdown: by a label of a family with several, within the range.
    by_plan = get("/api/v1/breakdown/signups?from=-1h&limit=10&by=plan").json["data"]
    assert [(i["value"], i["count"]) for i in by_plan["items"]] == [("pro", 2), ("free", 1)]
    by_country = get("/api/v1/breakdown/signups?from=-1h&limit=10&by=country").json["data"]
    assert [i["value"] for i in by_country["items"]] == ["de", "x=1,y"]  # unescaped
    # A family with one label needs no `by` (events_by_type refuses one); other kinds rank
    # by their count.
    latency = get("/api/v1/breakdown/latency?from=-1h&limit=10").json["data"]
    assert [(i["value"], i["count"]) for i in latency["items"]] == [("/a", 2)]
    assert get("/api/v1/breakdown/events_by_type?from=-1h&limit=10").status == 200

    # Several labels and no `by`: a 400 whose message lists them (the script learns the
    # labels from it when the series names could not tell them).
    refused = get("/api/v1/breakdown/signups?from=-1h&limit=10")
    assert (refused.status, refused.json["parameter"]) == (400, "by")
    listed = re.search(r"one of (.+)$", refused.json["message"])
    assert listed is not None and listed.group(1).split(", ") == ["country", "plan"]
    # What the panel reports: an unknown family, a base the API refuses.
    assert get("/api/v1/breakdown/nope?from=-1h&limit=10").status == 404
    assert get("/api/v1/breakdown/no%20pe?from=-1h&limit=10").status == 400


# -- the stream ------------------------------------------------------------------------------


def test_stream_sends_the_live_figures_at_once_and_each_period() -> None:
    daemon = make_daemon()
    post_sample_events(daemon)
    client = Stream(daemon)
    status, headers = client.head()
    assert status == 200
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    check("GET", "/api/v1/stream", status, headers, b"")
    assert b"retry: 3000\n\n" in client.transport.value()

    first = client.updates()
    assert len(first) == 1  # the first tick runs as the first client arrives
    update = first[0]
    assert update["total_events"] == 5
    assert (update["pageviews"], update["clicks"], update["purchases"]) == (2, 1, 2)
    assert update["revenue"] == 49.5
    assert update["revenue_histogram"]["count"] == 2
    assert update["revenue_histogram"]["p99"] == 30
    assert update["unique_users"] == 3 and update["unique_sessions"] == 2
    assert update["active_users_5m"] == 3
    assert update["unique_users_today"] == 3 and update["unique_users_hour"] == 3
    assert update["unique_sessions_today"] == 2
    assert update["events_per_second"] is None  # one sample: no rate yet
    health = update["health"]
    assert health["ready"] is True and health["failing"] == []
    assert (health["queue_depth"], health["queue_capacity"]) == (0, 100000)
    assert health["node_id"] == "node-a"

    feed = feed_of(daemon)
    daemon.reactor.advance(feed.period - 0.01)
    assert len(client.updates()) == 1  # nothing before the period is over
    daemon.reactor.advance(0.01)
    assert len(client.updates()) == 2

    for _ in range(3):  # 3 more events within the next period: a rate over the samples
        daemon.http.post("/api/v1/events", {"type": "click", "properties": {"element": "x"}})
    settle(daemon)
    daemon.reactor.advance(feed.period)
    latest = client.updates()[-1]
    assert latest["total_events"] == 8 and latest["clicks"] == 4
    assert latest["events_per_second"] == 3 / (2 * feed.period)
    client.leave()


def test_a_late_subscriber_gets_the_last_update_at_once() -> None:
    daemon = make_daemon()
    first = Stream(daemon)
    daemon.reactor.advance(0.5)
    second = Stream(daemon)
    assert len(second.updates()) == 1
    daemon.reactor.advance(feed_of(daemon).period - 0.5)  # one tick serves both
    assert (len(first.updates()), len(second.updates())) == (2, 2)
    first.leave()
    second.leave()


def test_disconnected_clients_are_removed_and_the_loop_stops_with_the_last() -> None:
    daemon = make_daemon()
    feed = feed_of(daemon)
    staying, leaving = Stream(daemon), Stream(daemon)
    assert len(feed.subscribers) == 2 and feed.ticking

    leaving.leave()
    assert len(feed.subscribers) == 1
    before = len(leaving.updates())
    daemon.reactor.advance(feed.period)
    assert len(leaving.updates()) == before  # nothing written to a gone client
    assert len(staying.updates()) == 2

    staying.leave()
    assert feed.subscribers == set() and not feed.ticking
    calls = len(daemon.reactor.getDelayedCalls())
    daemon.reactor.advance(feed.period * 5)
    assert len(staying.updates()) == 2
    assert len(daemon.reactor.getDelayedCalls()) <= calls  # no timer left behind


def test_stopping_the_feed_ends_every_open_stream() -> None:
    daemon = make_daemon()
    client = Stream(daemon)
    feed = feed_of(daemon)
    feed.stopService()
    assert feed.subscribers == set() and not feed.ticking
    assert client.transport.value().endswith(b"0\r\n\r\n")  # the last chunk: stream ended


def test_a_failing_snapshot_is_counted_and_the_feed_keeps_going() -> None:
    clock = Clock()
    clock.advance(NOW)
    calls: list[int] = []

    async def snapshot() -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("store exploded")
        return {"n": len(calls)}

    feed = LiveFeed(clock=clock, snapshot=snapshot, period=2.0)
    request = DummyRequest([b""])
    feed.subscribe(request)
    assert feed.failures == 1 and b"data:" not in b"".join(request.written)
    clock.advance(2.0)
    assert b'data: {"n":2}\n\n' in request.written
    request.processingFailed(Failure(ConnectionDone()))  # the client goes away
    assert feed.subscribers == set() and not feed.ticking


def test_the_favicon_is_a_cacheable_svg_linked_from_the_page() -> None:
    daemon = make_daemon(KEYS)  # open even when keys are configured
    icon = daemon.http.get("/favicon.ico")  # contract-checked
    assert icon.status == 200
    assert icon.headers["content-type"] == ["image/svg+xml"]
    assert icon.header("Cache-Control") == "public, max-age=86400"
    assert icon.body.startswith(b"<svg ") and b"</svg>" in icon.body
    page = daemon.http.get("/dashboard")
    assert b'<link rel="icon" href="/favicon.ico" type="image/svg+xml">' in page.body
    assert daemon.http.request("HEAD", "/favicon.ico").status == 200
