"""End to end: the first-party tracker (and Plausible's published one) in headless Chromium,
on pages of other origins, posting to a real ``twistd rta``; what they sent is read back
through the query API.

The pages are served by Playwright itself (``context.route``) under made-up host names, so
they are another origin than the daemon and not ``localhost`` (which the trackers skip).
HeadlessChrome is on the crawler list the browser endpoint drops: the browser says it is an
ordinary desktop Chrome. Automation (``navigator.webdriver``) is allowed by the page's opt-in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from tests.e2e.test_daemon import get_json, start
from tests.e2e.test_dashboard_browser import BROWSER_ARGS, CHROMIUM, skip_reason
from tests.environment import requires

try:
    from playwright.sync_api import BrowserContext, Page, Route, sync_playwright
except ImportError:  # skip_reason says why
    sync_playwright = None

pytestmark = pytest.mark.e2e

# The pages are "public" (routed by Playwright) and the daemon is on loopback: Chromium's
# Private/Local Network Access would block their requests to it. A real deployment has a
# public daemon; here the check is turned off.
TRACKER_BROWSER_ARGS = [
    *BROWSER_ARGS,
    "--disable-features=BlockInsecurePrivateNetworkRequests,LocalNetworkAccessChecks",
]
DESKTOP_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/140.0.0.0 Safari/537.36"
)
WAIT_MS = 20_000
POLLS = 200  # attempts to see the events counted, WAIT_MS / 100 ms apart at most
SCRIPT_PATH, ENDPOINT_PATH = "/assets/s.js", "/in/collect"  # renamed: the e2e daemon's
OUTBOUND = "https://elsewhere.test/landing"
# Set by .ci/run: Plausible's published tracker (npm @plausible-analytics/tracker, MIT),
# fetched at test time into a cache outside the repository; never committed.
PLAUSIBLE_TRACKER = os.environ.get("RTA_PLAUSIBLE_TRACKER", "")
RULES = [
    {
        "name": "t_pages",
        "when": {"type": "pageview"},
        "count": True,
        "labels": {"site": "properties.site", "page": "properties.page"},
    },
    {
        "name": "t_signups",
        "when": {"type": "signup"},
        "count": True,
        "labels": {"site": "properties.site", "plan": "properties.plan"},
    },
    {"name": "t_outbound", "when": {"type": "outbound"}, "count": True,
     "labels": {"url": "properties.url"}},
]  # fmt: skip


def daemon_config(tmp_path: Path, tracker: dict[str, str] | None = None) -> Path:
    config = tmp_path / "rta.yaml"
    raw: dict[str, Any] = {
        "store": {"url": "memory:"},
        "journal": {"enabled": False},
        "metrics": {"rules": RULES},
        "tracker": tracker or {},
    }
    config.write_text(json.dumps(raw))  # JSON is YAML
    return config


def html_page(head: str, body: str = "") -> str:
    return f"<!doctype html><html><head><title>t</title>{head}</head><body>{body}</body></html>"


def serve(pages: dict[str, str]) -> Callable[[Route], None]:
    """A route handler: each page by its URL, Plausible's script at /plausible.js of any
    origin; anything else is a 404."""

    def handle(route: Route) -> None:
        url = route.request.url
        page = pages.get(url)
        if url.endswith("/plausible.js") and PLAUSIBLE_TRACKER:
            route.fulfill(path=PLAUSIBLE_TRACKER, content_type="text/javascript")
        elif page is not None:
            route.fulfill(body=page, content_type="text/html; charset=utf-8")
        else:
            route.fulfill(status=404, body="not here")

    return handle


def new_context(browser: Any, pages: dict[str, str]) -> BrowserContext:
    context = browser.new_context(user_agent=DESKTOP_CHROME)
    context.route("http://*.test/**", serve(pages))
    context.route("https://*.test/**", serve(pages))
    return context


def open_page(context: BrowserContext, url: str, ready: str) -> tuple[Page, list[str]]:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url, timeout=WAIT_MS)
    page.wait_for_function(ready, timeout=WAIT_MS)
    return page, errors


def wait_until_counted(context: BrowserContext, base: str, events: int) -> int:
    """Poll the daemon from the browser's thread until ``events`` are counted (keepalive
    requests may still be on their way when the page has moved on)."""
    counted = -1
    for _ in range(POLLS):
        reply = context.request.get(base + "/api/v1/stats", timeout=WAIT_MS)
        counted = int(reply.json()["data"]["total_events"])
        if counted >= events:
            return counted
        context.pages[0].wait_for_timeout(100)
    return counted


async def metrics(base: str) -> dict[str, Any]:
    status, body = await get_json(base + "/api/v1/metrics?limit=1000")
    assert status == 200, body
    return {name: view["value"] for name, view in body["data"].items()}


# -- our tracker: every feature, on renamed paths -----------------------------------------------


def our_page(base: str) -> str:
    return html_page(
        # The stub queues a call made before the script has loaded.
        "<script>window.rtaAllowAutomation = true;"
        "window.rta = window.rta || function () {"
        " (window.rta.q = window.rta.q || []).push(arguments) };"
        "rta('signup', {props: {plan: 'free'}});</script>"
        f'<script defer data-domain="ours.test" data-hash data-outbound '
        f'src="{base}{SCRIPT_PATH}"></script>',
        f'<a id="out" href="{OUTBOUND}">elsewhere</a> <a id="in" href="/next">here</a>',
    )


def drive_our_tracker(base: str) -> dict[str, Any]:
    """Runs in a thread: Playwright's sync API has its own event loop."""
    assert sync_playwright is not None
    seen: dict[str, Any] = {}
    requests: list[str] = []  # the URL of every request the pages made
    responses: list[tuple[str, int]] = []  # (url, status) of those answered while watched
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=TRACKER_BROWSER_ARGS)
        try:
            pages = {"http://site.test/": our_page(base), OUTBOUND: html_page("", "landed")}
            context = new_context(browser, pages)
            context.on("request", lambda request: requests.append(request.url))
            context.on("response", lambda answer: responses.append((answer.url, answer.status)))
            page, errors = open_page(context, "http://site.test/", "() => window.rta.loaded")
            page.evaluate("() => history.pushState({}, '', '/next')")
            page.evaluate("() => history.replaceState({}, '', '/next?tab=2')")  # same page
            page.evaluate("() => { location.hash = '#/settings'; }")
            page.evaluate("() => rta('signup', {props: {plan: 'pro'}})")
            seen["storage"] = page.evaluate(
                "() => [document.cookie, localStorage.length, sessionStorage.length]"
            )
            page.click("#out")
            page.wait_for_url(OUTBOUND, timeout=WAIT_MS)
            # /, /next, /next#/settings; signups free (queued) and pro; the outbound click.
            seen["counted"] = wait_until_counted(context, base, 6)
            seen["cookies"] = context.cookies()
            seen["errors"] = errors
            context.close()
        finally:
            browser.close()
    seen["requests"], seen["responses"] = requests, responses
    return seen


