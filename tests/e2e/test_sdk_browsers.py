"""End to end: PostHog's and Segment's browser SDKs, their published builds from npm, in
headless Chromium, on pages of other origins, posting to a real ``twistd rta`` with keys
configured; what they sent is read back through the query API.

Each SDK is changed in its host, and kept from everything we do not serve: posthog-js from
feature flags and remote config (``advanced_disable_flags``), from loading scripts (its
``no-external`` build, ``disable_external_dependency_loading``) and from its optional
features; analytics-next from fetching its settings (``cdnSettings`` given) and from sending
its own metrics (``metrics.sampleRate: 0``). Every request the pages make is recorded: none
may leave for PostHog's or Segment's hosts.

Each SDK is run with its default delivery (posthog-js: gzip bodies to /e/ that say so only
by their magic bytes; analytics-next: each call to /v1/<first letter of its type>) and with
its other documented choice (JSON bodies; batches to /v1/b).

The pages are served by Playwright (``context.route``) under made-up host names, as in
test_tracker_browser.py, whose browser settings these reuse.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_twisted
import treq
from attrs import frozen
from twisted.internet import reactor, threads

from tests.e2e.process import clean_exit
from tests.e2e.test_daemon import TIMEOUT, start
from tests.e2e.test_dashboard_browser import CHROMIUM, skip_reason
from tests.e2e.test_tracker_browser import (
    DESKTOP_CHROME,
    POLLS,
    TRACKER_BROWSER_ARGS,
    WAIT_MS,
    html_page,
)
from tests.environment import requires

try:
    from playwright.sync_api import BrowserContext, Page, Route, sync_playwright
except ImportError:  # skip_reason says why
    sync_playwright = None

pytestmark = pytest.mark.e2e

PROJECT_KEY = "browser-sdk-project-key-0123456789"  # PostHog's token, Segment's writeKey
READ_KEY = "browser-sdk-read-key-0123456789"
# Set by .ci/run: the SDKs' published builds (npm posthog-js, Apache-2.0 and MIT;
# @segment/analytics-next, MIT), fetched at test time into a cache outside the repository.
POSTHOG_JS = os.environ.get("RTA_POSTHOG_JS", "")
SEGMENT_JS = os.environ.get("RTA_SEGMENT_JS", "")
POSTHOG_PAGE, SEGMENT_PAGE = "http://posthog.test/pricing", "http://segment.test/plans"
PAGE_HOSTS = {"posthog.test", "segment.test"}

# posthog-js 1.x init options (lib/src/posthog-core.js, defaultConfig): nothing but events.
POSTHOG_OPTIONS = {
    "advanced_disable_flags": True,  # no /flags/ and no /array/<token>/config
    "disable_external_dependency_loading": True,  # no /static/*.js
    "disable_session_recording": True,  # no /s/
    "disable_surveys": True,
    "disable_product_tours": True,
    "disable_conversations": True,
    "disable_web_experiments": True,
    "autocapture": False,  # no $autocapture, $rageclick
    "capture_dead_clicks": False,
    "capture_heatmaps": False,
    "capture_performance": False,  # no $web_vitals
    "capture_exceptions": False,
    "capture_pageview": "history_change",  # the load and every pushState
    "capture_pageleave": False,
    "persistence": "memory",
    # Its bot filter drops everything from a browser under automation (navigator.webdriver,
    # a HeadlessChrome brand): this is its documented opt-in for end-to-end tests.
    "opt_out_useragent_filter": True,
    "request_queue_config": {"flush_interval_ms": 250},  # its batches: the shortest wait
}
# posthog-js: the load's $pageview, a custom event, identify, a client-side navigation's
# $pageview (four events, sent in the queue's batches).
POSTHOG_CALLS = """() => {
    posthog.capture('signed_up', {plan: 'pro'});
    posthog.identify('u1', {email: 'u1@example.com'});
    history.pushState({}, '', '/docs');
}"""
# analytics-next: page, track, identify, another page (four events). Their promises are not
# awaited: one resolves only when its event is delivered, or given up after retries.
SEGMENT_CALLS = """() => {
    analytics.page();
    analytics.track('subscribed', {plan: 'pro'});
    analytics.identify('u2', {email: 'u2@example.com'});
    analytics.page({path: '/faq', url: 'http://segment.test/faq'});
}"""


def daemon_config(tmp_path: Path) -> Path:
    config = tmp_path / "rta.yaml"
    raw = {
        "store": {"url": "memory:"},
        "journal": {"enabled": False},
        "auth": {
            "keys": [
                {"name": "site", "key": PROJECT_KEY, "scopes": ["ingest"]},
                {"name": "reader", "key": READ_KEY, "scopes": ["read"]},
            ]
        },
    }
    config.write_text(json.dumps(raw))  # JSON is YAML
    return config


def posthog_page(base: str, compression: bool) -> str:
    """posthog-js's snippet-less build (``window.posthog``). By default it gzips its bodies;
    ``compression`` False sends them as JSON (``disable_compression``)."""
    options = {**POSTHOG_OPTIONS, "api_host": base, "disable_compression": not compression}
    return html_page(
        '<script src="/posthog.js"></script>'
        f"<script>posthog.init({json.dumps(PROJECT_KEY)}, {{...{json.dumps(options)},"
        " loaded: () => { window.ready = true; } });</script>"
    )


def segment_page(base: str, batching: bool) -> str:
    """analytics-next's UMD build (``window.AnalyticsNext``), given its settings: Segment.io
    posts to ``http://<daemon>/v1``, one request per call (its default: /t, /p, /i...) or,
    ``batching``, several calls per request (/b)."""
    segment_io: dict[str, Any] = {
        "apiKey": PROJECT_KEY,
        "apiHost": urlsplit(base).netloc + "/v1",
        "protocol": "http",
    }
    if batching:
        segment_io["deliveryStrategy"] = {
            "strategy": "batching",
            "config": {"size": 10, "timeout": 250},
        }
    settings = {"integrations": {"Segment.io": segment_io}, "metrics": {"sampleRate": 0}}
    return html_page(
        '<script src="/analytics-next.js"></script>'
        "<script>const analytics = AnalyticsNext.AnalyticsBrowser.load("
        f"{{writeKey: {json.dumps(PROJECT_KEY)}, cdnSettings: {json.dumps(settings)}}});"
        "window.analytics = analytics;"
        "analytics.ready(() => { window.ready = true; });</script>"
    )


def serve(pages: dict[str, str]) -> Callable[[Route], None]:
    """Each page by its URL; the SDKs' builds at /posthog.js and /analytics-next.js of any
    origin; anything else is a 404."""

    def handle(route: Route) -> None:
        url = route.request.url
        page = pages.get(url)
        path = urlsplit(url).path
        if path == "/posthog.js":
            route.fulfill(path=POSTHOG_JS, content_type="text/javascript")
        elif path == "/analytics-next.js":
            route.fulfill(path=SEGMENT_JS, content_type="text/javascript")
        elif page is not None:
            route.fulfill(body=page, content_type="text/html; charset=utf-8")
        else:
            route.fulfill(status=404, body="not here")

    return handle


def ingest_path(url: str, base: str) -> str | None:
    """The path of a request to the daemon that is not a query (the polls), else None."""
    if not url.startswith(base + "/"):
        return None
    path = urlsplit(url).path
    return None if path.startswith("/api/v1/") else path


def counted(context: BrowserContext, base: str, events: int, answers: list[tuple[str, int]]) -> int:
    """Poll the daemon from the browser's thread until ``events`` are counted (bounded), or
    until an SDK's request has failed (which the SDK would only retry)."""
    total = -1
    for _ in range(POLLS):
        reply = context.request.get(
            base + "/api/v1/stats", headers={"X-API-Key": READ_KEY}, timeout=WAIT_MS
        )
        total = int(reply.json()["data"]["total_events"])
        if total >= events or any(not 200 <= status < 300 for _, status in answers):
            return total
        context.pages[0].wait_for_timeout(100)
    return total


