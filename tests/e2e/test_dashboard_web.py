"""End to end: the dashboard's web analytics in headless Chromium (the system browser, driven
by Playwright) against a real ``twistd rta`` with a read key: Plausible hits for two sites
appear live, the site picker switches the figures and lists, and the snippet names the
daemon's own address."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from tests.e2e.test_daemon import start
from tests.e2e.test_dashboard_browser import (
    BROWSER_ARGS,
    CHROMIUM,
    VIEWS,
    WAIT_MS,
    bar_values,
    enter_key,
    has_bar,
    options,
    skip_reason,
    wait_for,
    wait_for_fields,
)
from tests.environment import requires

pytestmark = pytest.mark.e2e
READ_KEY = "dashboard-read-key-0123"
SITES_WAIT_MS = 30_000  # the page reads the site list again at most every 10 s

LINUX_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/121.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
MAC_FIREFOX = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:140.0) Gecko/20100101 Firefox/140.0"
# (site, path with query, User-Agent, referrer): the address is the same for all (the
# daemon does not trust X-Forwarded-For by default), so the User-Agent makes the visitor.
HITS = [
    ("a.example", "/?utm_campaign=spring", LINUX_CHROME, "https://www.google.com/"),
    ("a.example", "/pricing", LINUX_CHROME, None),  # the same visit's second page
    ("a.example", "/pricing", WINDOWS_CHROME, None),
    ("a.example", "/docs", IPHONE, "https://blog.example.org/post"),
    ("b.example", "/b-home", FIREFOX, None),
]
A_FIGURES = {
    "web_visitors": "3",
    "web_visits": "3",
    "web_pageviews": "4",
    "web_views_per_visit": "1.33",
    "web_bounce_rate": "67%",  # one visit of three saw a second page
    "web_visitors_now": "3",
}
B_FIGURES = {"web_visitors": "1", "web_visits": "1", "web_pageviews": "1", "web_visitors_now": "1"}


def post_hit(page: Any, base: str, site: str, path: str, agent: str, referrer: str | None) -> None:
    body: dict[str, Any] = {"n": "pageview", "u": f"https://{site}{path}", "d": site}
    if referrer is not None:
        body["r"] = referrer
    reply = page.request.post(
        base + "/api/event",
        data=json.dumps(body),
        headers={"Content-Type": "text/plain", "User-Agent": agent},
        timeout=WAIT_MS,
    )
    assert reply.status == 202, reply.text()


def tab_bars(page: Any, tab: str, value: str) -> dict[str, str]:
    """Select a card's tab (by its text) and read its bars once ``value`` shows."""
    button = page.locator("#web [role=tab]", has_text=tab).first
    button.click()
    list_id = button.get_attribute("aria-controls")
    family = button.get_attribute("data-family")
    wait_for(  # the tab's own answer, not the bars of the tab before
        page,
        """([id, family, value]) => document.querySelector(
             `#${id}[data-family="${family}"] li[data-value="${value}"]`)""",
        [list_id, family, value],
    )
    return bar_values(page, list_id)


def snippet(page: Any) -> str:
    return str(page.inner_text("#snippet"))


def sites_arrive_live(page: Any, base: str, seen: dict[str, Any]) -> None:
    """The page open before any hit: an empty state with the placeholder snippet; then the
    hits, and the sites come into the picker without a reload, the busiest shown."""
    page.wait_for_selector("#web:not([hidden]) #web-empty:not([hidden])", timeout=WAIT_MS)
    seen["empty_snippet"] = snippet(page)
    seen["picker_disabled"] = page.is_disabled("#site-picker")
    with page.expect_request(lambda r: "/api/v1/web?" in r.url, timeout=SITES_WAIT_MS) as asked:
        for hit in HITS:
            post_hit(page, base, *hit)
        page.wait_for_selector(
            '#site-picker option[value="b.example"]', state="attached", timeout=SITES_WAIT_MS
        )
    seen["web_authorization"] = asked.value.all_headers().get("authorization")
    seen["sites"] = options(page, "site-picker")
    wait_for_fields(page, A_FIGURES, WAIT_MS)
    seen["shown_site"] = page.input_value("#site-picker")
    seen["title"] = page.inner_text("#web-title")
    seen["a_snippet"] = snippet(page)
    seen["a_lists"] = {
        "sources": tab_bars(page, "Sources", "Google"),
        "campaigns": tab_bars(page, "Campaigns", "spring"),
        "top_pages": tab_bars(page, "Top pages", "/pricing"),
        "entry_pages": tab_bars(page, "Entry pages", "/docs"),
        "browsers": tab_bars(page, "Browsers", "Chrome"),
        "os": tab_bars(page, "OS", "iOS"),
        "devices": tab_bars(page, "Devices", "Mobile"),
    }
    page.locator("#web [role=tab]", has_text="Sources").first.click()
    page.locator("#web [role=tab]", has_text="Top pages").first.click()


