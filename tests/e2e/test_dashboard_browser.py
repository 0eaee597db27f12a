"""End to end: the dashboard in headless Chromium (the system browser, driven by Playwright)
against a real ``twistd rta`` with read keys and a labelled metric rule configured."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from tests.e2e.test_daemon import start
from tests.environment import requires

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READ_KEY = "dashboard-read-key-0123"
INGEST_KEY = "dashboard-ingest-key-01"
WAIT_MS = 20_000  # each wait for the page; the stream pushes every 2 s
SLOW_WAIT_MS = 40_000  # the day/hour uniques are recomputed every 15 s
EMPTY_WAIT_MS = 10_000  # less than the 15 s between refreshes of the 1h range
VIEWS = [  # (name, viewport, color scheme)
    ("desktop-light", {"width": 1280, "height": 900}, "light"),
    ("phone-dark", {"width": 390, "height": 844}, "dark"),
]
EVENTS = [
    {"type": "pageview", "user_id": "u1", "session_id": "s1", "properties": {"page": "/home"}},
    {"type": "pageview", "user_id": "u2", "session_id": "s2", "properties": {"page": "/home"}},
    {"type": "pageview", "user_id": "u3", "session_id": "s3", "properties": {"page": "/pricing"}},
    {"type": "click", "user_id": "u1", "session_id": "s1", "properties": {"element": "buy"}},
    {"type": "click", "user_id": "u2", "session_id": "s2", "properties": {"element": "buy"}},
    {"type": "purchase", "user_id": "u1", "session_id": "s1", "properties": {"amount": 19.5}},
    {"type": "purchase", "user_id": "u2", "session_id": "s2", "properties": {"amount": 30}},
    # The rule's series: signups:country=de,plan=pro and so on ("," and "=" escaped).
    {"type": "signup", "user_id": "u1", "properties": {"plan": "pro", "country": "de"}},
    {"type": "signup", "user_id": "u2", "properties": {"plan": "pro", "country": "x=1,y"}},
    {"type": "signup", "user_id": "u3", "properties": {"plan": "free", "country": "de"}},
]
RULES = [
    {
        "name": "signups",
        "when": {"type": "signup"},
        "count": True,
        "labels": {"plan": "properties.plan", "country": "properties.country"},
    }
]
EXPECTED = {
    "total_events": "10",
    "pageviews": "3",
    "clicks": "2",
    "purchases": "2",
    "revenue": "49.50",
    "active_users_5m": "3",
    "unique_users": "3",
}

try:
    from playwright.sync_api import Page, Route, sync_playwright
except ImportError:  # the skip below says why
    sync_playwright = None


def skip_reason() -> str | None:
    if sync_playwright is None:
        return "playwright is not installed (pip install playwright; never `playwright install`)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    return None


def field(page: Page, name: str) -> str:
    return page.locator(f'[data-field="{name}"]').first.inner_text()


def wait_for_fields(page: Page, expected: dict[str, str], timeout: float) -> None:
    page.wait_for_function(
        """(expected) => Object.entries(expected).every(([name, text]) =>
             document.querySelector(`[data-field="${name}"]`).textContent.trim() === text)""",
        arg=expected,
        timeout=timeout,
    )


def wait_for(page: Page, script: str, arg: Any = None, timeout: float = WAIT_MS) -> None:
    page.wait_for_function(script, arg=arg, timeout=timeout)


def bar_values(page: Page, list_id: str) -> dict[str, str]:
    """The value -> shown count of each bar of a bar list."""
    return dict(
        page.evaluate(
            """(id) => [...document.querySelectorAll(`#${id} li[data-value]`)].map(
                 (row) => [row.dataset.value, row.querySelector('.count').textContent])""",
            list_id,
        )
    )


def options(page: Page, select_id: str) -> list[str]:
    return list(
        page.evaluate(
            "(id) => [...document.getElementById(id).options].map((o) => o.value)", select_id
        )
    )


def two_a_page(listed: list[str]) -> Callable[[Route], None]:
    """A route handler: the metric list two names a page (the page must follow meta.next)."""

    def handle(route: Route) -> None:
        url = re.sub(r"limit=\d+", "limit=2", route.request.url)
        listed.append(url)
        route.continue_(url=url)

    return handle


def check_empty_daemon(page: Page) -> None:
    """Before any event: nothing to pick but total_events, and the breakdown says why as soon
    as the metric list is read (sooner than the 15 s refresh of the 1h range)."""
    wait_for(
        page,
        """() => document.querySelector('#bars-breakdown li.empty')
             .textContent.includes('no labelled metric yet')""",
        timeout=EMPTY_WAIT_MS,
    )
    assert options(page, "chart-metric") == ["total_events"]
    assert page.is_disabled("#breakdown-family")


def pick_a_metric_for_the_chart(page: Page, seen: dict[str, Any]) -> None:
    """Choose the rule's counter: the chart asks for its series (with the read key) and
    draws its 3 signups, not the 10 events; the hash remembers the choice."""
    # The page reads the metric list again when the totals change, at most every 10 s.
    page.wait_for_selector(
        '#chart-metric option[value="signups"]', state="attached", timeout=SLOW_WAIT_MS
    )
    chart_options = options(page, "chart-metric")
    with page.expect_request(
        lambda request: "/api/v1/metrics/signups/series?" in request.url, timeout=WAIT_MS
    ) as asked:
        page.select_option("#chart-metric", "signups")
    seen["series_authorization"] = asked.value.all_headers().get("authorization")
    wait_for(
        page,
        """() => document.getElementById('chart').dataset.metric === 'signups'
             && document.querySelectorAll('#chart rect.bar').length > 0""",
    )
    seen["chart_options"] = chart_options
    seen["chart_title"] = page.inner_text("#chart-title")
    seen["chart_sum"] = page.evaluate(
        "() => [...document.querySelectorAll('#chart rect.bar')]"
        ".reduce((sum, bar) => sum + Number(bar.dataset.value), 0)"
    )


def has_bar(list_id: str, value: str) -> str:
    return f"() => document.querySelector('#{list_id} li[data-value={json.dumps(value)}]')"


def break_a_family_down(page: Page, seen: dict[str, Any]) -> None:
    """Choose a family of one label (no label to pick), then the rule's family and each of
    its labels: the bars are that label's values."""
    page.wait_for_selector('#breakdown-family option[value="signups"]', state="attached")
    seen["families"] = options(page, "breakdown-family")
    page.select_option("#breakdown-family", "page_views")
    wait_for(page, has_bar("bars-breakdown", "/home"))
    seen["by_page"] = bar_values(page, "bars-breakdown")
    seen["by_page_hides_labels"] = page.is_hidden("#breakdown-by-picker")
    page.select_option("#breakdown-family", "signups")
    page.wait_for_selector("#breakdown-by-picker:not([hidden])")
    seen["labels"] = options(page, "breakdown-by")
    wait_for(page, has_bar("bars-breakdown", "x=1,y"))
    seen["by_country"] = bar_values(page, "bars-breakdown")
    page.select_option("#breakdown-by", "plan")
    wait_for(page, has_bar("bars-breakdown", "free"))
    seen["by_plan"] = bar_values(page, "bars-breakdown")
    seen["hash"] = page.evaluate("() => location.hash")


