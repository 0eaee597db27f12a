"""Operational routes: /health (liveness) and /ready (real readiness checks)."""

from __future__ import annotations

from collections.abc import Callable

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from twisted_rta.health import Readiness
from twisted_rta.logs import iso_utc
from twisted_rta.web.errors import add_json_error_handlers
from twisted_rta.web.responses import json_body


class OpsApp:
    app = add_json_error_handlers(Klein())

    def __init__(self, *, clock: IReactorTime, readiness: Callable[[], Readiness]) -> None:
        self._clock = clock
        self._readiness = readiness

    @app.route("/health", methods=["GET"])
    def health(self, request: IRequest) -> bytes:
        return json_body(request, {"status": "healthy", "time": iso_utc(self._clock.seconds())})

    @app.route("/ready", methods=["GET"])
    def ready(self, request: IRequest) -> bytes:
        readiness = self._readiness()
        payload = {
            "status": "ready" if readiness.ready else "not_ready",
            "checks": readiness.checks,
            "time": iso_utc(self._clock.seconds()),
        }
        return json_body(request, payload, 200 if readiness.ready else 503)
