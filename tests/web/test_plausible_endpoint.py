"""POST /api/event: Plausible's Events API through the real composition root, with
cookieless visitors, the crawler filter, Do Not Track and salt rotation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Daemon, make_daemon

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
PRIVACY: dict[str, Any] = {"server": {"trusted_proxies": ["127.0.0.1"]}}


def settle(daemon: Daemon) -> None:
    for _ in range(50):
        daemon.reactor.advance(0)


def send(
    daemon: Daemon,
    body: dict[str, Any],
    *,
    agent: str = FIREFOX,
    address: str = "198.51.100.7",
    headers: dict[str, str] | None = None,
) -> Any:
    reply = daemon.http.post(
        "/api/event",
        json.dumps(body),
        headers={
            "Content-Type": "text/plain",
            "User-Agent": agent,
            "X-Forwarded-For": address,
            **(headers or {}),
        },
    )
    settle(daemon)
    return reply


def value(daemon: Daemon, name: str) -> Any:
    reply = daemon.http.get(f"/api/v1/metrics/{name}")
    return reply.json["data"]["value"] if reply.status == 200 else None


def pageview(url: str = "https://example.com/pricing?plan=pro#top") -> dict[str, Any]:
    return {"n": "pageview", "u": url, "d": "example.com", "r": "https://www.google.com/"}


@pytest.fixture
def daemon() -> Daemon:
    return make_daemon(PRIVACY)


def test_a_pageview_is_answered_as_plausible_does_and_counted(daemon: Daemon) -> None:
    reply = send(daemon, pageview())
    assert (reply.status, reply.body) == (202, b"ok")
    assert (reply.header("Content-Type") or "").startswith("text/plain")
    assert value(daemon, "pageviews") == 1
    assert value(daemon, "page_views:/pricing") == 1  # the URL's path, no query
    assert value(daemon, "events_by_type:pageview") == 1


def test_long_keys_json_and_custom_events_with_props_and_revenue(daemon: Daemon) -> None:
    body = {
        "name": "Signup",
        "url": "https://example.com/join",
        "domain": "example.com",
        "props": {"plan": "pro"},
        "revenue": {"amount": "19.50", "currency": "EUR"},
    }
    reply = daemon.http.post(
        "/api/event",
        body,
        headers={"Content-Type": "application/json", "User-Agent": FIREFOX},
    )
    assert reply.status == 202
    settle(daemon)
    assert value(daemon, "events_by_type:Signup") == 1


def test_the_same_client_is_one_visitor_another_agent_two(daemon: Daemon) -> None:
    send(daemon, pageview())
    send(daemon, pageview("https://example.com/"))
    assert value(daemon, "unique_users") == 1
    send(daemon, pageview(), agent=SAFARI)
    assert value(daemon, "unique_users") == 2
    send(daemon, pageview(), address="203.0.113.9")
    assert value(daemon, "unique_users") == 3


def test_after_a_salt_rotation_the_same_client_counts_again() -> None:
    daemon = make_daemon({**PRIVACY, "privacy": {"salt_rotation": "1h"}})
    send(daemon, pageview())
    # Two hours on (past the 30-minute visit gap): a new period, a new id.
    daemon.reactor.advance(7200)
    settle(daemon)
    send(daemon, pageview())
    assert value(daemon, "unique_users") == 2


def test_crawlers_are_answered_and_not_counted(daemon: Daemon) -> None:
    reply = send(daemon, pageview(), agent=GOOGLEBOT)
    assert (reply.status, reply.body) == (202, b"ok")
    assert value(daemon, "pageviews") is None  # nothing counted at all
    stats = daemon.http.get("/api/v1/stats").json["data"]
    assert stats["browser_events_dropped"] == {"bot": 1, "dnt": 0, "engagement": 0}
    exposition = daemon.http.get("/metrics").body.decode()
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    dropped = {
        s.labels["reason"]: s.value
        for s in families["rta_events_dropped"].samples
        if s.name == "rta_events_dropped_total"
    }
    assert dropped["bot"] == 1
    # The native API counts whatever it is sent, crawler or not.
    native = daemon.http.post(
        "/api/v1/events", {"type": "pageview"}, headers={"User-Agent": GOOGLEBOT}
    )
    assert native.status == 202
    settle(daemon)
    assert value(daemon, "pageviews") == 1


def test_do_not_track_is_honoured_only_when_configured(daemon: Daemon) -> None:
    send(daemon, pageview(), headers={"DNT": "1"})
    assert value(daemon, "pageviews") == 1
    honouring = make_daemon({**PRIVACY, "privacy": {"honor_do_not_track": True}})
    send(honouring, pageview(), headers={"DNT": "1"})
    send(honouring, pageview(), headers={"Sec-GPC": "1"})
    assert value(honouring, "pageviews") is None
    stats = honouring.http.get("/api/v1/stats").json["data"]
    assert stats["browser_events_dropped"]["dnt"] == 2


def test_a_bad_body_is_a_400_naming_the_key(daemon: Daemon) -> None:
    reply = send(daemon, {"n": "pageview", "d": "example.com"})
    assert reply.status == 400
    assert "url" in reply.json["message"]
    assert daemon.http.post("/api/event", "not json", headers={"User-Agent": FIREFOX}).status == 400


def test_no_key_is_needed_even_with_keys_configured() -> None:
    keyed = make_daemon(
        {
            **PRIVACY,
            "auth": {"keys": [{"name": "k", "key": "a-long-enough-secret", "scopes": ["ingest"]}]},
        }
    )
    assert send(keyed, pageview()).status == 202
    assert keyed.http.post("/api/v1/events", {"type": "x"}).status == 401


def test_neither_address_nor_agent_is_in_any_metric_name_or_value(daemon: Daemon) -> None:
    send(daemon, pageview(), address="198.51.100.77")
    listing = daemon.http.get("/api/v1/metrics").body.decode()
    # The web preset keeps the browser's family (Firefox), never the agent itself.
    assert "198.51.100.77" not in listing and "Gecko" not in listing and "rv:140" not in listing


def test_per_site_figures_through_metric_rules() -> None:
    rules = [
        {
            "name": "views_by_page",
            "when": {"type": "pageview"},
            "count": True,
            "labels": {"site": "properties.site", "page": "properties.page"},
        },
        {
            "name": "site_visitors",
            "when": {"type_glob": "*"},
            "unique": "user_id",
            "labels": {"site": "properties.site"},
        },
    ]
    daemon = make_daemon({**PRIVACY, "metrics": {"rules": rules}})
    send(daemon, pageview("https://www.example.com/a"))
    send(daemon, pageview("https://example.com/b"), agent=SAFARI)
    shop = {"n": "pageview", "u": "https://shop.example.com/", "d": "shop.example.com"}
    send(daemon, shop)
    reply = daemon.http.get("/api/v1/metrics/site_visitors?site=example.com&from=-1h")
    assert reply.json["data"]["value"] == 2
    top = daemon.http.get("/api/v1/breakdown/views_by_page?by=page&site=example.com")
    assert {item["value"] for item in top.json["data"]["items"]} == {"/a", "/b"}
    # A hit for two sites (Plausible's roll-ups) counts in both; www. is not part of a site.
    both = {"n": "pageview", "u": "https://example.com/c", "d": "www.example.com,shop.example.com"}
    assert send(daemon, both).status == 202
    shop_views = daemon.http.get("/api/v1/metrics/views_by_page?site=shop.example.com")
    assert shop_views.json["data"]["value"] == 2


def test_sources_and_campaigns_reach_the_metric_rules() -> None:
    rules = [
        {
            "name": "sources",
            "when": {"type": "pageview"},
            "count": True,
            "labels": {"source": "properties.source"},
        },
        {
            "name": "campaigns",
            "when": {"type": "pageview"},
            "count": True,
            "labels": {"campaign": "properties.utm_campaign"},
        },
        {
            "name": "devices",
            "when": {"type": "pageview"},
            "count": True,
            "labels": {"device": "properties.device", "browser": "properties.browser"},
        },
    ]
    # Rules of their own under the web preset's names (sources, devices).
    daemon = make_daemon({**PRIVACY, "metrics": {"web": False, "rules": rules}})
    send(daemon, pageview())  # referred by a Google search
    send(daemon, {**pageview("https://example.com/?utm_campaign=spring"), "r": None})
    send(daemon, {**pageview("https://example.com/x"), "r": "https://example.com/"}, agent=SAFARI)
    sources = daemon.http.get("/api/v1/breakdown/sources").json["data"]["items"]
    assert {item["value"]: item["count"] for item in sources} == {
        "Google": 1,
        "Direct / None": 2,  # no referrer, and a referrer on the same site
    }
    campaigns = daemon.http.get("/api/v1/breakdown/campaigns").json["data"]["items"]
    assert campaigns == [{"value": "spring", "count": 1}]
    devices = daemon.http.get("/api/v1/breakdown/devices?by=device").json["data"]["items"]
    assert {item["value"]: item["count"] for item in devices} == {"Desktop": 2, "Mobile": 1}
    listing = daemon.http.get("/api/v1/metrics").body.decode()
    assert "Gecko" not in listing and "AppleWebKit" not in listing  # families, not the agent


def test_visits_are_the_sessions_of_browser_events(daemon: Daemon) -> None:
    send(daemon, pageview())
    daemon.reactor.advance(600)
    send(daemon, pageview("https://example.com/next"))  # 10 minutes on: the same visit
    assert value(daemon, "unique_sessions") == 1
    daemon.reactor.advance(1801)
    send(daemon, pageview())  # after 30 idle minutes: a second visit, the same visitor
    assert value(daemon, "unique_sessions") == 2
    assert value(daemon, "unique_users") == 1
