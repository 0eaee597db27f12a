"""The routing root: mounts the ops and API apps and wraps them in the edge resource."""

from __future__ import annotations

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from twisted_rta.ratelimit import RequestLimiters
from twisted_rta.web.edge import AccessPolicy, EdgeResource
from twisted_rta.web.errors import add_json_error_handlers


class RootApp:
    app = add_json_error_handlers(Klein())

    def __init__(self, *, ops: IResource, api: IResource) -> None:
        self._ops = ops
        self._api = api

    @app.route("/api/v1/", branch=True)
    def api(self, request: IRequest) -> IResource:
        return self._api

    @app.route("/", branch=True)
    def ops(self, request: IRequest) -> IResource:
        return self._ops


def build_resource(
    *,
    ops: IResource,
    api: IResource,
    policy: AccessPolicy,
    limiters: RequestLimiters | None = None,
    clock: IReactorTime | None = None,
) -> EdgeResource:
    return EdgeResource(RootApp(ops=ops, api=api).app.resource(), policy, limiters=limiters,
                        clock=clock)