def choices_survive_a_reload(page: Page, seen: dict[str, Any]) -> None:
    page.reload(timeout=WAIT_MS)  # the key stays in the tab's session storage
    wait_for(
        page,
        """() => document.getElementById('chart').dataset.metric === 'signups'
             && document.getElementById('breakdown-by').value === 'plan'
             && document.querySelector('#bars-breakdown li[data-value="pro"]')""",
    )
    seen["reloaded"] = {
        "metric": page.input_value("#chart-metric"),
        "family": page.input_value("#breakdown-family"),
        "by_plan": bar_values(page, "bars-breakdown"),
    }


def breakdown_errors_are_told(page: Page, seen: dict[str, Any]) -> None:
    """A family no node has (404) and a base the API refuses (400), from a typed hash."""
    cases = (("missing", "breakdown=nope", "nope"), ("invalid", "breakdown=no%20pe", "no pe"))
    for name, hash_, base in cases:
        page.evaluate("(hash) => { location.hash = hash; }", hash_)
        wait_for(
            page,
            """(base) => { const error = document.querySelector('#bars-breakdown li.error');
                           return error && error.textContent.includes(base); }""",
            base,
        )
        seen[name] = page.inner_text("#bars-breakdown li.error")
    page.evaluate("() => { location.hash = 'metric=signups&breakdown=signups&by=plan'; }")
    wait_for(page, has_bar("bars-breakdown", "pro"))


