"""End to end: metric rules from YAML (issue 14) in the real ``twistd rta``.

The issue's rules are configured as written; a known mix of events with explicit
timestamps in the current minute is posted, and every figure is checked exactly through the
query API, ``/api/v1/stats`` and the Prometheus exposition (parsed, not string-matched):
on one node, again after a clean restart on the same SQLite file, and across two nodes on
one PostgreSQL database. A bad rule makes the start fail with one line naming its key path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
import yaml
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.contract import check as check_contract
from tests.e2e.process import DaemonProcess, clean_exit, poll
from tests.e2e.test_daemon import TIMEOUT, post_json, start
from tests.e2e.test_startup import failed_start
from tests.postgres import postgres_database
from twisted_rta.timefmt import iso_utc

pytestmark = pytest.mark.e2e

# The rules of the issue, as an operator writes them.
RULES_YAML = """
metrics:
  builtin: true
  web: false  # these events name no site; the families listed below are the rules' own
  rules:
    - name: signups
      when: {type: signup, where: {properties.source: [web, app]}}
      count: true
      labels: {plan: properties.plan}
      max_series: 3            # small, so the overflow bucket signups:__other__ is exercised
    - name: order_value
      when: {type: purchase}
      sum: properties.amount
      histogram: properties.amount
      labels: {currency: properties.currency}
    - {name: active_accounts, when: {type_glob: "*"}, unique: properties.account_id}
    - {name: queue_depth, when: {type: heartbeat}, gauge: properties.depth}
    - {action: drop, when: {type_glob: "debug.*"}}
"""
METRICS_SECTION = yaml.safe_load(RULES_YAML)["metrics"]
Event = dict[str, Any]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], list[float]]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from postgres_database()


# -- events ---------------------------------------------------------------------------------


class Clock:
    """Event times in the current minute: ``at(offset_ms)`` is epoch milliseconds
    ``offset_ms`` after the minute's start (below ``MAX_OFFSET_MS``, so all in the past)."""

    MAX_OFFSET_MS = 1000

    def __init__(self, minute_start: float) -> None:
        self.minute_start = minute_start

    @classmethod
    async def current_minute(cls) -> Clock:
        now = time.time()
        into = now % 60
        margin = cls.MAX_OFFSET_MS / 1000
        if into < margin:  # leave room for the offsets, so no event is in the future
            await deferLater(reactor, margin - into, lambda: None)
            now = time.time()
        return cls(now - now % 60)

    def at(self, offset_ms: int) -> int:
        assert 0 <= offset_ms < self.MAX_OFFSET_MS
        return int(self.minute_start * 1000) + offset_ms

    @property
    def window_start(self) -> str:
        return iso_utc(self.minute_start)


def ev(clock: Clock, offset_ms: int, type_: str, **properties: Any) -> Event:
    return {
        "type": type_,
        "user_id": "u1",
        "timestamp": clock.at(offset_ms),
        "properties": properties,
    }


def first_signups(clock: Clock) -> list[Event]:
    """The first three plans, posted (and counted) before anything else: they are the
    three series ``max_series: 3`` admits."""
    return [
        ev(clock, 1, "signup", source="web", plan="pro", account_id="a1"),
        ev(clock, 2, "signup", source="web", plan="free", account_id="a2"),
        ev(clock, 3, "signup", source="app", plan="team", account_id="a3"),
    ]


