"""Operational routes: /health (liveness), /ready (readiness checks), /metrics (Prometheus)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

import yaml
from klein import Klein
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from twisted_rta.ops.health import Readiness
from twisted_rta.timefmt import iso_utc
from twisted_rta.web.errors import add_json_error_handlers
from twisted_rta.web.responses import encode_json, encoded_json_body, json_body


def load_openapi() -> dict[str, Any]:
    """The OpenAPI contract shipped in this package (docs/openapi.yaml links to it)."""
    text = resources.files("twisted_rta.web").joinpath("openapi.yaml").read_text("utf-8")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: faster
    return dict(yaml.load(text, Loader=loader))


class OpsApp:
    app = add_json_error_handlers(Klein())

    def __init__(
        self,
        *,
        clock: IReactorTime,
        readiness: Callable[[], Readiness],
        registry: CollectorRegistry,
    ) -> None:
        self._clock = clock
        self._readiness = readiness
        self._registry = registry
        self._openapi: bytes | None = None  # loaded on first request

    @app.route("/health", methods=["GET"])
    def health(self, request: IRequest) -> bytes:
        return json_body(request, {"status": "healthy", "time": iso_utc(self._clock.seconds())})

    @app.route("/ready", methods=["GET"])
    def ready(self, request: IRequest) -> bytes:
        readiness = self._readiness()
        payload = {
            "status": "ready" if readiness.ready else "not_ready",
            "checks": readiness.as_dict(),
            "time": iso_utc(self._clock.seconds()),
        }
        return json_body(request, payload, 200 if readiness.ready else 503)

    @app.route("/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        if self._openapi is None:
            self._openapi = encode_json(load_openapi())
        return encoded_json_body(request, self._openapi)

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        # Rendered here on the reactor thread: a consistent snapshot, no WSGI thread pool.
        # The Accept header picks the classic text format (0.0.4) or OpenMetrics.
        accept = (request.getHeader(b"Accept") or b"").decode("latin-1")
        encode, content_type = choose_encoder(accept)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        return bytes(encode(self._registry))
