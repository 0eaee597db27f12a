"""Range, series and breakdown queries: stored history, pending and live state merged,
across nodes sharing one store."""

from __future__ import annotations

from typing import Any

from tests.conftest import Daemon, make_daemon
from tests.helpers import NOW
from twisted_rta.aggregation.metrics import Metric
from twisted_rta.store.memory import MemoryWindowStore

MINUTE = NOW - NOW % 60
HOUR = NOW - NOW % 3600


def settle(daemon: Daemon) -> None:
    for _ in range(50):
        daemon.reactor.advance(0)


def ingest(daemon: Daemon, events: list[dict[str, Any]]) -> None:
    reply = daemon.http.post("/api/v1/events/batch", events)
    assert reply.status == 202, reply.json
    settle(daemon)


def pageviews(page: str, count: int, ts: float, user_prefix: str = "u") -> list[dict[str, Any]]:
    return [
        {
            "type": "pageview",
            "user_id": f"{user_prefix}{i}",
            "timestamp": ts * 1000,
            "properties": {"page": page},
        }
        for i in range(count)
    ]


def flush_ticks(daemon: Daemon, seconds: float) -> None:
    for _ in range(int(seconds / 5)):
        daemon.reactor.advance(5)


def test_metric_over_a_range_sums_counters_and_unions_uniques() -> None:
    daemon = make_daemon()
    ingest(daemon, pageviews("/a", 3, MINUTE - 120) + pageviews("/a", 2, MINUTE - 60))
    flush_ticks(daemon, 20)  # both earlier minutes closed and written
    ingest(daemon, pageviews("/a", 4, MINUTE + 1))  # still live
    reply = daemon.http.get("/api/v1/metrics/page_views:/a?from=-5m&to=now")
    assert reply.status == 200, reply.json
    data = reply.json["data"]
    assert data["value"] == 9
    assert data["range"]["resolution_seconds"] == 60
    assert data["range"]["complete"] is True
    users = daemon.http.get("/api/v1/metrics/unique_users?from=-5m").json["data"]
    assert users["value"] == 4  # u0..u3 across three windows, counted once


def test_range_excludes_windows_outside_it() -> None:
    daemon = make_daemon()
    ingest(daemon, pageviews("/a", 3, MINUTE - 600) + pageviews("/a", 2, MINUTE))
    flush_ticks(daemon, 20)
    data = daemon.http.get("/api/v1/metrics/pageviews?from=-2m").json["data"]
    assert data["value"] == 2
    assert data["range"]["from"] == "2026-11-27T02:58:00.000Z"
    assert data["range"]["to"] == "2026-11-27T03:01:00.000Z"


def test_known_metric_with_no_data_in_range_is_zero_and_unknown_is_404() -> None:
    daemon = make_daemon()
    ingest(daemon, pageviews("/a", 1, MINUTE - 3000))
    data = daemon.http.get("/api/v1/metrics/pageviews?from=-10m").json["data"]
    assert (data["type"], data["value"], data["count"]) == ("counter", 0, 0)
    reply = daemon.http.get("/api/v1/metrics/nope?from=-10m")
    assert (reply.status, reply.json["code"]) == (404, "metric_not_found")


def test_series_points_per_window() -> None:
    daemon = make_daemon()
    ingest(daemon, pageviews("/a", 3, MINUTE - 120) + pageviews("/a", 2, MINUTE))
    flush_ticks(daemon, 10)
    reply = daemon.http.get("/api/v1/metrics/pageviews/series?from=-5m")
    assert reply.status == 200
    data = reply.json["data"]
    assert data["resolution_seconds"] == 60
    assert [(p["start"], p["metric"]["value"]) for p in data["points"]] == [
        ("2026-11-27T02:58:00.000Z", 3),
        ("2026-11-27T03:00:00.000Z", 2),
    ]


def test_series_resolution_default_and_explicit() -> None:
    daemon = make_daemon()
    ingest(daemon, pageviews("/a", 2, MINUTE - 7200) + pageviews("/a", 1, MINUTE))
    day = daemon.http.get("/api/v1/metrics/pageviews/series?from=-2d").json["data"]
    assert day["resolution_seconds"] == 3600  # 2880 minutes would exceed 1500 points
    hourly = daemon.http.get("/api/v1/metrics/pageviews/series?from=-3h&resolution=1h")
    points = hourly.json["data"]["points"]
    assert [p["metric"]["value"] for p in points] == [2, 1]
    assert points[0]["start"] == "2026-11-27T01:00:00.000Z"


