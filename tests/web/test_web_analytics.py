"""The web preset through the real composition root: per-site visitors, visits, bounce rate,
visit duration and breakdowns from Plausible hits, and ``?site=`` on the query API."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Daemon, make_daemon

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1"
)
CONFIG: dict[str, Any] = {"server": {"trusted_proxies": ["127.0.0.1"]}}


def settle(daemon: Daemon) -> None:
    for _ in range(50):
        daemon.reactor.advance(0)


def hit(
    daemon: Daemon,
    url: str,
    *,
    name: str = "pageview",
    referrer: str | None = None,
    agent: str = FIREFOX,
    address: str = "198.51.100.7",
) -> None:
    site = url.split("/")[2].removeprefix("www.")
    body = {"n": name, "u": url, "d": site, "r": referrer}
    reply = daemon.http.post(
        "/api/event",
        json.dumps(body),
        headers={"Content-Type": "text/plain", "User-Agent": agent, "X-Forwarded-For": address},
    )
    assert reply.status == 202
    settle(daemon)


def get(daemon: Daemon, path: str) -> Any:
    reply = daemon.http.get(path)
    assert reply.status == 200, reply.json
    return reply.json["data"]


def items(daemon: Daemon, path: str) -> dict[str, float]:
    return {item["value"]: item["count"] for item in get(daemon, path)["items"]}


@pytest.fixture
def daemon() -> Daemon:
    return make_daemon(CONFIG)


def test_summary_of_a_site_visitors_visits_bounce_rate_and_duration(daemon: Daemon) -> None:
    # Visitor A: two pageviews a minute apart and a signup 30 s later (one visit, 90 s,
    # not a bounce). Visitor B: one pageview (a bounce). Another site: one pageview.
    hit(daemon, "https://example.com/", referrer="https://www.google.com/")
    daemon.reactor.advance(60)
    hit(daemon, "https://example.com/pricing", referrer="https://example.com/")
    daemon.reactor.advance(30)
    hit(daemon, "https://example.com/pricing", name="signup")
    hit(daemon, "https://example.com/blog", agent=IPHONE)
    hit(daemon, "https://other.org/", address="203.0.113.5")
    summary = get(daemon, "/api/v1/web?site=example.com")
    assert summary == {
        "site": "example.com",
        "visitors": 2,
        "visits": 2,
        "pageviews": 3,
        "views_per_visit": 1.5,
        "bounce_rate": 0.5,
        "visit_duration": 45.0,
    }
    everywhere = get(daemon, "/api/v1/web")
    assert (everywhere["site"], everywhere["visitors"], everywhere["visits"]) == (None, 3, 3)
    assert get(daemon, "/api/v1/web?site=other.org")["bounce_rate"] == 1.0
    nobody = get(daemon, "/api/v1/web?site=nobody.net")
    assert nobody["visits"] == 0 and nobody["bounce_rate"] is None
    ranged = get(daemon, "/api/v1/web?site=example.com&from=-1h")
    assert ranged["visitors"] == 2 and "range" in ranged


def test_a_new_visit_after_thirty_minutes_counts_again(daemon: Daemon) -> None:
    hit(daemon, "https://example.com/")
    daemon.reactor.advance(31 * 60)
    hit(daemon, "https://example.com/")
    summary = get(daemon, "/api/v1/web?site=example.com")
    assert (summary["visitors"], summary["visits"], summary["bounce_rate"]) == (1, 2, 1.0)
    assert summary["visit_duration"] == 0


def test_breakdowns_count_visits_by_how_they_began(daemon: Daemon) -> None:
    hit(daemon, "https://example.com/?utm_campaign=spring&utm_medium=email", referrer=None)
    hit(daemon, "https://example.com/docs", referrer="https://example.com/")  # same visit
    hit(daemon, "https://example.com/blog", referrer="https://www.google.com/", agent=IPHONE)
    hit(daemon, "https://example.com/", referrer="https://news.ycombinator.com/", address="x")
    site = "site=example.com"
    assert items(daemon, f"/api/v1/breakdown/sources?by=source&{site}") == {
        "Direct / None": 1,
        "Google": 1,
        "Hacker News": 1,
    }
    assert items(daemon, f"/api/v1/breakdown/utm_campaigns?by=utm_campaign&{site}") == {"spring": 1}
    assert items(daemon, f"/api/v1/breakdown/utm_mediums?by=utm_medium&{site}") == {"email": 1}
    assert items(daemon, f"/api/v1/breakdown/entry_pages?by=page&{site}") == {"/": 2, "/blog": 1}
    assert items(daemon, f"/api/v1/breakdown/top_pages?by=page&{site}") == {
        "/": 2,
        "/docs": 1,
        "/blog": 1,
    }
    assert items(daemon, f"/api/v1/breakdown/devices?by=device&{site}") == {
        "Desktop": 2,
        "Mobile": 1,
    }
    assert items(daemon, f"/api/v1/breakdown/browsers?by=browser&{site}") == {
        "Firefox": 2,
        "Mobile Safari": 1,
    }
    assert items(daemon, f"/api/v1/breakdown/operating_systems?by=os&{site}") == {
        "Linux": 2,
        "iOS": 1,
    }
    assert items(daemon, "/api/v1/breakdown/visitors?by=site") == {"example.com": 3}
    # No utm_campaign on most visits: no skip counted for them.
    assert "utm_campaigns" not in get(daemon, "/api/v1/stats").get("rule_skips", {})


def test_site_filters_every_query_and_refuses_a_metric_not_kept_per_site(daemon: Daemon) -> None:
    hit(daemon, "https://example.com/")
    hit(daemon, "https://other.org/")
    assert get(daemon, "/api/v1/metrics/visitors?site=example.com")["value"] == 1
    assert get(daemon, "/api/v1/metrics/site_pageviews?site=other.org&from=-1h")["value"] == 1
    points = get(daemon, "/api/v1/metrics/visits/series?site=other.org&from=-1h")["points"]
    assert [p["metric"]["value"] for p in points] == [1]
    listed = get(daemon, "/api/v1/metrics?site=other.org")
    names = set(listed)
    assert "visitors:other.org" in names and "site_pageviews:other.org" in names
    assert all("other.org" in name for name in names)
    for path in ("/api/v1/metrics?site=", "/api/v1/web?site=", "/api/v1/metrics/visits?site="):
        empty = daemon.http.get(path)
        assert (empty.status, empty.json["parameter"]) == (400, "site"), path
    for path in ("/api/v1/metrics/pageviews?site=a.com", "/api/v1/breakdown/clicks?site=a.com"):
        reply = daemon.http.get(path)
        assert reply.status == 400, path
        assert reply.json["parameter"] == "site"
        assert "visitors" in reply.json["message"]


def test_native_events_count_per_site_only_when_they_name_one(daemon: Daemon) -> None:
    events = [
        {"type": "pageview", "user_id": "u1", "properties": {"page": "/"}},
        {"type": "pageview", "user_id": "u2", "properties": {"page": "/", "site": "app.io"}},
    ]
    assert daemon.http.post("/api/v1/events/batch", {"events": events}).status == 202
    settle(daemon)
    assert get(daemon, "/api/v1/metrics/pageviews")["value"] == 2
    assert items(daemon, "/api/v1/breakdown/visitors?by=site") == {"app.io": 1}
    assert get(daemon, "/api/v1/web?site=app.io")["pageviews"] == 1


def test_the_web_metrics_can_be_turned_off() -> None:
    daemon = make_daemon({**CONFIG, "metrics": {"web": False}})
    hit(daemon, "https://example.com/")
    reply = daemon.http.get("/api/v1/web?site=example.com")
    assert reply.status == 404 and "metrics.web: false" in reply.json["message"]
    assert daemon.http.get("/api/v1/metrics/visitors").status == 404
    assert get(daemon, "/api/v1/metrics/pageviews")["value"] == 1


SITE_KEY, INGEST_KEY = "site-reader-0123456789", "ingest-key-0123456789"


def test_a_key_bound_to_sites_reads_only_their_per_site_figures() -> None:
    keys = [
        {"name": "shop", "key": SITE_KEY, "scopes": ["read"], "sites": ["example.com"]},
        {"name": "server", "key": INGEST_KEY, "scopes": ["ingest"]},
    ]
    daemon = make_daemon({**CONFIG, "auth": {"keys": keys}})
    hit(daemon, "https://example.com/")  # the browser endpoint takes no key
    hit(daemon, "https://other.org/")
    bound = {"X-API-Key": SITE_KEY}

    def status(path: str) -> int:
        return daemon.http.get(path, headers=bound).status

    reply = daemon.http.get("/api/v1/web?site=example.com", headers=bound)
    assert reply.status == 200 and reply.json["data"]["visitors"] == 1
    assert status("/api/v1/metrics/visitors?site=example.com") == 200
    assert status("/api/v1/breakdown/sources?by=source&site=example.com") == 200
    assert status("/api/v1/metrics?site=example.com") == 200
    refused = daemon.http.get("/api/v1/web?site=other.org", headers=bound)
    assert refused.status == 403 and "example.com" in refused.json["message"]
    for path in ("/api/v1/web", "/api/v1/metrics/visitors", "/api/v1/metrics", "/api/v1/stats"):
        assert status(path) == 403, path
    # A figure not kept per site stays out of reach, with or without a site.
    assert status("/api/v1/metrics/pageviews?site=example.com") == 400
    assert status("/metrics") == 403  # Prometheus: every figure of every site


def test_sites_of_a_key_are_checked_and_shown_in_the_summary() -> None:
    from twisted_rta.config import ConfigError, config_from_mapping, summary

    key = {"name": "shop", "key": SITE_KEY, "scopes": ["read"], "sites": ["example.com"]}
    config = config_from_mapping({"auth": {"keys": [key]}})
    assert summary(config)["auth.keys"] == [
        {"name": "shop", "scopes": ("read",), "sites": ("example.com",)}
    ]
    with pytest.raises(ConfigError, match=r"auth\.keys\[0\]\.sites"):
        config_from_mapping({"auth": {"keys": [{**key, "sites": []}]}})