def main_mix(clock: Clock) -> list[Event]:
    """Everything else but the last heartbeat: 29 events, one refused (``REFUSED``), 25
    aggregated and 3 dropped."""
    return [
        # Signups: pro 4 (with the first), free 2, team 1; enterprise 2 and edu 1 go to
        # signups:__other__; two of another source are not taken; two are skipped.
        ev(clock, 4, "signup", source="web", plan="pro", account_id="a1"),
        ev(clock, 5, "signup", source="app", plan="pro", account_id="a4"),
        ev(clock, 6, "signup", source="web", plan="pro", account_id="a5"),
        ev(clock, 7, "signup", source="web", plan="free", account_id="a2"),
        ev(clock, 8, "signup", source="web", plan="enterprise", account_id="a6"),
        ev(clock, 9, "signup", source="app", plan="enterprise", account_id="a6"),
        ev(clock, 10, "signup", source="web", plan="edu", account_id="a7"),
        ev(clock, 11, "signup", source="email", plan="pro", account_id="a8"),
        ev(clock, 12, "signup", plan="pro", account_id="a8"),
        ev(clock, 13, "signup", source="web", account_id="a9"),  # missing_label
        ev(clock, 14, "signup", source="app", plan=42, account_id="a9"),  # mistyped_label
        # Purchases: EUR 10..50, USD 5 and 15; a string amount, which the ingest's field
        # rule for purchases refuses (index 18: in no metric, no skip); one without
        # currency (missing_label for the sum and for the histogram) and with a numeric
        # account id (mistyped for active_accounts).
        ev(clock, 15, "purchase", amount=10, currency="EUR", account_id="a1"),
        ev(clock, 16, "purchase", amount=20.0, currency="EUR", account_id="a2"),
        ev(clock, 17, "purchase", amount=30, currency="EUR", account_id="a3"),
        ev(clock, 18, "purchase", amount=40, currency="EUR", account_id="a1"),
        ev(clock, 19, "purchase", amount=50, currency="EUR", account_id="a10"),
        ev(clock, 20, "purchase", amount=5, currency="USD", account_id="a4"),
        ev(clock, 21, "purchase", amount=15, currency="USD", account_id="a11"),
        ev(clock, 22, "purchase", amount="12", currency="EUR", account_id="a1"),
        ev(clock, 23, "purchase", amount=7, account_id=12345),
        # Built-in metrics still work beside the rules.
        ev(clock, 24, "pageview", page="/home", account_id="a2"),
        ev(clock, 25, "pageview", page="/home"),
        ev(clock, 26, "pageview", page="/pricing", account_id="a12"),
        # Heartbeats (no account): the latest event time wins, not the last posted; the
        # latest of all has a depth that is not a number (mistyped, ignored).
        ev(clock, 300, "heartbeat", depth=5),
        ev(clock, 600, "heartbeat", depth=9),
        ev(clock, 900, "heartbeat", depth="deep"),
        # Dropped: in no metric (not even active_accounts), counted as dropped.
        ev(clock, 27, "debug.trace", account_id="dbg1"),
        ev(clock, 28, "debug.trace", account_id="dbg2"),
        ev(clock, 29, "debug.span", account_id="a1"),
    ]


def late_heartbeat(clock: Clock) -> list[Event]:
    """Posted last, with the earliest heartbeat time: the gauge must stay 9."""
    return [ev(clock, 100, "heartbeat", depth=99)]


REFUSED = {18: "invalid_amount"}  # index in main_mix -> error code
TOTAL_EVENTS = 29  # 3 + 25 + 1 aggregated
DROPPED = 3
EXPECTED_SKIPS = {
    "signups": {"missing_label": 1, "mistyped_label": 1},
    # Skips are counted per metric a rule makes (order_value_sum, order_value_histogram).
    "order_value": {"missing_label": 2},
    "active_accounts": {"missing": 5, "mistyped": 1},
    "queue_depth": {"mistyped": 1},
}


# -- HTTP, config, exposition ---------------------------------------------------------------


def write_config(tmp_path: Path, name: str, store: dict[str, Any], **windows: Any) -> str:
    path = tmp_path / f"{name}.yaml"
    raw: dict[str, Any] = {
        "logging": {"access_log": False},
        "store": store,
        "metrics": METRICS_SECTION,
    }
    if windows:
        raw["windows"] = windows
    path.write_text(yaml.safe_dump(raw))
    return str(path)


