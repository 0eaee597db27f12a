"""The /api/v1 routes: event ingestion and the query endpoints (seed-compatible envelopes)."""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from twisted_rta.events import BodyError, EventLimits, RejectedEvent, decode_batch, decode_event
from twisted_rta.query import QueryService
from twisted_rta.queue import IntakeQueue
from twisted_rta.web.errors import add_json_error_handlers
from twisted_rta.web.responses import ApiError, json_body

RETRY_AFTER_SECONDS = "1"


def _success(request: IRequest, data: Any, message: str, status: int = 200) -> bytes:
    return json_body(request, {"status": "success", "data": data, "message": message}, status)


class ApiApp:
    app = add_json_error_handlers(Klein())

    def __init__(
        self,
        *,
        clock: IReactorTime,
        queue: IntakeQueue,
        query: QueryService,
        limits: EventLimits,
    ) -> None:
        self._clock = clock
        self._queue = queue
        self._query = query
        self._limits = limits

    # -- ingestion ---------------------------------------------------------------------

    @app.route("/events", methods=["POST"])
    def ingest_one(self, request: IRequest) -> bytes:
        body = request.content.read()
        try:
            event = decode_event(body, now=self._clock.seconds(), limits=self._limits)
        except BodyError as error:
            raise ApiError(error.status, error.code, error.message) from None
        except RejectedEvent as rejected:
            problem = rejected.error
            raise ApiError(400, problem.code, problem.message, field=problem.field) from None
        self._enqueue((event,))
        payload = {
            "status": "accepted",
            "data": {"event_id": event.id, "type": event.type},
            "message": "event queued for processing",
        }
        return json_body(request, payload, 202)

    @app.route("/events/batch", methods=["POST"])
    def ingest_batch(self, request: IRequest) -> bytes:
        body = request.content.read()
        try:
            batch = decode_batch(body, now=self._clock.seconds(), limits=self._limits)
        except BodyError as error:
            raise ApiError(error.status, error.code, error.message) from None
        errors = [problem.as_dict() for problem in batch.errors]
        if not batch.events:
            raise ApiError(
                400, "no_valid_events", f"none of the {batch.total} events is valid",
                errors=errors,
            )
        self._enqueue(batch.events)
        data = {
            "accepted": len(batch.events),
            "rejected": len(batch.errors),
            "total": batch.total,
            "event_ids": [event.id for event in batch.events],
            "errors": errors,
        }
        payload = {
            "status": "accepted",
            "data": data,
            "message": f"batch processed: {batch.total} events",
        }
        return json_body(request, payload, 202)

    def _enqueue(self, events: Any) -> None:
        """All or nothing: a 202 promises that every listed event will be aggregated."""
        if self._queue.offer(events):
            return
        headers = {"Retry-After": RETRY_AFTER_SECONDS}
        if self._queue.closed:
            raise ApiError(503, "shutting_down", "the daemon is shutting down; retry on another "
                           "node or after it restarts", headers=headers)
        raise ApiError(
            503, "queue_full",
            f"intake queue is full ({self._queue.depth} of {self._queue.capacity} events "
            "waiting); nothing of this request was accepted, retry later",
            headers=headers,
        )

    # -- queries -----------------------------------------------------------------------

    @app.route("/metrics", methods=["GET"])
    def all_metrics(self, request: IRequest) -> bytes:
        prefix_values = request.args.get(b"prefix")
        prefix = prefix_values[0].decode("utf-8", "replace") if prefix_values else None
        metrics = self._query.metrics(prefix)
        message = f"retrieved {len(metrics)} metrics" if metrics else "no metrics yet"
        return _success(request, metrics, message)

    @app.route("/metrics/<path:name>", methods=["GET"])
    def one_metric(self, request: IRequest, name: str) -> bytes:
        metric = self._query.metric(name)
        if metric is None:
            raise ApiError(404, "metric_not_found", f"metric {name!r} not found", name=name)
        return _success(request, metric, f"metric {name!r} found")

    @app.route("/stats", methods=["GET"])
    def stats(self, request: IRequest) -> bytes:
        return _success(request, self._query.stats(self._clock.seconds()),
                        "aggregator statistics")

    @app.route("/windows", methods=["GET"])
    def windows(self, request: IRequest) -> bytes:
        windows = self._query.windows()
        return _success(request, {"windows": windows}, f"{len(windows)} windows")
