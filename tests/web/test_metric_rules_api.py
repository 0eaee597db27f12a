"""Metric rules through the real composition root: label filters, breakdowns by label,
Prometheus families with labels, and the skip, overflow and drop counters."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Daemon, make_daemon
from tests.helpers import NOW
from twisted_rta.timefmt import iso_utc

RULES: dict[str, Any] = {
    "metrics": {
        "web": False,  # these rules take the names of the web preset's visits
        "rules": [
            {
                "name": "signups",
                "when": {"type": "signup", "where": {"properties.source": ["web", "app"]}},
                "count": True,
                "labels": {"plan": "properties.plan"},
                "max_series": 2,
            },
            {
                "name": "visits",
                "when": {"type": "visit"},
                "count": True,
                "labels": {"country": "properties.country", "device": "properties.device"},
            },
            {
                "name": "accounts",
                "when": {"type_glob": "*"},
                "unique": "properties.account",
                "labels": {"plan": "properties.plan"},
            },
            {
                "name": "latency",
                "when": {"type": "api_call"},
                "histogram": "properties.ms",
                "labels": {"endpoint": "properties.endpoint"},
            },
            {"name": "depth", "when": {"type": "heartbeat"}, "gauge": "properties.depth"},
            {"action": "drop", "when": {"type_glob": "debug.*"}},
        ],
    }
}


def settle(daemon: Daemon) -> None:
    for _ in range(50):
        daemon.reactor.advance(0)


def post(daemon: Daemon, events: list[dict[str, Any]]) -> None:
    stamped = [{**event, "timestamp": iso_utc(event.get("timestamp", NOW - 1))} for event in events]
    assert daemon.http.post("/api/v1/events/batch", stamped).status == 202
    settle(daemon)


def data(daemon: Daemon, path: str) -> Any:
    reply = daemon.http.get(path)
    assert reply.status == 200, (path, reply.body)
    return reply.json["data"]


@pytest.fixture
def ruled() -> Daemon:
    daemon = make_daemon(RULES)
    signups = [
        ("web", "pro", "a1"),
        ("web", "pro", "a2"),
        ("app", "free", "a1"),
        ("app", "team", "a3"),  # a third plan: past max_series 2, into signups:__other__
        ("email", "pro", "a4"),  # not web or app: the where condition leaves it out
        ("web", None, "a5"),  # no plan: skipped for signups (missing_label)
        ("web", 3, "a6"),  # a number is not a label value (mistyped_label)
    ]
    post(
        daemon,
        [
            {"type": "signup", "properties": {"source": s, "plan": p, "account": a}}
            for s, p, a in signups
        ]
        + [
            {"type": "visit", "properties": {"country": "FR", "device": "mobile"}},
            {"type": "visit", "properties": {"country": "FR", "device": "desktop"}},
            {"type": "visit", "properties": {"country": "DE", "device": "mobile"}},
            {"type": "api_call", "properties": {"endpoint": "/a", "ms": 10}},
            {"type": "api_call", "properties": {"endpoint": "/a", "ms": 30}},
            {"type": "api_call", "properties": {"endpoint": "/b", "ms": "slow"}},
            {"type": "heartbeat", "timestamp": NOW - 5, "properties": {"depth": 7}},
            {"type": "heartbeat", "timestamp": NOW - 9, "properties": {"depth": 99}},
            {"type": "debug.trace", "properties": {"account": "a9"}},
        ],
    )
    return daemon


def test_label_filters_select_series_and_no_filter_sums_them_all(ruled: Daemon) -> None:
    assert data(ruled, "/api/v1/metrics/signups:pro")["value"] == 2
    pro = data(ruled, "/api/v1/metrics/signups?plan=pro")
    assert (pro["name"], pro["value"], pro["labels"]) == ("signups", 2, {"plan": "pro"})
    assert data(ruled, "/api/v1/metrics/signups?plan=enterprise")["value"] == 0
    every = data(ruled, "/api/v1/metrics/signups")
    assert (every["value"], every["labels"]) == (4, {})  # pro 2, free 1, __other__ 1
    ranged = data(ruled, "/api/v1/metrics/signups?plan=pro&from=-1h")
    assert ranged["value"] == 2 and ranged["range"]["complete"] is True
    series = data(ruled, "/api/v1/metrics/signups/series?plan=pro&from=-1h")
    assert [point["metric"]["value"] for point in series["points"]] == [2]
    assert series["points"][0]["metric"]["labels"] == {"plan": "pro"}


def test_several_labels_filter_on_any_subset(ruled: Daemon) -> None:
    assert data(ruled, "/api/v1/metrics/visits?country=FR")["value"] == 2
    assert data(ruled, "/api/v1/metrics/visits?device=mobile")["value"] == 2
    assert data(ruled, "/api/v1/metrics/visits?country=FR&device=mobile")["value"] == 1
    assert data(ruled, "/api/v1/metrics/visits:country=DE,device=mobile")["value"] == 1


def test_an_unknown_label_is_a_400_naming_it(ruled: Daemon) -> None:
    reply = ruled.http.get("/api/v1/metrics/signups?colour=red")
    assert reply.status == 400
    assert reply.json["parameter"] == "colour"
    assert "plan" in reply.json["message"]
    reply = ruled.http.get("/api/v1/breakdown/visits")  # two labels: by is needed
    assert reply.status == 400 and reply.json["parameter"] == "by"
    reply = ruled.http.get("/api/v1/breakdown/visits?by=colour")
    assert reply.status == 400 and reply.json["parameter"] == "by"
    reply = ruled.http.get("/api/v1/breakdown/pageviews?by=page")  # no labels
    assert reply.status == 400 and reply.json["parameter"] == "by"


def test_breakdowns_by_label(ruled: Daemon) -> None:
    signups = data(ruled, "/api/v1/breakdown/signups?limit=1")
    assert signups["items"] == [{"value": "pro", "count": 2}]
    assert (signups["other"], signups["total"]) == (2, 4)  # free and the __other__ bucket
    visits = data(ruled, "/api/v1/breakdown/visits?by=device")
    assert visits["by"] == "device"
    assert visits["items"] == [{"value": "mobile", "count": 2}, {"value": "desktop", "count": 1}]
    french = data(ruled, "/api/v1/breakdown/visits?by=device&country=FR")
    assert french["labels"] == {"country": "FR"}
    assert [item["count"] for item in french["items"]] == [1, 1]
    ranged = data(ruled, "/api/v1/breakdown/visits?by=country&from=-1h")
    assert ranged["items"][0] == {"value": "FR", "count": 2}


def test_uniques_are_merged_as_sketches_never_summed(ruled: Daemon) -> None:
    # a1 signed up on pro and free; a9's event was dropped.
    by_plan = data(ruled, "/api/v1/breakdown/accounts?by=plan")
    counts = {item["value"]: item["count"] for item in by_plan["items"]}
    assert counts == {"pro": 3, "free": 1, "team": 1}  # a4 (email) is a pro account too
    # The union a1..a4, not 3 + 1 + 1: a5 has no plan and a6's plan is a number.
    assert by_plan["total"] == 4
    assert data(ruled, "/api/v1/metrics/accounts")["value"] == 4
    assert by_plan["items"][0]["metric"]["type"] == "set"


def test_histograms_and_gauges(ruled: Daemon) -> None:
    latency = data(ruled, "/api/v1/metrics/latency?endpoint=/a")
    assert (latency["count"], latency["sum"], latency["min"], latency["max"]) == (2, 40, 10, 30)
    assert latency["p50"] in (10.0, 30.0)
    # The gauge holds the value of the latest event time, not the last one posted.
    assert data(ruled, "/api/v1/metrics/depth")["value"] == 7


def test_stats_count_skips_overflow_and_drops(ruled: Daemon) -> None:
    stats = data(ruled, "/api/v1/stats")
    assert stats["rule_skips"]["signups"] == {"missing_label": 1, "mistyped_label": 1}
    assert stats["rule_skips"]["latency"] == {"mistyped": 1}
    assert stats["overflow_by_metric"]["signups"] == 1
    assert stats["events_dropped"] == 1
    assert stats["total_events"] == 15  # 16 posted, one dropped


def test_prometheus_families_carry_the_labels(ruled: Daemon) -> None:
    reply = ruled.http.get("/metrics")
    assert reply.status == 200
    families = {f.name: f for f in text_string_to_metric_families(reply.body.decode())}

    def values(family: str, sample: str | None = None) -> dict[tuple[tuple[str, str], ...], float]:
        return {
            tuple(sorted(s.labels.items())): s.value
            for s in families[family].samples
            if sample is None or s.name == sample
        }

    assert values("rta_signups", "rta_signups_total") == {
        (("plan", "pro"),): 2,
        (("plan", "free"),): 1,
        (("plan", "__other__"),): 1,
    }
    assert values("rta_visits", "rta_visits_total")[(("country", "FR"), ("device", "mobile"))] == 1
    assert families["rta_accounts"].type == "gauge"
    assert values("rta_accounts")[(("plan", "pro"),)] == 3
    assert families["rta_latency"].type == "summary"
    assert values("rta_latency", "rta_latency_count")[(("endpoint", "/a"),)] == 2
    assert (("endpoint", "/a"), ("quantile", "0.5")) in values("rta_latency", "rta_latency")
    assert values("rta_depth") == {(): 7}
    skips = values("rta_rule_skips", "rta_rule_skips_total")
    assert skips[(("reason", "missing_label"), ("rule", "signups"))] == 1
    dropped = values("rta_events_dropped", "rta_events_dropped_total")
    assert dropped == {
        (("reason", "rule"),): 1,
        (("reason", "bot"),): 0,
        (("reason", "dnt"),): 0,
        (("reason", "engagement"),): 0,
    }
    overflow = values("rta_dimension_overflow", "rta_dimension_overflow_total")
    assert overflow[(("base", "signups"),)] == 1


def test_builtin_metrics_answer_label_queries_too() -> None:
    daemon = make_daemon()
    post(daemon, [{"type": "pageview", "properties": {"page": "/home"}}] * 2)
    assert data(daemon, "/api/v1/metrics/page_views?page=/home")["value"] == 2
    assert data(daemon, "/api/v1/breakdown/page_views?by=page")["items"] == [
        {"value": "/home", "count": 2}
    ]


def test_a_rule_named_like_a_daemon_metric_is_exposed_under_another_name() -> None:
    daemon = make_daemon(
        {
            "metrics": {
                "rules": [
                    {"name": "queue_depth", "when": {"type": "hb"}, "gauge": "properties.depth"},
                    {"name": "events_received", "when": {"type": "hb"}, "count": True},
                ]
            }
        }
    )
    post(daemon, [{"type": "hb", "properties": {"depth": 9}}])
    reply = daemon.http.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(reply.body.decode())}
    # The daemon's own queue depth keeps its name; the rule's gauge takes another.
    assert [s.value for s in families["rta_queue_depth"].samples] == [0]
    assert [s.value for s in families["rta_analytics_queue_depth"].samples] == [9]
    assert [s.value for s in families["rta_analytics_events_received"].samples] == [1]
    lines = reply.body.decode().splitlines()
    assert len([line for line in lines if line.startswith("# TYPE rta_queue_depth ")]) == 1