async def fetch(base: str, path: str) -> tuple[int, Any]:
    """GET a query path; the answer is checked against the OpenAPI contract."""
    response = await treq.get(base + path).addTimeout(TIMEOUT, reactor)
    body: bytes = await treq.content(response).addTimeout(TIMEOUT, reactor)
    headers = {
        name.decode().lower(): [value.decode() for value in values]
        for name, values in response.headers.getAllRawHeaders()
    }
    check_contract("GET", path, response.code, headers, body)
    return response.code, json.loads(body)


async def data_of(base: str, path: str) -> Any:
    status, body = await fetch(base, path)
    assert status == 200, (path, body)
    return body["data"]


async def post_events(
    base: str, events: list[Event], refused: dict[int, str] | None = None
) -> None:
    """Post a batch; every event is accepted but those of ``refused`` (index -> code)."""
    status, body = await post_json(base + "/api/v1/events/batch", events)
    assert status == 202, body
    data = body["data"]
    errors = {error["index"]: error["code"] for error in data.get("errors", [])}
    assert errors == (refused or {}), data.get("errors")
    assert (data["accepted"], data["rejected"]) == (len(events) - len(errors), len(errors))


async def wait_aggregated(base: str, total: int, dropped: int) -> None:
    """Until this node has aggregated ``total`` events and dropped ``dropped``."""

    async def done() -> bool:
        stats = await data_of(base, "/api/v1/stats")
        return bool(stats["total_events"] == total and stats["events_dropped"] == dropped)

    await poll(done, timeout=TIMEOUT)


async def wait_value(base: str, path: str, value: float) -> None:
    """Until the metric at ``path`` answers ``value`` (bounded)."""

    async def reached() -> bool:
        return bool((await data_of(base, path))["value"] == value)

    await poll(reached, timeout=TIMEOUT)


async def exposition(base: str) -> str:
    response = await treq.get(base + "/metrics").addTimeout(TIMEOUT, reactor)
    assert response.code == 200
    body: bytes = await treq.content(response).addTimeout(TIMEOUT, reactor)
    return body.decode("utf-8")