def test_breakdown_ranks_values_with_other_remainder() -> None:
    daemon = make_daemon()
    ingest(
        daemon,
        pageviews("/a", 5, MINUTE)
        + pageviews("/b", 3, MINUTE)
        + pageviews("/c", 1, MINUTE)
        + pageviews("/d", 1, MINUTE),
    )
    reply = daemon.http.get("/api/v1/breakdown/page_views?limit=2")
    data = reply.json["data"]
    assert data["items"] == [{"value": "/a", "count": 5}, {"value": "/b", "count": 3}]
    assert (data["other"], data["total"]) == (2, 10)
    ranged = daemon.http.get("/api/v1/breakdown/page_views?from=-10m&limit=1").json["data"]
    assert ranged["items"] == [{"value": "/a", "count": 5}]
    assert ranged["other"] == 5
    assert ranged["resolution_seconds"] == 60


def test_breakdown_includes_the_overflow_bucket_in_other() -> None:
    daemon = make_daemon({"limits": {"max_dimension_values": 2}})
    ingest(
        daemon, pageviews("/a", 3, MINUTE) + pageviews("/b", 2, MINUTE) + pageviews("/c", 1, MINUTE)
    )
    data = daemon.http.get("/api/v1/breakdown/page_views").json["data"]
    assert data["items"] == [{"value": "/a", "count": 3}, {"value": "/b", "count": 2}]
    assert data["other"] == 1


def test_bad_parameters_name_the_parameter() -> None:
    daemon = make_daemon()
    cases = {
        "/api/v1/metrics/pageviews?from=yesterday": "from",
        "/api/v1/metrics/pageviews?to=now": "from",
        "/api/v1/metrics/pageviews?from=-1h&to=-2h": "to",
        "/api/v1/metrics/pageviews/series?resolution=5m": "resolution",
        "/api/v1/metrics/pageviews/series?resolution=soon": "resolution",
        "/api/v1/metrics/pageviews/series?from=-30d&resolution=1m": "resolution",
        "/api/v1/breakdown/page_views?limit=0": "limit",
        "/api/v1/breakdown/page_views?limit=ten": "limit",
        "/api/v1/breakdown/bad%20name": "base",
    }
    for path, parameter in cases.items():
        reply = daemon.http.get(path)
        assert reply.status == 400, path
        assert reply.json["code"] == "invalid_parameter", path
        assert reply.json["parameter"] == parameter, path


def test_range_beyond_retention_says_so() -> None:
    daemon = make_daemon()
    data = daemon.http.get("/api/v1/metrics/pageviews/series?from=-3y").json["data"]
    assert data["resolution_seconds"] == 86400
    assert data["complete"] is False
    assert "retention" in data["note"]


def test_rfc3339_range_bounds() -> None:
    daemon = make_daemon()
    ingest(daemon, pageviews("/a", 2, MINUTE - 60))
    reply = daemon.http.get(
        "/api/v1/metrics/pageviews?from=2026-11-27T02:59:00Z&to=2026-11-27T02:59:59%2B00:00"
    )
    assert reply.json["data"]["value"] == 2
    assert reply.json["data"]["range"]["from"] == "2026-11-27T02:59:00.000Z"


def test_history_while_the_store_is_down_is_503_and_ingest_pauses_when_backlogged() -> None:
    store = MemoryWindowStore(node_id="node-a")
    daemon = make_daemon({"store": {"url": "memory:", "max_pending_windows": 1}}, store=store)
    ingest(daemon, pageviews("/a", 1, MINUTE - 120))
    store.available = False
    reply = daemon.http.get("/api/v1/metrics/pageviews?from=-5m")
    assert (reply.status, reply.json["code"]) == (503, "store_unavailable")
    flush_ticks(daemon, 10)  # the minute closes; its write fails
    ready = daemon.http.get("/ready")
    assert ready.status == 503
    assert ready.json["checks"]["store"]["detail"].startswith("writes failing")
    refused = daemon.http.post("/api/v1/events", {"type": "x"})
    assert (refused.status, refused.json["code"]) == (503, "store_unavailable")
    # The all-time view still answers from this node's live state.
    assert daemon.http.get("/api/v1/metrics/pageviews").json["data"]["value"] == 1
    store.available = True
    flush_ticks(daemon, 70)
    assert daemon.http.get("/ready").status == 200
    assert daemon.http.post("/api/v1/events", {"type": "x"}).status == 202
    data = daemon.http.get("/api/v1/metrics/pageviews?from=-10m").json["data"]
    assert data["value"] == 1  # written once, nothing lost, nothing doubled


