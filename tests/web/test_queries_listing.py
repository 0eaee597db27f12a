"""GET /api/v1/metrics: pages by cursor, parameter errors, and the whole list rendered in
slices on the reactor that equals the old one-call rendering, every reply on the contract."""

from __future__ import annotations

import json
from typing import Any

import pytest
from treq.testing import StubTreq

from tests.conftest import Daemon, make_daemon
from tests.contract import check as check_contract
from tests.helpers import Reply, site_of
from twisted_rta.query.slices import STEP_ITEMS
from twisted_rta.query.views import metric_view
from twisted_rta.web.responses import encode_json


def pageview(page: str, user: str = "u1") -> dict[str, Any]:
    return {"type": "pageview", "user_id": user, "properties": {"page": page}}


def ingest(daemon: Daemon, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 500):
        assert daemon.http.post("/api/v1/events/batch", events[start : start + 500]).status == 202
    for _ in range(50):
        daemon.reactor.advance(0)


def with_pages(n: int) -> Daemon:
    daemon = make_daemon()
    ingest(daemon, [pageview(f"/p{i:05d}", f"u{i % 13}") for i in range(n)])
    return daemon


@pytest.fixture(scope="module")
def small() -> Daemon:
    return with_pages(40)  # 40 page_views:* plus 6 more metrics


def names_of(reply: Reply) -> list[str]:
    return list(reply.json["data"])


# -- pages ------------------------------------------------------------------------------------


def test_without_paging_the_answer_keeps_its_shape(small: Daemon) -> None:
    body = small.http.get("/api/v1/metrics").json
    assert set(body) == {"status", "data", "message"}
    assert names_of(small.http.get("/api/v1/metrics")) == sorted(body["data"])


def test_pages_follow_next_to_the_last_one(small: Daemon) -> None:
    everything = names_of(small.http.get("/api/v1/metrics"))
    seen: list[str] = []
    path = "/api/v1/metrics?limit=10"
    while True:
        reply = small.http.get(path)
        assert reply.status == 200
        seen += names_of(reply)
        meta = reply.json["meta"]
        assert meta["limit"] == 10
        if meta["next"] is None:
            break
        assert meta["next"] == seen[-1]
        assert reply.json["message"] == "retrieved 10 metrics"
        path = f"/api/v1/metrics?limit=10&after={meta['next']}"
    assert seen == everything
    assert len(seen) == 46 and len(names_of(reply)) == 6


def test_a_page_after_the_last_name_is_empty(small: Daemon) -> None:
    last = names_of(small.http.get("/api/v1/metrics"))[-1]
    reply = small.http.get(f"/api/v1/metrics?after={last}")
    assert reply.json == {
        "status": "success",
        "data": {},
        "message": "no more metrics",
        "meta": {"limit": None, "next": None},
    }


def test_prefix_and_cursor_together(small: Daemon) -> None:
    reply = small.http.get("/api/v1/metrics?prefix=page_views:&after=page_views:/p00035&limit=3")
    assert names_of(reply) == [f"page_views:/p000{i}" for i in (36, 37, 38)]
    assert reply.json["meta"] == {"limit": 3, "next": "page_views:/p00038"}
    last = small.http.get("/api/v1/metrics?prefix=page_views:&after=page_views:/p00038&limit=3")
    assert names_of(last) == ["page_views:/p00039"] and last.json["meta"]["next"] is None


def test_a_percent_encoded_cursor_with_slashes_works(small: Daemon) -> None:
    reply = small.http.get("/api/v1/metrics?after=page_views%3A%2Fp00038&limit=1")
    assert names_of(reply) == ["page_views:/p00039"]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=ten", "limit"),
        ("limit=", "limit"),
        ("limit=-1", "limit"),
        ("after=", "after"),
        ("after=&limit=5", "after"),
    ],
)
def test_bad_paging_parameters_are_400_naming_them(
    small: Daemon, query: str, parameter: str
) -> None:
    reply = small.http.get(f"/api/v1/metrics?{query}")
    assert reply.status == 400
    assert reply.json["code"] == "invalid_parameter"
    assert reply.json["parameter"] == parameter
    assert parameter in reply.json["message"]


def test_the_largest_page_is_allowed(small: Daemon) -> None:
    reply = small.http.get("/api/v1/metrics?limit=10000")
    assert len(names_of(reply)) == 46 and reply.json["meta"]["next"] is None


# -- rendered in slices -----------------------------------------------------------------------


def get_in_turns(daemon: Daemon, path: str) -> tuple[Reply, int]:
    """GET ``path``; return the reply and how many reactor turns it needed after the call."""
    stub = StubTreq(site_of(daemon.service.listeners[0].factory).resource)
    outcome: list[Any] = []
    stub.get("http://rta.test" + path).addBoth(outcome.append)
    turns = 0
    while not outcome:
        turns += 1
        assert turns < 1000, "the answer never finished"
        daemon.reactor.advance(0)
        stub.flush()
    response = outcome[0]
    body: list[bytes] = []
    stub.content(response).addBoth(body.append)
    headers = {
        name.decode().lower(): [value.decode() for value in values]
        for name, values in response.headers.getAllRawHeaders()
    }
    reply = Reply(response.code, headers, body[0])
    check_contract("GET", path, reply.status, reply.headers, reply.body)
    return reply, turns


def one_call_rendering(daemon: Daemon) -> bytes:
    """The list as the query layer rendered it before: every view at once, then one
    stdlib JSON encoding of the whole envelope."""
    aggregator = daemon.service.workers._aggregator
    views = {name: metric_view(snapshot) for name, snapshot in aggregator.metrics().items()}
    return encode_json(
        {"status": "success", "data": views, "message": f"retrieved {len(views)} metrics"}
    )


def test_a_long_list_is_built_over_several_turns_and_equals_the_one_call_rendering() -> None:
    daemon = with_pages(3 * STEP_ITEMS)
    reply, turns = get_in_turns(daemon, "/api/v1/metrics")
    assert turns >= 1  # not complete when the request call returned
    assert reply.status == 200
    assert reply.body == one_call_rendering(daemon)
    assert json.loads(reply.body) == json.loads(one_call_rendering(daemon))


def test_a_long_page_equals_the_slice_of_the_whole_list() -> None:
    daemon = with_pages(3 * STEP_ITEMS)
    whole = json.loads(one_call_rendering(daemon))["data"]
    names = list(whole)
    reply, _ = get_in_turns(daemon, f"/api/v1/metrics?after={names[99]}&limit=600")
    assert reply.json["data"] == {name: whole[name] for name in names[100:700]}
    assert reply.json["meta"] == {"limit": 600, "next": names[699]}


def test_a_long_breakdown_is_ranked_in_turns() -> None:
    daemon = make_daemon()
    events = [pageview(f"/p{i:04d}") for i in range(3 * STEP_ITEMS) for _ in range(1 + i % 4)]
    ingest(daemon, events)
    reply, turns = get_in_turns(daemon, "/api/v1/breakdown/page_views?limit=3")
    assert turns >= 1
    data = reply.json["data"]
    assert data["items"] == [
        {"value": "/p0003", "count": 4},
        {"value": "/p0007", "count": 4},
        {"value": "/p0011", "count": 4},
    ]
    assert data["total"] == len(events) and data["other"] == len(events) - 12
    assert data["complete"] is True