def samples_of(text: str) -> Samples:
    """Every sample of the exposition: (sample name, labels) -> values (one, unless the
    exposition repeats a series)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            found.setdefault(key, []).append(sample.value)
    return found


def sample(samples: Samples, name: str, **labels: str) -> float:
    values = samples.get((name, frozenset(labels.items())))
    assert values is not None, (name, labels, sorted(k[0] for k in samples))
    assert len(values) == 1, (name, labels, values)
    return values[0]


# -- the figures ----------------------------------------------------------------------------


async def check_rule_figures(base: str, clock: Clock) -> None:
    """Every query-API figure of the posted mix, all-time and over the last hour (the
    same after a restart: nothing here is a since-start counter)."""
    # signups: every series, the overflow bucket included; one label; a range; a series.
    signups = await data_of(base, "/api/v1/metrics/signups")
    assert (signups["type"], signups["value"], signups["labels"]) == ("counter", 10, {})
    pro = await data_of(base, "/api/v1/metrics/signups?plan=pro")
    assert (pro["value"], pro["labels"]) == (4, {"plan": "pro"})
    free = await data_of(base, "/api/v1/metrics/signups?plan=free")
    assert free["value"] == 2
    nobody = await data_of(base, "/api/v1/metrics/signups?plan=edu")  # in the bucket
    assert nobody["value"] == 0
    ranged = await data_of(base, "/api/v1/metrics/signups?plan=pro&from=-1h")
    assert (ranged["value"], ranged["labels"]) == (4, {"plan": "pro"})
    assert ranged["range"]["resolution_seconds"] == 60
    ranged_all = await data_of(base, "/api/v1/metrics/signups?from=-1h")
    assert ranged_all["value"] == 10
    series = await data_of(base, "/api/v1/metrics/signups/series?plan=pro&from=-1h")
    assert [
        (p["start"], p["metric"]["value"], p["metric"]["labels"]) for p in series["points"]
    ] == [(clock.window_start, 4, {"plan": "pro"})]
    # A series by its full name, as the metric list shows it.
    bucket = await data_of(base, "/api/v1/metrics/signups%3A__other__")
    assert bucket["value"] == 3

    # Breakdowns: the bucket is in other, never an item.
    breakdown = await data_of(base, "/api/v1/breakdown/signups?limit=10")
    assert breakdown["items"] == [
        {"value": "pro", "count": 4},
        {"value": "free", "count": 2},
        {"value": "team", "count": 1},
    ]
    assert (breakdown["other"], breakdown["total"], breakdown["complete"]) == (3, 10, True)
    top = await data_of(base, "/api/v1/breakdown/signups?limit=2")
    assert [i["value"] for i in top["items"]] == ["pro", "free"]
    assert (top["other"], top["total"]) == (4, 10)  # team 1 + the bucket's 3
    by_currency = await data_of(base, "/api/v1/breakdown/order_value_sum?by=currency")
    assert (by_currency["base"], by_currency["by"]) == ("order_value_sum", "currency")
    assert by_currency["items"] == [{"value": "EUR", "count": 150}, {"value": "USD", "count": 20}]
    assert (by_currency["other"], by_currency["total"]) == (0, 170)
    ranged_by = await data_of(base, "/api/v1/breakdown/order_value_sum?by=currency&from=-1h")
    assert ranged_by["items"] == by_currency["items"]
    assert ranged_by["total"] == 170

    # Sums and histograms under a label.
    usd = await data_of(base, "/api/v1/metrics/order_value_sum?currency=USD")
    assert usd["value"] == 20
    eur = await data_of(base, "/api/v1/metrics/order_value_histogram?currency=EUR")
    assert eur["type"] == "histogram" and eur["labels"] == {"currency": "EUR"}
    assert (eur["count"], eur["sum"], eur["min"], eur["max"]) == (5, 150, 10, 50)
    assert 20 <= eur["p50"] <= 40  # the median 30, within one rank of the sketch
    eur_ranged = await data_of(base, "/api/v1/metrics/order_value_histogram?currency=EUR&from=-1h")
    assert (eur_ranged["count"], eur_ranged["sum"]) == (5, 150)

    # Uniques (HLL is exact at this size), a gauge by event time.
    accounts = await data_of(base, "/api/v1/metrics/active_accounts")
    assert (accounts["type"], accounts["value"]) == ("set", 12)
    accounts_ranged = await data_of(base, "/api/v1/metrics/active_accounts?from=-1h")
    assert accounts_ranged["value"] == 12
    depth = await data_of(base, "/api/v1/metrics/queue_depth")
    assert (depth["type"], depth["value"]) == ("gauge", 9)
    depth_ranged = await data_of(base, "/api/v1/metrics/queue_depth?from=-1h")
    assert depth_ranged["value"] == 9

    # The built-in metrics answer beside the rules, by label and by full name.
    everything = await data_of(base, "/api/v1/metrics")
    assert everything["total_events"]["value"] == TOTAL_EVENTS
    assert everything["pageviews"]["value"] == 3
    assert everything["purchases"]["value"] == 8
    assert everything["revenue"]["value"] == 177
    assert everything["events_by_type:signup"]["value"] == 14
    assert not [name for name in everything if "debug" in name]
    home = await data_of(base, "/api/v1/metrics/page_views?page=/home")
    assert (home["value"], home["labels"]) == (2, {"page": "/home"})
    by_name = await data_of(base, "/api/v1/metrics/page_views%3A%2Fhome")
    assert by_name["value"] == 2
    pages = await data_of(base, "/api/v1/breakdown/page_views")
    assert pages["items"] == [{"value": "/home", "count": 2}, {"value": "/pricing", "count": 1}]


def check_exposed_figures(text: str) -> None:
    """The analytics part of /metrics (this node's all-time values)."""
    samples = samples_of(text)
    assert sample(samples, "rta_signups_total", plan="pro") == 4
    assert sample(samples, "rta_signups_total", plan="team") == 1
    assert sample(samples, "rta_signups_total", plan="__other__") == 3
    assert ("rta_signups_total", frozenset({("plan", "edu")})) not in samples
    assert sample(samples, "rta_order_value_sum_total", currency="EUR") == 150
    assert sample(samples, "rta_order_value_histogram_count", currency="EUR") == 5
    assert sample(samples, "rta_order_value_histogram_sum", currency="EUR") == 150
    p50 = sample(samples, "rta_order_value_histogram", currency="EUR", quantile="0.5")
    assert 20 <= p50 <= 40
    assert sample(samples, "rta_active_accounts") == 12
    # The daemon's own rta_queue_depth keeps its name: the rule's gauge takes another.
    assert sample(samples, "rta_analytics_queue_depth") == 9
    assert sample(samples, "rta_pageviews_total") == 3
    assert sample(samples, "rta_page_views_total", page="/home") == 2


# -- one node, then a restart -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_rules_answer_in_the_api_and_metrics_and_again_after_a_restart(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, "rta", {"data_dir": str(tmp_path / "data"), "node_id": "solo"})
    daemon, base = await start(tmp_path, "-c", config)
    try:
        clock = await Clock.current_minute()
        # Posted one after another, each counted before the next: admission to the bounded
        # family and "the last posted" of the gauge are then certain.
        await post_events(base, first_signups(clock))
        await wait_aggregated(base, 3, 0)
        await post_events(base, main_mix(clock), REFUSED)
        await wait_aggregated(base, TOTAL_EVENTS - 1, DROPPED)
        await post_events(base, late_heartbeat(clock))
        await wait_aggregated(base, TOTAL_EVENTS, DROPPED)

        await check_rule_figures(base, clock)

        status, body = await fetch(base, "/api/v1/metrics/signups?colour=red")
        assert status == 400, body
        assert (body["code"], body["parameter"]) == ("invalid_parameter", "colour")
        status, body = await fetch(base, "/api/v1/breakdown/signups?by=colour")
        assert status == 400 and body["parameter"] == "by", body

        stats = await data_of(base, "/api/v1/stats")
        assert stats["total_events"] == TOTAL_EVENTS
        assert stats["events_dropped"] == DROPPED
        assert stats["rule_skips"] == EXPECTED_SKIPS
        assert stats["overflow_by_metric"]["signups"] == 3
        assert {
            k: v for k, v in stats["overflow_by_metric"].items() if k != "signups"
        } == dict.fromkeys(
            ["events_by_type", "page_views", "clicks", "order_value_sum", "order_value_histogram"],
            0,
        )

        text = await exposition(base)
        check_exposed_figures(text)
        samples = samples_of(text)
        assert sample(samples, "rta_events_dropped_total", reason="rule") == DROPPED
        for rule, reasons in EXPECTED_SKIPS.items():
            for why, count in reasons.items():
                assert sample(samples, "rta_rule_skips_total", rule=rule, reason=why) == count
        assert sample(samples, "rta_dimension_overflow_total", base="signups") == 3
        assert sample(samples, "rta_total_events_total") == TOTAL_EVENTS
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()
    assert "Traceback" not in daemon.output_text()

    daemon, base = await start(tmp_path, "-c", config)
    try:
        await check_rule_figures(base, clock)
        check_exposed_figures(await exposition(base))
        stats = await data_of(base, "/api/v1/stats")
        # Restored, not re-aggregated: the since-start counters begin again at zero.
        assert (stats["total_events"], stats["events_dropped"], stats["rule_skips"]) == (
            TOTAL_EVENTS,
            0,
            {},
        )
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()

    # Rules are restart-only: a restart without the signups rule starts, and the removed
    # rule's history stays queryable by its series names, all-time and over a range.
    without = dict(METRICS_SECTION)
    without["rules"] = [rule for rule in METRICS_SECTION["rules"] if rule.get("name") != "signups"]
    raw = yaml.safe_load(Path(config).read_text())
    raw["metrics"] = without
    changed = tmp_path / "rta-changed.yaml"
    changed.write_text(yaml.safe_dump(raw))
    daemon, base = await start(tmp_path, "-c", str(changed))
    try:
        assert (await data_of(base, "/api/v1/metrics/signups:pro"))["value"] == 4
        ranged = await data_of(base, "/api/v1/metrics/signups:__other__?from=-1h")
        assert ranged["value"] == 3
        status, _ = await fetch(base, "/api/v1/metrics/signups?plan=pro")
        assert status == 404  # no rule declares its labels any more: only names answer
        post = [ev(clock, 30, "signup", source="web", plan="pro", account_id="a1")]
        await post_events(base, post)
        await wait_aggregated(base, TOTAL_EVENTS + 1, 0)
        assert (await data_of(base, "/api/v1/metrics/signups:pro"))["value"] == 4
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()


@pytest_twisted.ensureDeferred
async def test_exposition_never_repeats_a_series(tmp_path: Path) -> None:
    config = write_config(tmp_path, "rta", {"data_dir": str(tmp_path / "data"), "node_id": "solo"})
    daemon, base = await start(tmp_path, "-c", config)
    try:
        clock = await Clock.current_minute()
        await post_events(base, [ev(clock, 1, "heartbeat", depth=9)])
        await wait_aggregated(base, 1, 0)
        text = await exposition(base)
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()
    repeated = {key: values for key, values in samples_of(text).items() if len(values) > 1}
    # Prometheus refuses a scrape that repeats a series (or a metric name's HELP/TYPE).
    assert repeated == {}
    assert sample(samples_of(text), "rta_analytics_queue_depth") == 9
    assert sample(samples_of(text), "rta_queue_depth") == 0


# -- two nodes on one PostgreSQL ------------------------------------------------------------


def node_a_events(clock: Clock) -> list[Event]:
    return [
        ev(clock, 1, "signup", source="web", plan="pro", account_id="a1"),
        ev(clock, 2, "signup", source="web", plan="free", account_id="a2"),
        ev(clock, 3, "signup", source="app", plan="pro", account_id="a3"),
        ev(clock, 4, "purchase", amount=10, currency="EUR", account_id="a1"),
        ev(clock, 5, "purchase", amount=5, currency="USD", account_id="a2"),
        ev(clock, 100, "heartbeat", depth=3),
        ev(clock, 6, "pageview", page="/home", account_id="a3"),
        ev(clock, 7, "debug.trace", account_id="a99"),
    ]


def node_b_events(clock: Clock) -> list[Event]:
    # Node b's own bound admits pro, team and enterprise; edu goes to its bucket.
    return [
        ev(clock, 11, "signup", source="web", plan="pro", account_id="a3"),
        ev(clock, 12, "signup", source="web", plan="team", account_id="a4"),
        ev(clock, 13, "signup", source="app", plan="enterprise", account_id="a5"),
        ev(clock, 14, "signup", source="web", plan="edu", account_id="a6"),
        ev(clock, 15, "purchase", amount=30, currency="EUR", account_id="a4"),
        ev(clock, 16, "purchase", amount=15, currency="USD", account_id="a7"),
        ev(clock, 200, "heartbeat", depth=7),
        ev(clock, 17, "pageview", page="/home", account_id="a1"),
        ev(clock, 18, "pageview", page="/pricing"),
    ]


async def check_merged(base: str) -> None:
    signups = await data_of(base, "/api/v1/metrics/signups")
    assert signups["value"] == 7
    pro = await data_of(base, "/api/v1/metrics/signups?plan=pro")
    assert pro["value"] == 3
    breakdown = await data_of(base, "/api/v1/breakdown/signups?limit=10")
    assert breakdown["items"] == [
        {"value": "pro", "count": 3},
        {"value": "enterprise", "count": 1},
        {"value": "free", "count": 1},
        {"value": "team", "count": 1},
    ]
    assert (breakdown["other"], breakdown["total"], breakdown["complete"]) == (1, 7, True)
    by_currency = await data_of(base, "/api/v1/breakdown/order_value_sum?by=currency")
    assert by_currency["items"] == [{"value": "EUR", "count": 40}, {"value": "USD", "count": 20}]
    assert by_currency["total"] == 60
    eur = await data_of(base, "/api/v1/metrics/order_value_histogram?currency=EUR")
    assert (eur["count"], eur["min"], eur["max"]) == (2, 10, 30)
    # a1, a2, a3 on node a; a3, a4, a5, a6, a7, a1 on node b: 7 accounts, not 3 + 6.
    accounts = await data_of(base, "/api/v1/metrics/active_accounts")
    assert accounts["value"] == 7
    depth = await data_of(base, "/api/v1/metrics/queue_depth")
    assert depth["value"] == 7  # node b's heartbeat is the later one
    home = await data_of(base, "/api/v1/metrics/page_views?page=/home")
    assert home["value"] == 2
    everything = await data_of(base, "/api/v1/metrics")
    assert everything["pageviews"]["value"] == 3
    assert everything["total_events"]["value"] == 16


@pytest_twisted.ensureDeferred
async def test_two_nodes_on_one_postgresql_answer_the_merged_rule_metrics(
    tmp_path: Path, postgres_url: str
) -> None:
    def node_config(name: str) -> str:
        store = {"url": postgres_url, "node_id": name, "data_dir": str(tmp_path / name)}
        return write_config(tmp_path, name, store, flush_interval="200ms")

    a, base_a = await start(tmp_path, "-c", node_config("a"))
    daemons: list[DaemonProcess] = [a]
    try:
        b, base_b = await start(tmp_path, "-c", node_config("b"))
        daemons.append(b)
        clock = await Clock.current_minute()
        await post_events(base_a, node_a_events(clock))
        await post_events(base_b, node_b_events(clock))
        await wait_aggregated(base_a, 7, 1)
        await wait_aggregated(base_b, 9, 0)

        # The other node's totals arrive through the store after its next flush.
        for base in (base_a, base_b):
            await wait_value(base, "/api/v1/metrics/total_events", 16)
        for base in (base_a, base_b):
            await check_merged(base)

        # Over a range: stored windows and the other node's published live windows.
        for base in (base_a, base_b):
            await wait_value(base, "/api/v1/metrics/signups?from=-1h", 7)
            pro = await data_of(base, "/api/v1/metrics/signups?plan=pro&from=-1h")
            assert pro["value"] == 3
            accounts = await data_of(base, "/api/v1/metrics/active_accounts?from=-1h")
            assert accounts["value"] == 7
    finally:
        reasons = [await daemon.terminate() for daemon in daemons]
    assert all(clean_exit(reason) for reason in reasons), "\n".join(
        daemon.output_text() for daemon in daemons
    )


# -- start failures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "line_start", "mentions"),
    [
        (
            [{"name": "x", "when": {"type": "a"}, "avg": "properties.a"}],
            "twistd rta: config error: metrics.rules[0].avg: unknown key",
            ["aggregations are count, sum, histogram, unique, gauge"],
        ),
        (
            [
                {"name": "fine", "when": {"type": "a"}, "count": True},
                {"name": "clicks", "when": {"type": "a"}, "count": True},
            ],
            "twistd rta: config error: metrics.rules[1].name: ",
            ["'clicks'", "built-in", "metrics.builtin: false"],
        ),
    ],
    ids=["unknown-aggregation", "built-in-name"],
)
@pytest_twisted.ensureDeferred
async def test_a_bad_rule_fails_the_start_with_one_line_naming_it(
    tmp_path: Path, rules: list[dict[str, Any]], line_start: str, mentions: list[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"metrics": {"builtin": True, "rules": rules}}))
    daemon = await failed_start(tmp_path, "-c", str(config), "--listen", "tcp:0")
    lines = "".join(daemon.other_output).strip().splitlines()
    assert len(lines) == 1, daemon.output_text()
    assert lines[0].startswith(line_start), lines[0]
    for text in mentions:
        assert text in lines[0], lines[0]
    # Refused before anything was bound.
    assert not [r for r in daemon.records if r.get("logger") == "twisted_rta.web.listeners"], (
        daemon.output_text()
    )
