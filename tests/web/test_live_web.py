"""The dashboard's web analytics: the stream's per-site "now" figures, the snippet's script
path in the page, and the queries the web view makes, through the real composition root on
the daemon's MemoryReactorClock."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.conftest import Daemon, make_daemon
from tests.helpers import HttpClient
from tests.web.test_dashboard import Elements, Stream, feed_of, settle
from twisted_rta.web.dashboard import DashboardApp
from twisted_rta.web.live import RECENT_SPAN, SITES_NOW

CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{}.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1"
)
_TAB = re.compile(r'data-family="(\w+)" data-by="(\w+)"')


def hit(daemon: Daemon, site: str, path: str, agent: str, referrer: str | None = None) -> None:
    """A pageview as Plausible's tracker sends it; the User-Agent makes the visitor."""
    body: dict[str, Any] = {"n": "pageview", "u": f"https://{site}{path}", "d": site}
    if referrer is not None:
        body["r"] = referrer
    reply = daemon.http.post(
        "/api/event",
        json.dumps(body),
        headers={"Content-Type": "text/plain", "User-Agent": agent},
    )
    assert reply.status == 202


def two_sites(daemon: Daemon) -> None:
    """a.example: 3 visitors (4 pageviews); b.example: 1 visitor (1 pageview)."""
    hit(daemon, "a.example", "/?utm_campaign=spring", CHROME.format(120), "https://www.google.com/")
    hit(daemon, "a.example", "/pricing", CHROME.format(120))
    hit(daemon, "a.example", "/", CHROME.format(121))
    hit(daemon, "a.example", "/docs", IPHONE, "https://blog.example.org/post")
    hit(daemon, "b.example", "/", CHROME.format(122))
    settle(daemon)


def test_the_stream_tells_each_sites_visitors_and_pageviews_of_the_last_minutes() -> None:
    daemon = make_daemon()
    two_sites(daemon)
    daemon.http.post("/api/v1/events", {"type": "pageview", "properties": {"page": "/x"}})
    settle(daemon)  # an event without a site: counted as before, in no site
    client = Stream(daemon)
    web = client.updates()[-1]["web_now"]
    assert web == {
        "visitors": 4,
        "pageviews": 5,
        "sites": {  # most visitors first
            "a.example": {"visitors": 3, "pageviews": 4},
            "b.example": {"visitors": 1, "pageviews": 1},
        },
    }
    assert list(web["sites"]) == ["a.example", "b.example"]
    assert client.updates()[-1]["pageviews"] == 6  # the existing figures are unchanged

    # Once their minutes have passed, the sites are no longer "now".
    daemon.reactor.advance(RECENT_SPAN + 120)
    assert client.updates()[-1]["web_now"] == {"visitors": 0, "pageviews": 0, "sites": {}}
    client.leave()


def test_the_stream_names_at_most_the_sites_the_picker_lists() -> None:
    daemon = make_daemon()
    for index in range(SITES_NOW + 5):
        for visitor in range(1 + (index == 7)):  # one site with two visitors
            hit(daemon, f"s{index}.example", "/", CHROME.format(100 + visitor))
        if index >= SITES_NOW:  # the most viewed sites are not the most visited
            for _ in range(2):
                hit(daemon, f"s{index}.example", "/more", CHROME.format(100))
    settle(daemon)
    client = Stream(daemon)
    web = client.updates()[-1]["web_now"]
    assert len(web["sites"]) == SITES_NOW
    assert next(iter(web["sites"])) == "s7.example"
    assert web["visitors"] == SITES_NOW + 6  # every site counts in the total
    assert web["pageviews"] == SITES_NOW + 6 + 10
    # Each named site has its own pageviews, whether or not it is among the most viewed.
    assert {site: figures["pageviews"] for site, figures in web["sites"].items()} == {
        site: 1 + (site == "s7.example") + 2 * (int(site[1:].split(".")[0]) >= SITES_NOW)
        for site in web["sites"]
    }
    client.leave()