def open_page(context: BrowserContext, url: str) -> tuple[Page, list[str]]:
    """A page at ``url``, once its SDK is ready, and the errors it throws."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url, timeout=WAIT_MS)
    page.wait_for_function("() => window.ready === true", timeout=WAIT_MS)
    return page, errors


@frozen
class Step:
    """A page to open, the SDK calls to make there, and how many events the daemon has
    counted in all once they are sent."""

    name: str
    url: str
    html: str
    calls: str
    events: int


def drive(base: str, steps: list[Step]) -> dict[str, Any]:
    """Runs in a thread: Playwright's sync API has its own event loop."""
    assert sync_playwright is not None
    seen: dict[str, Any] = {}
    requests: list[str] = []  # the URL of every request the pages made
    answers: list[tuple[str, int]] = []  # (path, status) of the SDKs' requests to the daemon
    pages = {step.url: step.html for step in steps}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=TRACKER_BROWSER_ARGS)
        try:
            context = browser.new_context(user_agent=DESKTOP_CHROME)
            context.route("http://*.test/**", serve(pages))
            context.on("request", lambda request: requests.append(request.url))

            def answered(response: Any) -> None:
                path = ingest_path(response.url, base)
                if path is not None:
                    answers.append((path, response.status))

            def failed(request: Any) -> None:  # given up (a preflight refused, say): 0
                path = ingest_path(request.url, base)
                if path is not None:
                    answers.append((path, 0))

            context.on("response", answered)
            context.on("requestfailed", failed)
            for step in steps:
                page, errors = open_page(context, step.url)
                page.evaluate(step.calls)
                total = counted(context, base, step.events, answers)
                seen[step.name] = {"errors": errors, "counted": total}
            seen["cookies"] = context.cookies()
            context.close()
        finally:
            browser.close()
    seen["requests"], seen["answers"] = requests, answers
    return seen


