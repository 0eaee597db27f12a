"""The edge of ``server.metrics_listen``: ``/metrics`` alone (Prometheus on a port of its
own), by the main table's route for it, so the same key and rate-limit rules apply; every
other path is answered 404 there."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource

from twisted_rta.web.edge import AccessPolicy, EdgeResource
from twisted_rta.web.ratelimit import RequestLimiters
from twisted_rta.web.routes import OPS, OTHER_LABEL, Route, RouteTable

METRICS_PATH = b"/metrics"

#: Every other path of a metrics port: the edge's own 404, open (no key, no rate limit):
#: the port serves nothing else, so there is no path to hide behind a 401.
NOT_ON_METRICS_PORT = Route(
    "/{path}", ("GET",), None, None, rate_limit=None, spans_segments=True, label=OTHER_LABEL
)


def metrics_routes(routes: RouteTable) -> RouteTable:
    """The ``/metrics`` route of ``routes`` (the daemon's table), alone."""
    route = routes.match(METRICS_PATH)
    if route.app != OPS:
        raise ValueError("the route table has no /metrics route of the ops app")
    return RouteTable([route], fallback=NOT_ON_METRICS_PORT)


def metrics_edge(
    ops: IResource,
    policy: AccessPolicy,
    *,
    routes: RouteTable,
    limiters: RequestLimiters,
    clock: IReactorTime,
) -> EdgeResource:
    """The edge of a metrics port: ``ops`` (the ops app's resource) answers ``/metrics``
    after the checks of ``routes``' route for it (``policy`` is replaced on reload, as the
    main edge's is)."""
    return EdgeResource(
        {OPS: ops}, policy, routes=metrics_routes(routes), limiters=limiters, clock=clock
    )