def test_without_the_web_metrics_the_stream_has_no_web_figures() -> None:
    daemon = make_daemon({"metrics": {"web": False}})
    hit(daemon, "a.example", "/", CHROME.format(120))
    settle(daemon)
    client = Stream(daemon)
    update = client.updates()[-1]
    assert update["web_now"] is None
    assert update["pageviews"] == 1
    client.leave()
    # And the web view's first query says the metrics are off (the page hides the view).
    reply = daemon.http.get("/api/v1/breakdown/visitors?by=site&limit=50&from=-7d")
    assert reply.status in (400, 404)


def test_the_page_names_the_configured_tracker_script_in_its_snippet() -> None:
    daemon = make_daemon()
    page = daemon.http.get("/dashboard").body
    assert b"{{" not in page  # every slot filled
    elements = Elements(page)
    assert elements.by_id["snippet"][1]["data-script-path"] == "/js/rta.js"
    assert b'src="/js/rta.js"&gt;' in page  # the snippet before the script fills in the origin
    assert elements.by_id["copy-snippet"][0] == "button"

    renamed = make_daemon({"tracker": {"script_path": "/assets/s.js"}})  # tracker.script_path
    page = renamed.http.get("/dashboard").body
    assert Elements(page).by_id["snippet"][1]["data-script-path"] == "/assets/s.js"

    app = DashboardApp(feed=feed_of(daemon), tracker_script_path='/t/"a<b>.js')
    served = HttpClient(app.app.resource(), contract=False).get("/dashboard").body
    # Escaped where it lands: an attribute and text.
    assert Elements(served).by_id["snippet"][1]["data-script-path"] == '/t/"a<b>.js'
    assert b'src="/t/&quot;a&lt;b&gt;.js"&gt;' in served


def test_the_queries_of_the_web_view_answer_as_the_script_expects() -> None:
    daemon = make_daemon()
    two_sites(daemon)

    def data(path: str) -> Any:
        reply = daemon.http.get(path)
        assert reply.status == 200, (path, reply.json)
        return reply.json["data"]

    # The picker: sites by visitors.
    sites = data("/api/v1/breakdown/visitors?by=site&limit=50&from=-7d")["items"]
    assert [(item["value"], item["count"]) for item in sites] == [
        ("a.example", 3),
        ("b.example", 1),
    ]
    # The figures of one site over the range, and of every site together.
    one = data("/api/v1/web?from=-1h&site=a.example")
    assert (one["visitors"], one["visits"], one["pageviews"]) == (3, 3, 4)
    every = data("/api/v1/web?from=-1h")
    assert (every["visitors"], every["pageviews"]) == (4, 5)
    # Every tab of the page names a per-site family and its label.
    page = daemon.http.get("/dashboard").body.decode()
    tabs = _TAB.findall(page)
    assert len(tabs) == 9
    lists = {
        family: {
            item["value"]: item["count"]
            for item in data(
                f"/api/v1/breakdown/{family}?by={by}&site=a.example&from=-1h&limit=10"
            )["items"]
        }
        for family, by in tabs
    }
    assert lists["sources"] == {"Google": 1, "Direct / None": 1, "blog.example.org": 1}
    assert lists["utm_campaigns"] == {"spring": 1}
    assert lists["top_pages"] == {"/": 2, "/pricing": 1, "/docs": 1}
    assert lists["browsers"]["Chrome"] == 2 and lists["devices"]["Desktop"] == 2
    # The other site's list holds only its own.
    b_pages = data("/api/v1/breakdown/top_pages?by=page&site=b.example&from=-1h&limit=10")
    assert [(item["value"], item["count"]) for item in b_pages["items"]] == [("/", 1)]
    # Visitors now, as the page asks for them when it polls instead of streaming.
    now = data("/api/v1/metrics/visitors?from=-5m&site=b.example")
    assert now["value"] == 1


def test_the_script_asks_for_the_web_queries_and_escapes_the_snippet() -> None:
    script = make_daemon().http.get("/dashboard/assets/dashboard.js").body.decode()
    assert "/api/v1/breakdown/visitors?by=site" in script and "/api/v1/web?from=" in script
    assert "window.location.origin + code.dataset.scriptPath" in script
    assert "navigator.clipboard.writeText" in script
    assert 'params.set("site", chosenSite)' in script  # the chosen site is in the hash
