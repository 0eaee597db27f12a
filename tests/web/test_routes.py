"""The route table: in step with the Klein apps, and the one source of the edge's policy,
the metrics labels and the preflight methods; the request state it leaves on RTARequest."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from klein import Klein

from tests.conftest import make_daemon
from tests.helpers import raw_http, site_of
from twisted_rta.web.auth import INGEST, READ
from twisted_rta.web.dashboard import DashboardApp
from twisted_rta.web.ingest import IngestApp
from twisted_rta.web.ops import OpsApp
from twisted_rta.web.queries import QueryApp
from twisted_rta.web.routes import (
    DASHBOARD,
    INGEST_APP,
    INGEST_CORS,
    OPS,
    OTHER_LABEL,
    QUERY_APP,
    TRACKER,
    UNKNOWN,
    Route,
    RouteTable,
    route_table,
)
from twisted_rta.web.site import RTARequest
from twisted_rta.web.tracker import TrackerApp

KLEIN_APPS: dict[str, Klein] = {
    OPS: OpsApp.app,
    INGEST_APP: IngestApp.app,
    QUERY_APP: QueryApp.app,
    DASHBOARD: DashboardApp.app,
    TRACKER: TrackerApp.app,
}
ROUTES = route_table()  # the defaults
READ_KEY = "read-key-0123456789ab"
KEYS = {"auth": {"keys": [{"name": "dash", "key": READ_KEY, "scopes": ["read"]}]}}


def klein_rules() -> set[tuple[str, str, frozenset[str]]]:
    """(app, rule, methods) of every Klein route; werkzeug adds HEAD to GET routes."""
    found = set()
    for name, app in KLEIN_APPS.items():
        for rule in app.url_map.iter_rules():
            methods = frozenset(rule.methods or ()) - {"HEAD"}
            found.add((name, rule.rule, methods))
    return found


def table_rules() -> set[tuple[str, str, frozenset[str]]]:
    return {
        (route.app, route.klein_rule, frozenset(route.methods))
        for route in ROUTES.routes
        if route.app is not None
    }


def test_every_klein_route_is_in_the_table_and_every_entry_has_a_klein_route() -> None:
    assert klein_rules() - table_rules() == set(), "Klein routes missing from web/routes.py"
    assert table_rules() - klein_rules() == set(), "table entries no Klein app serves"
    assert ROUTES.apps() == set(KLEIN_APPS)


def test_the_comparison_notices_a_route_missing_on_either_side() -> None:
    extra = Klein()
    extra.route("/new", methods=["GET"])(lambda request: b"")
    KLEIN_APPS["extra"] = extra
    try:
        assert ("extra", "/new", frozenset({"GET"})) in klein_rules() - table_rules()
    finally:
        del KLEIN_APPS["extra"]
    dropped = [route for route in ROUTES.routes if route.template != "/api/v1/stats"]
    smaller = {(r.app, r.klein_rule, frozenset(r.methods)) for r in dropped}
    assert klein_rules() - smaller == {(QUERY_APP, "/stats", frozenset({"GET"}))}


@pytest.mark.parametrize(
    ("path", "template"),
    [
        (b"/health", "/health"),
        (b"/api/v1/events", "/api/v1/events"),
        (b"/api/v1/events/batch", "/api/v1/events/batch"),
        (b"/api/v1/metrics", "/api/v1/metrics"),
        (b"/api/v1/metrics/page_views:/a/b", "/api/v1/metrics/{name}"),
        (b"/api/v1/metrics/page_views:/a/series", "/api/v1/metrics/{name}/series"),
        (b"/api/v1/breakdown/clicks", "/api/v1/breakdown/{base}"),
        (b"/dashboard/assets/dashboard.js", "/dashboard/assets/{file}"),
        (b"/favicon.ico", "/favicon.ico"),
        (b"/metrics", "/metrics"),
        (b"/api/v1/breakdown/a/b", UNKNOWN.template),  # one segment only
        (b"/api/v1/metrics/", UNKNOWN.template),  # an empty name
        (b"/api/v1/nope", UNKNOWN.template),
        (b"/", "/"),
    ],
)
def test_paths_match_their_route(path: bytes, template: str) -> None:
    assert ROUTES.match(path).template == template


def test_the_policy_of_each_kind_of_route() -> None:
    ingest = ROUTES.match(b"/api/v1/events")
    assert (ingest.scope, ingest.cors, ingest.rate_limit, ingest.key_in_query) == (
        INGEST,
        INGEST_CORS,
        INGEST,
        True,
    )
    assert ingest.allow == b"POST, OPTIONS"
    stats = ROUTES.match(b"/api/v1/stats")
    assert (stats.scope, stats.rate_limit, stats.key_in_query) == (READ, READ, False)
    assert stats.allow == b"GET, HEAD, OPTIONS"
    assert ROUTES.match(b"/metrics").public_option
    assert ROUTES.match(b"/health").open and ROUTES.match(b"/favicon.ico").open
    stream = ROUTES.match(b"/api/v1/stream")
    assert stream.dashboard and stream.key_in_query and not stream.open
    # Unknown paths: declared, private, answered by the edge itself.
    assert ROUTES.fallback is UNKNOWN
    assert (UNKNOWN.scope, UNKNOWN.app, UNKNOWN.label) == (READ, None, OTHER_LABEL)


def test_the_table_refuses_a_path_twice_and_a_template_outside_its_mount() -> None:
    route = Route("/x", ("GET",), OPS, None)
    with pytest.raises(ValueError, match="twice"):
        RouteTable([route, route], fallback=UNKNOWN)
    with pytest.raises(ValueError, match="mount"):
        Route("/x", ("GET",), QUERY_APP, READ, mount="/api/v1")


def test_unknown_paths_need_the_read_scope_before_the_404() -> None:
    daemon = make_daemon(KEYS)
    anonymous = daemon.http.get("/no/such/route")
    assert (anonymous.status, anonymous.json["code"]) == (401, "unauthorized")
    known = daemon.http.get("/api/v1/stats")
    assert known.status == 401  # the same answer: nothing said about which paths exist
    reply = daemon.http.get("/no/such/route", headers={"Authorization": f"Bearer {READ_KEY}"})
    assert (reply.status, reply.json["code"]) == (404, "not_found")


def test_percent_encoded_paths_match_like_their_decoded_form() -> None:
    daemon = make_daemon()
    daemon.http.post("/api/v1/events", {"type": "pageview", "properties": {"page": "/x"}})
    for _ in range(50):
        daemon.reactor.advance(0)
    assert daemon.http.get("/api/v1/metrics/page_views%3A%2Fx").status == 200
    assert daemon.http.get("/api/v1/breakdown/page%2Fviews").status == 404  # two segments


def test_request_state_is_declared_on_the_request_class() -> None:
    hints = typing.get_type_hints(RTARequest)
    for name in ("request_id", "caller_name", "rate_identity", "route"):
        assert name in hints, name
    fresh: Any = RTARequest.__new__(RTARequest)
    assert (fresh.request_id, fresh.caller_name, fresh.rate_identity) == (b"", "-", None)
    assert fresh.route is UNKNOWN


def test_the_edge_records_the_route_caller_and_identity_on_the_request() -> None:
    daemon = make_daemon(KEYS)
    site = site_of(daemon.service.listeners[0].factory)  # a bridged GET: twisted.web's Request
    seen: list[RTARequest] = []
    log = site.log

    def keep(request: RTARequest) -> None:
        seen.append(request)
        log(request)

    site.log = keep
    raw_http(
        daemon.service.listeners[0].factory,
        b"GET /api/v1/metrics/x HTTP/1.1\r\nHost: x\r\nX-Request-ID: r-1\r\n"
        b"Authorization: Bearer " + READ_KEY.encode() + b"\r\n\r\n",
    )
    (request,) = seen
    assert request.route.template == "/api/v1/metrics/{name}"
    assert (request.request_id, request.caller_name) == (b"r-1", "dash")
    assert request.rate_identity == ("key", "dash")