@requires(skip_reason() is None, skip_reason() or "")
@pytest_twisted.ensureDeferred
async def test_our_tracker_counts_pages_navigation_events_and_clicks_without_storage(
    tmp_path: Path,
) -> None:
    config = daemon_config(tmp_path, {"script_path": SCRIPT_PATH, "endpoint_path": ENDPOINT_PATH})
    daemon, base = await start(tmp_path, "-c", str(config))
    try:
        seen = await threads.deferToThread(drive_our_tracker, base).addTimeout(120, reactor)
        values = await metrics(base)
    finally:
        await daemon.terminate()
    assert seen["errors"] == []
    assert seen["counted"] == 6, seen
    # The script from its renamed path; every event to the renamed endpoint (the outbound
    # click's answer arrives after its page is gone), taken.
    assert (base + SCRIPT_PATH, 200) in seen["responses"]
    to_daemon = [url for url in seen["requests"] if url.startswith(base + "/")]
    assert to_daemon == [base + SCRIPT_PATH] + [base + ENDPOINT_PATH] * 6, to_daemon
    assert {status for url, status in seen["responses"] if url == base + ENDPOINT_PATH} == {202}
    # Three pageviews: the load, pushState (not the replaceState), the hash route.
    assert values["events_by_type:pageview"] == 3
    for page in ("/", "/next", "/next#/settings"):
        assert values[f"t_pages:page={page},site=ours.test"] == 1, page
    assert values["t_signups:plan=free,site=ours.test"] == 1  # queued by the stub
    assert values["t_signups:plan=pro,site=ours.test"] == 1
    assert values[f"t_outbound:{OUTBOUND}"] == 1
    assert values["total_events"] == 6
    # No cookie and no storage written, by the page's origin or the daemon's.
    assert seen["storage"] == ["", 0, 0]
    assert seen["cookies"] == []