def enter_key(page: Page) -> None:
    page.wait_for_selector("#key-form:not([hidden])", timeout=WAIT_MS)
    assert page.inner_text("#connection") == "API key needed"
    page.fill("#key-input", READ_KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_function(
        "() => document.getElementById('connection').dataset.state === 'live'", timeout=WAIT_MS
    )


def drive_browser(base: str, shots: Path) -> dict[str, Any]:
    """Runs in a thread: Playwright's sync API has its own event loop."""
    seen: dict[str, Any] = {}
    assert sync_playwright is not None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            for index, (name, viewport, scheme) in enumerate(VIEWS):
                context = browser.new_context(
                    viewport=viewport, color_scheme=scheme, locale="en-US", timezone_id="UTC"
                )
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
                listed: list[str] = []
                if index == 1:
                    page.route(re.compile(r"/api/v1/metrics\?"), two_a_page(listed))
                page.goto(base + "/dashboard", timeout=WAIT_MS)
                enter_key(page)
                assert page.evaluate("() => sessionStorage.getItem('rta.apiKey')") == READ_KEY
                if index == 0:
                    wait_for_fields(page, {"total_events": "0"}, WAIT_MS)
                    check_empty_daemon(page)
                    reply = page.request.post(
                        base + "/api/v1/events/batch",
                        data=json.dumps(EVENTS),
                        headers={
                            "Authorization": f"Bearer {INGEST_KEY}",
                            "Content-Type": "application/json",
                        },
                        timeout=WAIT_MS,
                    )
                    assert reply.status == 202, reply.text()
                wait_for_fields(page, EXPECTED, WAIT_MS)
                wait_for_fields(page, {"unique_users_today": "3"}, SLOW_WAIT_MS)
                page.wait_for_function(
                    "() => document.querySelector('#bars-page_views li[data-value=\"/home\"]')"
                    " && document.querySelectorAll('#chart rect.bar').length > 0",
                    timeout=WAIT_MS,
                )
                seen[name] = {
                    "top_page": page.inner_text("#bars-page_views li:first-child"),
                    "ready": page.inner_text("#ready"),
                    "connection": page.inner_text("#connection"),
                    "p99": field(page, "p99"),
                    "background": page.evaluate(
                        "() => getComputedStyle(document.body).backgroundColor"
                    ),
                    "overflows": page.evaluate(
                        "() => document.documentElement.scrollWidth > window.innerWidth"
                    ),
                    "errors": errors,
                }
                if index == 0:
                    pick_a_metric_for_the_chart(page, seen[name])
                    break_a_family_down(page, seen[name])
                    choices_survive_a_reload(page, seen[name])
                    breakdown_errors_are_told(page, seen[name])
                else:
                    # No choice in the hash: the first family the other cards do not show,
                    # by its first label, listed by paging through the metrics.
                    wait_for(page, has_bar("bars-breakdown", "de"))
                    seen[name]["default_breakdown"] = (
                        page.input_value("#breakdown-family"),
                        page.input_value("#breakdown-by"),
                        bar_values(page, "bars-breakdown"),
                    )
                    seen[name]["pages"] = listed
                page.click("[data-range='24h']")
                page.wait_for_function(
                    "() => document.getElementById('chart-unit').textContent === 'hour'",
                    timeout=WAIT_MS,
                )
                page.click("[data-range='1h']")
                page.wait_for_function(
                    "() => document.getElementById('chart-unit').textContent === 'minute'",
                    timeout=WAIT_MS,
                )
                shot = shots / f"dashboard-{name}.png"
                page.screenshot(path=str(shot), full_page=True)
                seen[name]["screenshot"] = shot
                context.close()
        finally:
            browser.close()
    return seen


@requires(skip_reason() is None, skip_reason() or "")
@pytest_twisted.ensureDeferred
async def test_dashboard_shows_live_numbers_on_phone_and_desktop_in_light_and_dark(
    tmp_path: Path,
) -> None:
    config = tmp_path / "rta.yaml"
    config.write_text(
        json.dumps(
            {
                "auth": {
                    "keys": [
                        {"name": "dashboard", "key": READ_KEY, "scopes": ["read"]},
                        {"name": "site", "key": INGEST_KEY, "scopes": ["ingest"]},
                    ]
                },
                "metrics": {"rules": RULES},
            }
        )
    )  # JSON is YAML
    daemon, base = await start(tmp_path, "-c", str(config))
    try:
        seen = await threads.deferToThread(drive_browser, base, tmp_path).addTimeout(180, reactor)
    finally:
        await daemon.terminate()
    for name, _, scheme in VIEWS:
        view = seen[name]
        assert view["errors"] == [], view
        assert view["connection"] == "live"  # the numbers came over the stream
        assert view["ready"] == "ready"
        assert view["top_page"].split() == ["/home", "2"]
        assert view["p99"] == "30.00"
        assert not view["overflows"], f"{name}: the page scrolls sideways"
        dark = view["background"] == "rgb(15, 18, 22)"
        assert dark == (scheme == "dark"), view["background"]
        assert view["screenshot"].stat().st_size > 10_000
    desktop = seen["desktop-light"]
    # The chart picker: every counter, a labelled family once by its base, no series.
    assert desktop["chart_options"] == [
        "clicks",
        "page_views",
        "pageviews",
        "purchases",
        "revenue",
        "signups",
        "total_events",
    ]
    assert desktop["series_authorization"] == f"Bearer {READ_KEY}"
    assert desktop["chart_title"].lower() == "signups"
    assert desktop["chart_sum"] == 3  # the signups, not the 10 events
    assert desktop["families"] == ["clicks", "events_by_type", "page_views", "signups"]
    assert desktop["by_page"] == {"/home": "2", "/pricing": "1"}
    assert desktop["by_page_hides_labels"]
    assert desktop["labels"] == ["country", "plan"]
    assert desktop["by_country"] == {"de": "2", "x=1,y": "1"}
    assert desktop["by_plan"] == {"pro": "2", "free": "1"}
    assert "metric=signups" in desktop["hash"] and "breakdown=signups" in desktop["hash"]
    assert "by=plan" in desktop["hash"]
    assert desktop["reloaded"] == {
        "metric": "signups",
        "family": "signups",
        "by_plan": {"pro": "2", "free": "1"},
    }
    assert "nope is not a metric family" in desktop["missing"]
    assert "cannot break no pe down" in desktop["invalid"]
    phone = seen["phone-dark"]
    assert phone["default_breakdown"] == ("signups", "country", {"de": "2", "x=1,y": "1"})
    assert any("after=" in url for url in phone["pages"]), phone["pages"]
    print(f"screenshots: {tmp_path}")