async def metric_values(base: str) -> dict[str, Any]:
    response = await treq.get(
        base + "/api/v1/metrics?limit=1000", headers={"X-API-Key": READ_KEY}
    ).addTimeout(TIMEOUT, reactor)
    body = json.loads(await treq.content(response).addTimeout(TIMEOUT, reactor))
    assert response.code == 200, body
    return {name: view["value"] for name, view in body["data"].items()}


async def run(tmp_path: Path, steps: Callable[[str], list[Step]]) -> dict[str, Any]:
    """A daemon, the browser through ``steps`` (made for the daemon's base URL), then every
    metric's value (``seen["metrics"]``)."""
    daemon, base = await start(tmp_path, "-c", str(daemon_config(tmp_path)))
    try:
        seen = await threads.deferToThread(drive, base, steps(base)).addTimeout(120, reactor)
        seen["metrics"] = await metric_values(base)
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()
    elsewhere = [url for url in seen["requests"] if not url.startswith(base + "/")]
    # Nothing went anywhere but to the made-up pages and the daemon: no CDN, no PostHog.
    assert {urlsplit(url).hostname for url in elsewhere} <= PAGE_HOSTS, elsewhere
    # posthog-js keeps its ids in memory (persistence), the daemon sets none; analytics-next
    # keeps its own (ajs_*) in cookies of the page's domain.
    cookies = [cookie["name"] for cookie in seen["cookies"] if cookie["domain"] != ".segment.test"]
    assert cookies == [], seen["cookies"]
    return seen


def posthog_step(base: str, compression: bool, events: int = 4) -> Step:
    return Step("posthog", POSTHOG_PAGE, posthog_page(base, compression), POSTHOG_CALLS, events)


def segment_step(base: str, batching: bool, events: int = 4) -> Step:
    return Step("segment", SEGMENT_PAGE, segment_page(base, batching), SEGMENT_CALLS, events)


def posthog_counts(values: dict[str, Any]) -> dict[str, Any]:
    names = ("page_views:/pricing", "page_views:/docs", "events_by_type:signed_up")
    return {name: values.get(name) for name in (*names, "events_by_type:$identify")}


def segment_counts(values: dict[str, Any]) -> dict[str, Any]:
    names = ("page_views:/plans", "page_views:/faq", "events_by_type:subscribed")
    return {name: values.get(name) for name in (*names, "events_by_type:identify")}


SDKS = requires(
    os.path.isfile(POSTHOG_JS) and os.path.isfile(SEGMENT_JS),
    "RTA_POSTHOG_JS and RTA_SEGMENT_JS name no files: posthog-js and @segment/analytics-next "
    "from the npm registry (.ci/run fetches them with npm pack)",
)
BROWSER = requires(skip_reason() is None, skip_reason() or "")


@BROWSER
@SDKS
@pytest_twisted.ensureDeferred
async def test_posthog_js_and_analytics_next_are_counted(tmp_path: Path) -> None:
    """posthog-js's JSON bodies (``disable_compression``) to /e/, analytics-next's batches
    (``deliveryStrategy: batching``) to /v1/b."""
    seen = await run(
        tmp_path,
        lambda base: [
            posthog_step(base, compression=False),
            segment_step(base, batching=True, events=8),
        ],
    )
    assert seen["posthog"] == {"errors": [], "counted": 4}, seen
    assert seen["segment"] == {"errors": [], "counted": 8}, seen
    values = seen["metrics"]
    assert posthog_counts(values) == dict.fromkeys(posthog_counts(values), 1)
    assert segment_counts(values) == dict.fromkeys(segment_counts(values), 1)
    assert values["pageviews"] == 4
    assert values["total_events"] == 8
    # Every request of the SDKs answered as their services answer.
    assert set(seen["answers"]) == {("/e/", 200), ("/v1/b", 200)}, seen["answers"]


@BROWSER
@SDKS
@pytest_twisted.ensureDeferred
async def test_posthog_js_gzip_default_is_counted(tmp_path: Path) -> None:
    seen = await run(tmp_path, lambda base: [posthog_step(base, compression=True)])
    assert set(seen["answers"]) == {("/e/", 200)}, seen["answers"]
    assert seen["posthog"] == {"errors": [], "counted": 4}, seen
    assert posthog_counts(seen["metrics"]) == dict.fromkeys(posthog_counts(seen["metrics"]), 1)


@BROWSER
@SDKS
@pytest_twisted.ensureDeferred
async def test_analytics_next_default_delivery_is_counted(tmp_path: Path) -> None:
    seen = await run(tmp_path, lambda base: [segment_step(base, batching=False)])
    paths = {path for path, _ in seen["answers"]}
    assert paths == {"/v1/p", "/v1/t", "/v1/i"}, seen["answers"]
    assert {status for _, status in seen["answers"]} == {200}, seen["answers"]
    assert seen["segment"] == {"errors": [], "counted": 4}, seen
    assert segment_counts(seen["metrics"]) == dict.fromkeys(segment_counts(seen["metrics"]), 1)