def test_two_nodes_sharing_a_store_answer_the_merged_truth() -> None:
    rows: dict[Any, Metric] = {}
    a = make_daemon(
        {"store": {"url": "memory:", "node_id": "a"}},
        store=MemoryWindowStore(node_id="a", rows=rows),
    )
    b = make_daemon(
        {"store": {"url": "memory:", "node_id": "b"}},
        store=MemoryWindowStore(node_id="b", rows=rows),
    )
    ingest(a, pageviews("/a", 3, MINUTE, user_prefix="u"))  # u0..u2
    ingest(b, pageviews("/a", 2, MINUTE, user_prefix="u"))  # u0..u1 again
    ingest(b, pageviews("/b", 1, MINUTE, user_prefix="v"))
    for daemon in (a, b):
        flush_ticks(daemon, 75)  # the minute closes; windows and totals are written
    for daemon in (a, b):
        metrics = daemon.http.get("/api/v1/metrics").json["data"]
        assert metrics["pageviews"]["value"] == 6
        assert metrics["page_views:/a"]["value"] == 5
        assert metrics["unique_users"]["value"] == 4  # u0, u1, u2, v0
        ranged = daemon.http.get("/api/v1/metrics/pageviews?from=-5m").json["data"]
        assert ranged["value"] == 6
        top = daemon.http.get("/api/v1/breakdown/page_views").json["data"]
        assert top["items"][0] == {"value": "/a", "count": 5}


def test_restart_restores_all_time_totals_exactly() -> None:
    rows: dict[Any, Metric] = {}
    first = make_daemon(store=MemoryWindowStore(node_id="node-a", rows=rows))
    ingest(
        first,
        pageviews("/a", 3, MINUTE)
        + [{"type": "purchase", "properties": {"amount": 10.0 * i}} for i in range(1, 6)],
    )
    before = first.http.get("/api/v1/metrics").json["data"]
    stopping = first.service.stopService()
    settle(first)
    assert stopping.called
    second = make_daemon(store=MemoryWindowStore(node_id="node-a", rows=rows))
    after = second.http.get("/api/v1/metrics").json["data"]
    for name in before:
        for key in ("value", "count", "sum", "min", "max", "p50", "p99"):
            assert before[name].get(key) == after[name].get(key), (name, key)


def test_instants_outside_1970_to_9999_are_400() -> None:
    daemon = make_daemon()
    for query in (
        "from=-99999999999y",
        "from=9999-12-31T23:59:59%2B00:00&to=now",
        "from=0001-01-01T00:00:00Z",
    ):
        reply = daemon.http.get(f"/api/v1/metrics/pageviews?{query}")
        assert (reply.status, reply.json["code"]) == (400, "invalid_parameter"), query


def test_an_unknown_breakdown_family_is_404_like_an_unknown_metric() -> None:
    daemon = make_daemon()
    for path in ("/api/v1/breakdown/nothing", "/api/v1/breakdown/nothing?from=-1h"):
        reply = daemon.http.get(path)
        assert (reply.status, reply.json["code"], reply.json["name"]) == (
            404,
            "metric_not_found",
            "nothing",
        ), path
    assert daemon.http.get("/api/v1/metrics/nothing").status == 404


def test_a_declared_family_without_data_is_an_empty_breakdown() -> None:
    daemon = make_daemon()
    for base in ("page_views", "clicks", "events_by_type"):
        for query in ("", "?from=-1h"):
            reply = daemon.http.get(f"/api/v1/breakdown/{base}{query}")
            assert reply.status == 200, (base, query)
            assert (reply.json["data"]["items"], reply.json["data"]["total"]) == ([], 0)


def test_a_family_the_rules_lack_is_known_once_a_node_has_it() -> None:
    from twisted_rta.aggregation.metrics import Counter
    from twisted_rta.store.interface import TOTALS_RESOLUTION

    legacy = Counter()
    legacy.increment(NOW, by=4)
    rows: dict[Any, Metric] = {("legacy:x", TOTALS_RESOLUTION, 0, "node-b"): legacy}
    daemon = make_daemon(store=MemoryWindowStore(node_id="node-a", rows=rows))
    settle(daemon)
    data = daemon.http.get("/api/v1/breakdown/legacy").json["data"]
    assert data["items"] == [{"value": "x", "count": 4}]
    ranged = daemon.http.get("/api/v1/breakdown/legacy?from=-1h")
    assert ranged.status == 200 and ranged.json["data"]["items"] == []
