"""Window figures, sliding figures and the Go service's window-metric names, through the
real composition root: a daemon configured like the Go service's windows (1m and 5m, count/
sum/avg on 1m, count/p95/p99 on 5m, a sliding 5m every 1m)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Daemon, make_daemon
from tests.helpers import NOW
from twisted_rta.aggregation.metrics import Metric
from twisted_rta.store.memory import MemoryWindowStore

MINUTE = NOW - NOW % 60  # 03:00:00, a 5m boundary too
GO_WINDOWS = {
    "windows": {
        "resolutions": [{"size": "1m", "retention": "1d"}, {"size": "5m", "retention": "7d"}],
        "figures": [
            {"size": "1m", "figures": ["count", "sum", "avg"]},
            {"size": "5m", "figures": ["count", "p95", "p99"], "of": "revenue_histogram"},
        ],
        "sliding": [{"size": "5m", "step": "1m", "figures": ["rate", "unique"]}],
    }
}


def go_daemon(extra: dict[str, Any] | None = None, **kwargs: Any) -> Daemon:
    return make_daemon({**GO_WINDOWS, **(extra or {})}, **kwargs)


def settle(daemon: Daemon) -> None:
    for _ in range(50):
        daemon.reactor.advance(0)


def ingest(daemon: Daemon, events: list[dict[str, Any]]) -> None:
    reply = daemon.http.post("/api/v1/events/batch", events)
    assert reply.status == 202, reply.json
    settle(daemon)


def tick(daemon: Daemon, seconds: float) -> None:
    """Advance the clock in flush ticks (5 s)."""
    for _ in range(round(seconds / 5)):
        daemon.reactor.advance(5)


def purchase(user: str, amount: float, at: float) -> dict[str, Any]:
    return {
        "type": "purchase",
        "user_id": user,
        "timestamp": at * 1000,
        "properties": {"amount": amount},
    }


def view(user: str, at: float) -> dict[str, Any]:
    return {"type": "pageview", "user_id": user, "timestamp": at * 1000, "properties": {}}


def windows_answer(daemon: Daemon) -> dict[str, Any]:
    reply = daemon.http.get("/api/v1/windows")
    assert reply.status == 200, reply.json
    data: dict[str, Any] = reply.json["data"]
    return data


def window(data: dict[str, Any], size: int, start: float) -> dict[str, Any]:
    from twisted_rta.timefmt import iso_utc

    [found] = [
        w
        for w in data["windows"]
        if w["resolution_seconds"] == size and w["start"] == iso_utc(start)
    ]
    return found


def spread(daemon: Daemon) -> None:
    """Events over 02:56..03:00 (four closed minutes, one open one), users u1..u4."""
    ingest(
        daemon,
        [
            purchase("u1", 10, MINUTE - 240),  # 02:56
            view("u1", MINUTE - 239),
            purchase("u2", 30, MINUTE - 180),  # 02:57
            view("u2", MINUTE - 120),  # 02:58
            view("u3", MINUTE - 120),
            view("u1", MINUTE - 60),  # 02:59
        ],
    )


def test_each_window_reports_its_resolutions_figures_and_the_go_aliases() -> None:
    daemon = go_daemon()
    spread(daemon)
    ingest(daemon, [purchase("u4", 5, MINUTE + 1), purchase("u4", 7, MINUTE + 2)])  # open
    tick(daemon, 15)  # 02:59 and before close; 03:00 stays open
    data = windows_answer(daemon)
    assert data["complete"] is True

    minute = window(data, 60, MINUTE - 240)
    assert minute["closed"] is True
    assert minute["figures"] == {"count": 2, "sum": 10, "avg": 10}
    quiet = window(data, 60, MINUTE - 120)  # pageviews only: no observation
    assert quiet["figures"] == {"count": 2, "sum": 0, "avg": None}
    current = window(data, 60, MINUTE)
    assert current["closed"] is False
    assert current["figures"] == {"count": 2, "sum": 12, "avg": 6}

    # The 5m window 02:55..03:00 closed; its figures are its histogram's quantiles.
    five = window(data, 300, MINUTE - 300)
    assert five["closed"] is True
    assert five["figures"] == {"count": 6, "p95": 30, "p99": 30}
    histogram = five["metrics"]["revenue_histogram"]
    assert (five["figures"]["p95"], five["figures"]["p99"]) == (histogram["p95"], histogram["p99"])
    # The open 5m window holds the open minute inside it (merged as a range reads it).
    open_five = window(data, 300, MINUTE)
    assert open_five["closed"] is False
    assert open_five["figures"] == {"count": 2, "p95": 7, "p99": 7}

    for listed in data["windows"]:
        metrics = listed["metrics"]
        for go, ours in (("events", "total_events"), ("active_users", "unique_users")):
            assert {**metrics[go], "name": ours} == metrics[ours]
            assert metrics[go]["name"] == go
        types = [name.split(":", 1)[1] for name in metrics if name.startswith("events_by_type:")]
        assert types
        for kind in types:
            assert metrics[f"events:{kind}"]["value"] == metrics[f"events_by_type:{kind}"]["value"]
    assert window(data, 60, MINUTE - 120)["metrics"]["active_users"]["value"] == 2


def test_a_window_with_no_figures_configured_has_none() -> None:
    daemon = make_daemon()  # default resolutions, no figures, no sliding
    ingest(daemon, [purchase("u1", 4, MINUTE)])
    data = windows_answer(daemon)
    assert data["sliding"] == []
    assert {tuple(w["figures"]) for w in data["windows"]} == {()}
    assert window(data, 60, MINUTE)["metrics"]["events"]["value"] == 1


def test_sliding_figures_cover_the_last_five_minutes_and_move_every_minute() -> None:
    daemon = go_daemon()
    spread(daemon)
    tick(daemon, 15)
    [sliding] = windows_answer(daemon)["sliding"]
    # At 03:00:15 the latest completed span is [02:55, 03:00): 6 events, users u1..u3.
    assert sliding == {
        "size_seconds": 300,
        "step_seconds": 60,
        "start": "2026-11-27T02:55:00.000Z",
        "end": "2026-11-27T03:00:00.000Z",
        "figures": {"rate": pytest.approx(6 / 300), "unique": 3},
    }
    ingest(daemon, [view("u9", MINUTE + 30)])  # in the open minute: not in a completed span
    assert windows_answer(daemon)["sliding"][0]["figures"]["unique"] == 3

    tick(daemon, 45)  # 03:01:00: [02:56, 03:01) takes 03:00 in
    [sliding] = windows_answer(daemon)["sliding"]
    assert (sliding["start"], sliding["end"]) == (
        "2026-11-27T02:56:00.000Z",
        "2026-11-27T03:01:00.000Z",
    )
    assert sliding["figures"] == {"rate": pytest.approx(7 / 300), "unique": 4}

    tick(daemon, 60)  # 03:02: 02:56 (u1's purchase and view) falls out
    assert windows_answer(daemon)["sliding"][0]["figures"] == {
        "rate": pytest.approx(5 / 300),
        "unique": 4,  # u1 is still in 02:59
    }
    tick(daemon, 240)  # 03:06: [03:01, 03:06) is empty
    assert windows_answer(daemon)["sliding"][0]["figures"] == {"rate": 0, "unique": 0}


def test_the_sliding_series_has_a_point_every_step() -> None:
    daemon = go_daemon()
    spread(daemon)
    ingest(daemon, [view("u4", MINUTE + 10)])
    tick(daemon, 60)  # 03:01:00
    reply = daemon.http.get(
        "/api/v1/windows/sliding?size=5m&from=2026-11-27T02:56:30Z&to=2026-11-27T03:05:00Z"
    )
    assert reply.status == 200, reply.json
    data = reply.json["data"]
    assert (data["size_seconds"], data["step_seconds"], data["complete"]) == (300, 60, True)
    assert (data["from"], data["to"]) == ("2026-11-27T02:56:30.000Z", "2026-11-27T03:05:00.000Z")
    # Ends 02:57 .. 03:01 (not later than now); each covers the five minutes before it.
    points = [
        (p["end"][11:16], p["figures"]["rate"] * 300, p["figures"]["unique"])
        for p in data["points"]
    ]
    assert points == [
        ("02:57", pytest.approx(2), 1),  # 02:56: u1 twice
        ("02:58", pytest.approx(3), 2),  # + 02:57: u2
        ("02:59", pytest.approx(5), 3),  # + 02:58: u2, u3
        ("03:00", pytest.approx(6), 3),  # + 02:59: u1
        ("03:01", pytest.approx(7), 4),  # + 03:00: u4
    ]
    assert data["points"][0]["start"] == "2026-11-27T02:52:00.000Z"
    # Each point equals a ranged query over its span (the same merge of the same windows).
    ranged = daemon.http.get(
        "/api/v1/metrics/active_users?from=2026-11-27T02:56:00Z&to=2026-11-27T03:00:59Z"
    ).json["data"]
    assert ranged["value"] == points[-1][2]

    # The step and size may be left out when one sliding window is configured.
    default = daemon.http.get("/api/v1/windows/sliding").json["data"]
    assert len(default["points"]) == 61  # 02:01 .. 03:01
    assert default["points"][-1] == data["points"][-1]


def test_sliding_series_parameters_are_checked() -> None:
    daemon = go_daemon()
    for query, parameter in (
        ("size=10m", "size"),
        ("size=soon", "size"),
        ("size=5m&step=2m", "step"),
        ("from=yesterday", "from"),
        ("from=-3d", "from"),  # 4321 steps: more than 1500 points
    ):
        reply = daemon.http.get(f"/api/v1/windows/sliding?{query}")
        assert (reply.status, reply.json["parameter"]) == (400, parameter), query
    bare = make_daemon()
    reply = bare.http.get("/api/v1/windows/sliding")
    assert (reply.status, reply.json["parameter"]) == (400, "size")
    assert "windows.sliding" in reply.json["message"]


def test_two_sliding_windows_of_one_size_need_a_step() -> None:
    sliding = [
        {"size": "5m", "step": "1m", "figures": ["rate"]},
        {"size": "5m", "step": "5m", "figures": ["unique"]},
    ]
    daemon = make_daemon({"windows": {"sliding": sliding}})
    reply = daemon.http.get("/api/v1/windows/sliding?size=5m")
    assert (reply.status, reply.json["parameter"]) == (400, "step")
    reply = daemon.http.get("/api/v1/windows/sliding")
    assert (reply.status, reply.json["parameter"]) == (400, "size")
    chosen = daemon.http.get("/api/v1/windows/sliding?size=5m&step=5m&from=-10m").json["data"]
    assert chosen["step_seconds"] == 300
    assert {tuple(point["figures"]) for point in chosen["points"]} == {("unique",)}
    listed = daemon.http.get("/api/v1/windows").json["data"]["sliding"]
    assert [(s["step_seconds"], list(s["figures"])) for s in listed] == [
        (60, ["rate"]),
        (300, ["unique"]),
    ]


def test_a_range_of_a_sliding_window_too_long_to_compute_is_refused() -> None:
    daemon = make_daemon({"windows": {"sliding": [{"size": "1d", "step": "1m"}]}})
    reply = daemon.http.get("/api/v1/windows/sliding?from=-2h")  # 121 x 1440 windows
    assert (reply.status, reply.json["parameter"]) == (400, "from")
    assert "at most 69" in reply.json["message"]
    assert daemon.http.get("/api/v1/windows/sliding?from=-1h").status == 200


def test_ranged_and_series_queries_answer_the_go_names_with_the_same_numbers() -> None:
    daemon = go_daemon()
    spread(daemon)
    tick(daemon, 15)
    pairs = (
        ("events", "total_events"),
        ("active_users", "unique_users"),
        ("events:purchase", "events_by_type:purchase"),
        ("events:pageview", "events_by_type:pageview"),
    )
    for go, ours in pairs:
        for query in ("?from=-10m", "?from=-10m&to=-2m", ""):
            theirs = daemon.http.get(f"/api/v1/metrics/{go}{query}")
            mine = daemon.http.get(f"/api/v1/metrics/{ours}{query}")
            assert theirs.status == mine.status == 200, (go, query)
            assert theirs.json["data"]["name"] == go
            assert {**theirs.json["data"], "name": ours} == mine.json["data"]
        for query in ("", "?resolution=5m&from=-1h"):
            theirs = daemon.http.get(f"/api/v1/metrics/{go}/series{query}").json["data"]
            mine = daemon.http.get(f"/api/v1/metrics/{ours}/series{query}").json["data"]
            assert theirs["points"], (go, query)
            assert [p["metric"]["value"] for p in theirs["points"]] == [
                p["metric"]["value"] for p in mine["points"]
            ]
            assert {p["metric"]["name"] for p in theirs["points"]} == {go}
            assert {**theirs, "name": ours, "points": mine["points"]} == mine
    theirs = daemon.http.get("/api/v1/breakdown/events?from=-10m").json["data"]
    mine = daemon.http.get("/api/v1/breakdown/events_by_type?from=-10m").json["data"]
    assert theirs == {**mine, "base": "events"}
    assert daemon.http.get("/api/v1/metrics/events:nothing?from=-1h").status == 404


def test_a_rule_metric_named_like_a_go_alias_keeps_its_name() -> None:
    rules = [{"name": "events", "when": {"type": "purchase"}, "count": True}]
    daemon = go_daemon({"metrics": {"rules": rules}})
    ingest(daemon, [purchase("u1", 3, MINUTE), view("u1", MINUTE)])
    assert daemon.http.get("/api/v1/metrics/events?from=-5m").json["data"]["value"] == 1
    assert daemon.http.get("/api/v1/metrics/total_events?from=-5m").json["data"]["value"] == 2
    metrics = window(windows_answer(daemon), 60, MINUTE)["metrics"]
    assert metrics["events"]["value"] == 1  # the rule's own
    assert metrics["active_users"]["value"] == 1  # the other aliases still answer


def test_windows_and_sliding_figures_are_merged_across_nodes() -> None:
    rows: dict[Any, Metric] = {}
    a = go_daemon(
        {"store": {"url": "memory:", "node_id": "a"}},
        store=MemoryWindowStore(node_id="a", rows=rows),
    )
    b = go_daemon(
        {"store": {"url": "memory:", "node_id": "b"}},
        store=MemoryWindowStore(node_id="b", rows=rows),
    )
    ingest(a, [purchase("u1", 10, MINUTE - 120), purchase("u2", 20, MINUTE - 120)])
    ingest(b, [purchase("u2", 40, MINUTE - 120), view("v1", MINUTE - 60)])
    for daemon in (a, b):
        tick(daemon, 15)  # both write their closed minutes to the shared store
    for daemon in (a, b):
        data = windows_answer(daemon)
        assert window(data, 60, MINUTE - 120)["figures"] == {"count": 3, "sum": 70, "avg": 70 / 3}
        assert data["sliding"][0]["figures"] == {"rate": pytest.approx(4 / 300), "unique": 3}


def test_with_the_store_down_windows_are_this_nodes_and_sliding_figures_null() -> None:
    store = MemoryWindowStore(node_id="node-a")
    daemon = go_daemon(store=store)
    spread(daemon)
    tick(daemon, 15)
    store.available = False
    reply = daemon.http.get("/api/v1/windows")
    assert reply.status == 200
    data = reply.json["data"]
    assert data["complete"] is False
    assert "this node only" in reply.json["message"]
    assert window(data, 60, MINUTE - 240)["figures"] == {"count": 2, "sum": 10, "avg": 10}
    assert data["sliding"][0]["figures"] == {"rate": None, "unique": None}
    series = daemon.http.get("/api/v1/windows/sliding")
    assert (series.status, series.json["code"]) == (503, "store_unavailable")