def the_picker_switches_site(page: Any, base: str, seen: dict[str, Any]) -> None:
    """Pick the other site: its figures and lists only; a new visitor of it shows live."""
    page.select_option("#site-picker", "b.example")
    wait_for_fields(page, B_FIGURES, WAIT_MS)
    wait_for(page, has_bar("bars-web-pages", "/b-home"))
    seen["b_pages"] = bar_values(page, "bars-web-pages")
    seen["b_sources"] = bar_values(page, "bars-web-sources")
    seen["b_snippet"] = snippet(page)
    seen["hash"] = page.evaluate("() => location.hash")
    post_hit(page, base, "b.example", "/b-about", MAC_FIREFOX, None)
    wait_for_fields(
        page, {"web_visitors_now": "2", "web_visitors": "2", "web_pageviews": "2"}, WAIT_MS
    )
    page.select_option("#site-picker", "")  # every site together
    wait_for_fields(page, {"web_visitors": "5", "web_pageviews": "6"}, WAIT_MS)
    seen["all_title"] = page.inner_text("#web-title")
    page.select_option("#site-picker", "b.example")
    wait_for_fields(page, {"web_visitors": "2"}, WAIT_MS)


def copy_the_snippet(page: Any, seen: dict[str, Any]) -> None:
    page.click("#copy-snippet")
    wait_for(page, "() => document.getElementById('copy-status').textContent.length > 0")
    seen["copy_status"] = page.inner_text("#copy-status")
    seen["clipboard"] = page.evaluate("() => navigator.clipboard.readText()")


def drive_browser(base: str, shots: Path) -> dict[str, Any]:
    """Runs in a thread: Playwright's sync API has its own event loop."""
    from playwright.sync_api import sync_playwright

    seen: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            for index, (name, viewport, scheme) in enumerate(VIEWS):
                context = browser.new_context(
                    viewport=viewport, color_scheme=scheme, locale="en-US", timezone_id="UTC"
                )
                context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
                view: dict[str, Any] = {"errors": errors}
                # The second view opens with a site in the hash, as a shared link would.
                page.goto(base + "/dashboard" + ("#site=b.example" if index else ""))
                enter_key(page)
                if index == 0:
                    sites_arrive_live(page, base, view)
                    the_picker_switches_site(page, base, view)
                    copy_the_snippet(page, view)
                else:
                    wait_for_fields(page, {"web_visitors": "2", "web_visitors_now": "2"}, WAIT_MS)
                    view["shown_site"] = page.input_value("#site-picker")
                    wait_for(page, has_bar("bars-web-pages", "/b-about"))
                    view["b_pages"] = bar_values(page, "bars-web-pages")
                view["overflows"] = page.evaluate(
                    "() => document.documentElement.scrollWidth > window.innerWidth"
                )
                shot = shots / f"dashboard-web-{name}.png"
                page.screenshot(path=str(shot), full_page=True)
                view["screenshot"] = shot
                seen[name] = view
                context.close()
        finally:
            browser.close()
    return seen


@requires(skip_reason() is None, skip_reason() or "")
@pytest_twisted.ensureDeferred
async def test_web_analytics_per_site_live_with_the_snippet(tmp_path: Path) -> None:
    config = tmp_path / "rta.yaml"
    config.write_text(
        json.dumps({"auth": {"keys": [{"name": "dash", "key": READ_KEY, "scopes": ["read"]}]}})
    )  # JSON is YAML
    daemon, base = await start(tmp_path, "-c", str(config))
    try:
        seen = await threads.deferToThread(drive_browser, base, tmp_path).addTimeout(180, reactor)
    finally:
        await daemon.terminate()
    for name, _, _ in VIEWS:
        assert seen[name]["errors"] == [], seen[name]
        assert not seen[name]["overflows"], f"{name}: the page scrolls sideways"
        assert seen[name]["screenshot"].stat().st_size > 10_000
    desktop = seen["desktop-light"]
    assert desktop["empty_snippet"] == (
        f'<script defer data-domain="example.com" src="{base}/js/rta.js"></script>'
    )
    assert desktop["picker_disabled"]
    assert desktop["web_authorization"] == f"Bearer {READ_KEY}"
    assert desktop["sites"] == ["", "a.example", "b.example"]  # all, then by visitors
    assert desktop["shown_site"] == "a.example"
    assert "a.example" in desktop["title"]
    assert desktop["a_snippet"] == (
        f'<script defer data-domain="a.example" src="{base}/js/rta.js"></script>'
    )
    lists = desktop["a_lists"]
    assert lists["sources"] == {"Google": "1", "Direct / None": "1", "blog.example.org": "1"}
    assert lists["campaigns"] == {"spring": "1"}
    assert lists["top_pages"] == {"/pricing": "2", "/": "1", "/docs": "1"}
    assert lists["entry_pages"] == {"/": "1", "/pricing": "1", "/docs": "1"}
    assert lists["browsers"] == {"Chrome": "2", "Mobile Safari": "1"}
    assert lists["os"] == {"Linux": "1", "Windows": "1", "iOS": "1"}
    assert lists["devices"] == {"Desktop": "2", "Mobile": "1"}
    assert desktop["b_pages"] == {"/b-home": "1"}
    assert desktop["b_sources"] == {"Direct / None": "1"}
    assert 'data-domain="b.example"' in desktop["b_snippet"]
    assert "site=b.example" in desktop["hash"]
    assert "all sites" in desktop["all_title"]
    assert desktop["copy_status"] == "Copied."
    assert desktop["clipboard"] == desktop["b_snippet"]
    phone = seen["phone-dark"]
    assert phone["shown_site"] == "b.example"
    assert phone["b_pages"] == {"/b-home": "1", "/b-about": "1"}
    print(f"screenshots: {tmp_path}")
