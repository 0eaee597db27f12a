"""End to end: the dashboard in headless Chromium (the system browser, driven by Playwright)
against a real ``twistd rta`` with read keys configured."""

from __future__ import annotations

import json
import os
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
]
EXPECTED = {
    "total_events": "7",
    "pageviews": "3",
    "clicks": "2",
    "purchases": "2",
    "revenue": "49.50",
    "active_users_5m": "3",
    "unique_users": "3",
}

try:
    from playwright.sync_api import Page, sync_playwright
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
                page.goto(base + "/dashboard", timeout=WAIT_MS)
                enter_key(page)
                assert page.evaluate("() => sessionStorage.getItem('rta.apiKey')") == READ_KEY
                if index == 0:
                    wait_for_fields(page, {"total_events": "0"}, WAIT_MS)
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
                }
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
    print(f"screenshots: {tmp_path}")
