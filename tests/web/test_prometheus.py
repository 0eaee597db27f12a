"""GET /metrics: the whole exposition parses, and its values match the query API."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Daemon, make_daemon
from tests.helpers import NOW, raw_http


def settle(daemon: Daemon) -> None:
    for _ in range(50):
        daemon.reactor.advance(0)


def scrape(daemon: Daemon) -> dict[str, Any]:
    reply = daemon.http.get("/metrics")
    assert reply.status == 200
    assert (reply.header("Content-Type") or "").startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(reply.body.decode())}
    return families


def samples(family: Any, name: str | None = None) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for sample in family.samples
        if name is None or sample.name == name
    }


TRICKY_PAGE = '/q?a="b"\\c\nnext'


def ingest(daemon: Daemon) -> None:
    events = [
        {"type": "pageview", "user_id": f"u{i}", "properties": {"page": f"/p{i % 3}"}}
        for i in range(9)
    ] + [
        {"type": "pageview", "user_id": "x", "properties": {"page": TRICKY_PAGE}},
        {"type": "click", "properties": {"element": "buy"}},
        {"type": "purchase", "user_id": "u1", "properties": {"amount": 10.0}},
        {"type": "purchase", "user_id": "u2", "properties": {"amount": 30.0}},
        {"type": ""},  # rejected: empty_field
    ]
    assert daemon.http.post("/api/v1/events/batch", events).status == 202
    assert daemon.http.post("/api/v1/events", {"type": "signup"}).status == 202
    assert daemon.http.post("/api/v1/events", b"{").status == 400
    settle(daemon)


def test_analytics_metrics_match_the_query_api(daemon: Daemon) -> None:
    ingest(daemon)
    api = daemon.http.get("/api/v1/metrics").json["data"]
    families = scrape(daemon)
    assert samples(families["rta_pageviews"])[()] == api["pageviews"]["value"] == 10
    assert samples(families["rta_total_events"])[()] == api["total_events"]["value"]
    pages = samples(families["rta_page_views"], "rta_page_views_total")
    assert pages[(("page", "/p0"),)] == api["page_views:/p0"]["value"] == 3
    assert pages[(("page", TRICKY_PAGE),)] == 1  # escaped and parsed back intact
    # "clicks" is a plain counter too, so the family takes a _by_<label> name.
    assert samples(families["rta_clicks"])[()] == 1
    assert samples(families["rta_clicks_by_element"])[(("element", "buy"),)] == 1
    types = samples(families["rta_events_by_type"], "rta_events_by_type_total")
    assert types[(("type", "signup"),)] == 1
    assert families["rta_unique_users"].type == "gauge"
    assert samples(families["rta_unique_users"])[()] == api["unique_users"]["value"]
    summary = families["rta_revenue_histogram"]
    assert summary.type == "summary"
    assert samples(summary, "rta_revenue_histogram_count")[()] == 2
    assert samples(summary, "rta_revenue_histogram_sum")[()] == 40.0
    quantiles = samples(summary, "rta_revenue_histogram")
    assert quantiles[(("quantile", "0.5"),)] == api["revenue_histogram"]["p50"]
    assert quantiles[(("quantile", "0.99"),)] == api["revenue_histogram"]["p99"]


def test_self_metrics(daemon: Daemon) -> None:
    ingest(daemon)
    families = scrape(daemon)
    received = samples(families["rta_events_received"], "rta_events_received_total")
    assert received == {(("endpoint", "batch"),): 14, (("endpoint", "single"),): 2}
    accepted = samples(families["rta_events_accepted"], "rta_events_accepted_total")
    assert accepted == {(("endpoint", "batch"),): 13, (("endpoint", "single"),): 1}
    rejected = samples(families["rta_events_rejected"], "rta_events_rejected_total")
    assert rejected == {
        (("endpoint", "batch"), ("reason", "empty_field")): 1,
        (("endpoint", "single"), ("reason", "invalid_json")): 1,
    }
    assert samples(families["rta_queue_capacity"])[()] == 100_000
    assert samples(families["rta_queue_depth"])[()] == 0
    assert samples(families["rta_events_aggregated"], "rta_events_aggregated_total")[()] == 14
    assert samples(families["rta_batches_processed"], "rta_batches_processed_total")[()] == 2
    assert samples(families["rta_windows_open"])[()] >= 1
    errors = samples(families["rta_store_errors"], "rta_store_errors_total")
    assert errors[(("operation", "write"),)] == 0
    assert "rta_flush_duration_seconds" in families
    assert "rta_reactor_lag_seconds" in families
    assert "rta_late_events" in families
    assert "process_cpu_seconds" in families or "process_virtual_memory_bytes" in families


def test_http_requests_by_route_and_status() -> None:
    daemon = make_daemon()
    site = daemon.service.listeners[0].factory
    for path in (b"/health", b"/health", b"/api/v1/metrics/page_views:/x", b"/nope"):
        raw_http(site, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    families = scrape(daemon)
    requests = samples(families["rta_http_requests"], "rta_http_requests_total")
    assert requests[(("route", "/health"), ("status", "200"))] == 2
    assert requests[(("route", "/api/v1/metrics/{name}"), ("status", "404"))] == 1
    assert requests[(("route", "other"), ("status", "404"))] == 1
    latency = samples(
        families["rta_http_request_duration_seconds"], "rta_http_request_duration_seconds_count"
    )
    assert latency[(("route", "/health"),)] == 2


def test_overflowing_dimensions_keep_the_series_count_bounded() -> None:
    daemon = make_daemon({"limits": {"max_dimension_values": 3}})
    daemon.http.post(
        "/api/v1/events/batch",
        [{"type": "pageview", "properties": {"page": f"/p{i}"}} for i in range(50)],
    )
    settle(daemon)
    pages = samples(scrape(daemon)["rta_page_views"], "rta_page_views_total")
    assert len(pages) == 4
    assert pages[(("page", "__other__"),)] == 47
    overflow = samples(scrape(daemon)["rta_dimension_overflow"], "rta_dimension_overflow_total")
    assert overflow[(("base", "page_views"),)] == 47


def test_openmetrics_by_content_negotiation(daemon: Daemon) -> None:
    reply = daemon.http.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert (reply.header("Content-Type") or "").startswith("application/openmetrics-text")
    assert reply.body.rstrip().endswith(b"# EOF")


def test_metrics_reflect_now(daemon: Daemon) -> None:
    daemon.reactor.advance(30.0)
    uptime = samples(scrape(daemon)["rta_uptime_seconds"])[()]
    assert uptime == 30.0
    assert NOW > 0