# -- Plausible's published tracker counts as ours (default paths) -------------------------------


def comparison_pages(base: str) -> dict[str, str]:
    """The same page twice: ours (its domain: the page's host) and Plausible's."""
    ours = html_page(
        f'<script>window.rtaAllowAutomation = true;</script><script defer src="{base}/js/rta.js">'
        "</script><script>window.addEventListener('load', () => {"
        " window.track = (name, options) => rta(name, options); });</script>"
    )
    plausible = html_page(
        "<script>window.__plausible = true;</script>"  # its opt-in under automation
        '<script type="module">import { init, track } from "/plausible.js";'
        f'init({{domain: "plausible.test", endpoint: "{base}/api/event"}});'
        "window.track = track;</script>"
    )
    return {"http://ours.test/": ours, "http://plausible.test/": plausible}


def drive_both_trackers(base: str) -> dict[str, Any]:
    assert sync_playwright is not None
    seen: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=TRACKER_BROWSER_ARGS)
        try:
            context = new_context(browser, comparison_pages(base))
            for host in ("ours.test", "plausible.test"):
                page, errors = open_page(context, f"http://{host}/", "() => window.track")
                page.evaluate("() => history.pushState({}, '', '/next')")
                page.evaluate("() => track('signup', {props: {plan: 'pro'}})")
                seen[host] = errors
            # Per tracker: 2 pageviews and a signup (Plausible's engagement events are not
            # counted).
            seen["counted"] = wait_until_counted(context, base, 6)
            context.close()
        finally:
            browser.close()
    return seen


@requires(skip_reason() is None, skip_reason() or "")
@requires(
    os.path.isfile(PLAUSIBLE_TRACKER),
    "RTA_PLAUSIBLE_TRACKER names no file: Plausible's tracker from the npm registry "
    "(.ci/run fetches @plausible-analytics/tracker with npm pack)",
)
@pytest_twisted.ensureDeferred
async def test_plausibles_published_tracker_counts_as_ours(tmp_path: Path) -> None:
    daemon, base = await start(tmp_path, "-c", str(daemon_config(tmp_path)))
    try:
        seen = await threads.deferToThread(drive_both_trackers, base).addTimeout(120, reactor)
        values = await metrics(base)
    finally:
        await daemon.terminate()
    assert seen["ours.test"] == [] and seen["plausible.test"] == []
    assert seen["counted"] == 6, seen

    def counts(site: str) -> dict[str, Any]:
        wanted = (f"t_pages:page=/,site={site}", f"t_pages:page=/next,site={site}")
        return {
            "pages": [values.get(name) for name in wanted],
            "signups": values.get(f"t_signups:plan=pro,site={site}"),
        }

    assert counts("ours.test") == {"pages": [1, 1], "signups": 1}
    assert counts("plausible.test") == counts("ours.test")
