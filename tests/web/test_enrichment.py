"""Browser events' enrichment: the source (UTM and ref parameters, then the referrer's
site, a same-site referrer being direct), campaign parameters, browser, OS and device."""

from __future__ import annotations

import pytest

from twisted_rta.events.model import Event
from twisted_rta.web.browser import enriched
from twisted_rta.web.enrichment import DIRECT, Enricher
from twisted_rta.web.visitors import VisitStep

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Mobile Safari/537.36"
)
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36"
)
WINDOWS_EDGE = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"
)
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"


@pytest.mark.parametrize(
    ("referrer", "source"),
    [
        ("https://www.google.com/", "Google"),
        ("https://www.google.co.uk/search?q=x", "Google"),
        ("https://google.de/", "Google"),
        ("https://duckduckgo.com/", "DuckDuckGo"),
        ("https://t.co/abc", "Twitter"),
        ("https://l.facebook.com/l.php?u=x", "Facebook"),
        ("https://news.ycombinator.com/item?id=1", "Hacker News"),
        ("https://old.reddit.com/r/python", "Reddit"),
        ("https://blog.example.org/post", "blog.example.org"),
        ("https://www.partner.io/", "partner.io"),
        ("https://example.com/other", DIRECT),  # the same site
        ("https://docs.example.com/", DIRECT),  # a subdomain of the site
        (None, DIRECT),
        ("", DIRECT),
        ("not a url", DIRECT),
        ("http://[::1", DIRECT),
    ],
)
def test_the_referrer_names_the_source(referrer: str | None, source: str) -> None:
    found = Enricher().properties("https://example.com/", referrer, "example.com", FIREFOX_LINUX)
    assert found["source"] == source


def test_utm_source_then_source_then_ref_win_over_the_referrer() -> None:
    enricher = Enricher()
    url = "https://example.com/p?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
    found = enricher.properties(url, "https://www.google.com/", "example.com", FIREFOX_LINUX)
    assert found["source"] == "newsletter"
    assert (found["utm_medium"], found["utm_campaign"]) == ("email", "spring")
    assert "utm_term" not in found and "utm_content" not in found
    ref = enricher.properties(
        "https://example.com/?ref=producthunt", "https://t.co/x", "example.com", ""
    )
    assert ref["source"] == "producthunt"
    source = enricher.properties("https://example.com/?source=hn&ref=x", None, "example.com", "")
    assert source["source"] == "hn"


@pytest.mark.parametrize(
    ("agent", "browser", "system", "device"),
    [
        (IPHONE, "Mobile Safari", "iOS", "Mobile"),
        (IPAD, "Mobile Safari", "iOS", "Tablet"),
        (ANDROID_PHONE, "Chrome Mobile", "Android", "Mobile"),
        (ANDROID_TABLET, "Chrome", "Android", "Tablet"),
        (WINDOWS_EDGE, "Edge", "Windows", "Desktop"),
        (FIREFOX_LINUX, "Firefox", "Linux", "Desktop"),
        ("", "Other", "Other", "Desktop"),
    ],
)
def test_the_user_agent_gives_browser_os_and_device(
    agent: str, browser: str, system: str, device: str
) -> None:
    found = Enricher().properties("https://example.com/", None, "example.com", agent)
    assert (found["browser"], found["os"], found["device"]) == (browser, system, device)


def test_answers_are_cached_per_user_agent() -> None:
    enricher = Enricher(cache_size=2)
    for _ in range(3):
        enricher.properties("https://example.com/", None, "example.com", IPHONE)
    info = enricher._client.cache_info()  # type: ignore[attr-defined]
    assert (info.hits, info.misses, info.maxsize) == (2, 1, 2)


def test_enrichment_wins_and_the_limit_drops_custom_props_first() -> None:
    event = Event(
        "e",
        "pageview",
        1.0,
        "v",
        None,
        {"page": "/", "site": "a.com", "source": "spoofed", "plan": "pro", "team": "x"},
    )
    found = {"source": "Google", "browser": "Firefox", "os": "Linux", "device": "Desktop"}
    entry = VisitStep("visit-1", None, 1)
    roomy = enriched(event, found, 64, frozenset({"page", "site"}), entry)
    assert roomy.properties["source"] == "Google" and roomy.session_id == "visit-1"
    assert set(roomy.properties) == {
        "page",
        "site",
        "plan",
        "team",
        "source",
        "browser",
        "os",
        "device",
        "entry",
        "visit_pageview",
    }
    tight = enriched(event, found, 7, frozenset({"page", "site"}), entry)
    # 10 keys for 7: the two custom props go, then the last enrichment key; never the
    # visit's keys.
    assert set(tight.properties) == {
        "page",
        "site",
        "source",
        "browser",
        "os",
        "entry",
        "visit_pageview",
    }


def test_the_visit_keys_say_where_an_event_stands_in_its_visit() -> None:
    event = Event("e", "signup", 1.0, "v", None, {"site": "a.com", "entry": "spoofed"})
    later = enriched(event, {}, 64, frozenset({"site"}), VisitStep("visit-1", 42.5, None))
    assert later.properties == {"site": "a.com", "visit_seconds": 42.5}
