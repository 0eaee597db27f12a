"""Ingest: POST /api/v1/events and /api/v1/events/batch. Events are decoded and validated,
rate limited per client, and queued all or nothing before the 202.

``IngestHandler`` is the whole of it, framework-neutral: both the Klein routes of
``IngestApp`` (mounted at /api/v1 by the edge, the declared reference) and the fast lane
(web/fastlane.py) call it, so no rule exists twice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from twisted_rta.events.decode import decode_batch, decode_event
from twisted_rta.events.model import BodyError, Event, EventLimits, RejectedEvent
from twisted_rta.ingest.intake import Intake, Refused
from twisted_rta.ops.telemetry import Telemetry
from twisted_rta.web.errors import add_json_error_handlers
from twisted_rta.web.exchange import Exchange
from twisted_rta.web.ratelimit import RequestLimiters, retry_after
from twisted_rta.web.responses import ApiError, encoded_json_body
from twisted_rta.web.site import RTARequest

_encode_answer = msgspec.json.Encoder().encode


class IngestHandler:
    """Decode, validate, rate-limit and take one ingest request's body; the answer's status
    and headers go on ``request``, its body is returned (or a Deferred of it while the
    journal makes it durable). Refusals raise ``ApiError``."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        intake: Intake,
        limits: EventLimits,
        telemetry: Telemetry,
        limiters: RequestLimiters | None = None,
    ) -> None:
        self._clock = clock
        self._intake = intake
        self.limits = limits  # replaced on reload
        self._telemetry = telemetry
        self._limiters = limiters

    def early_refusal(self, endpoint: str, body_bytes: int) -> ApiError | None:
        """The 503 a body of this size would get for want of room, known before decoding it
        (the fast lane asks from Content-Length alone and then skips the body). Every event
        is at most ``max_event_bytes``, so the body holds at least this many; one at least."""
        count = 1 if endpoint == "single" else max(1, body_bytes // self.limits.max_event_bytes)
        refused = self._intake.refusal(count)
        if refused is None:
            return None
        return ApiError(
            503, refused.code, refused.message, headers={"Retry-After": str(refused.retry_after)}
        )

    def count_early_refusal(self, endpoint: str, refusal: ApiError) -> ApiError:
        """Count a request refused before decoding (its events unknown: as one)."""
        self._telemetry.received(endpoint).inc()
        self._telemetry.rejected(endpoint, refusal.code).inc()
        return refusal

    def single(self, request: Exchange, body: bytes) -> bytes | Deferred[bytes]:
        endpoint = "single"
        refusal = self.early_refusal(endpoint, len(body))
        if refusal is not None:
            raise self.count_early_refusal(endpoint, refusal)
        telemetry = self._telemetry
        telemetry.received(endpoint).inc()
        try:
            event = decode_event(body, now=self._clock.seconds(), limits=self.limits)
        except BodyError as error:
            telemetry.rejected(endpoint, error.code).inc()
            raise ApiError(error.status, error.code, error.message) from None
        except RejectedEvent as rejected:
            problem = rejected.error
            telemetry.rejected(endpoint, problem.code).inc()
            raise ApiError(400, problem.code, problem.message, field=problem.field) from None
        self._check_event_rate(request, 1, endpoint)
        payload = {
            "status": "accepted",
            "data": {"event_id": event.id, "type": event.type},
            "message": "event queued for processing",
        }
        return self._take((event,), endpoint, request, payload)

    def batch(self, request: Exchange, body: bytes) -> bytes | Deferred[bytes]:
        endpoint = "batch"
        refusal = self.early_refusal(endpoint, len(body))
        if refusal is not None:
            raise self.count_early_refusal(endpoint, refusal)
        telemetry = self._telemetry
        try:
            batch = decode_batch(body, now=self._clock.seconds(), limits=self.limits)
        except BodyError as error:
            # The events of an unreadable body cannot be counted: count the request as one.
            telemetry.received(endpoint).inc()
            telemetry.rejected(endpoint, error.code).inc()
            raise ApiError(error.status, error.code, error.message) from None
        telemetry.received(endpoint).inc(batch.total)
        for problem in batch.errors:
            telemetry.rejected(endpoint, problem.code).inc()
        errors = [problem.as_dict() for problem in batch.errors]
        if not batch.events:
            raise ApiError(
                400,
                "no_valid_events",
                f"none of the {batch.total} events is valid",
                errors=errors,
            )
        self._check_event_rate(request, len(batch.events), endpoint)
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
        return self._take(batch.events, endpoint, request, payload)

    def _check_event_rate(self, request: Exchange, count: int, endpoint: str) -> None:
        """The events bucket of the client the edge identified (its key, or its address)."""
        if self._limiters is None:
            return
        wait = self._limiters.take_events(request.rate_identity, count, self._clock.seconds())
        if wait:
            self._telemetry.rejected(endpoint, "rate_limited").inc(count)
            rate = self._limiters.ingest_events.rate
            raise ApiError(
                429,
                "rate_limited",
                f"too many events; at most {rate.per_second:g} per second (burst "
                f"{rate.burst:g}) for this client; nothing of this request was accepted",
                headers={"Retry-After": retry_after(wait)},
            )

    def _take(
        self,
        events: Sequence[Event],
        endpoint: str,
        request: Exchange,
        payload: dict[str, Any],
    ) -> bytes | Deferred[bytes]:
        """All or nothing: a 202 promises that every listed event will be aggregated, so it
        is sent only once intake has taken them (journalled, and queued)."""
        try:
            durable = self._intake.take(events)
        except Refused as refused:
            self._telemetry.rejected(endpoint, refused.code).inc(len(events))
            raise ApiError(
                503,
                refused.code,
                refused.message,
                headers={"Retry-After": str(refused.retry_after)},
            ) from None
        self._telemetry.accepted(endpoint).inc(len(events))
        # msgspec writes what json.dumps would for these strings and integers, 4x faster.
        body = _encode_answer(payload)
        if durable is None:
            return encoded_json_body(request, body, 202)
        return durable.addCallback(lambda _: encoded_json_body(request, body, 202))


class IngestApp:
    """The Klein routes of ingest: the declared reference of what the fast lane answers."""

    app = add_json_error_handlers(Klein())

    def __init__(self, handler: IngestHandler) -> None:
        self.handler = handler

    @app.route("/events", methods=["POST"])
    def ingest_one(self, request: RTARequest) -> bytes | Deferred[bytes]:
        return self.handler.single(request, _body(request))

    @app.route("/events/batch", methods=["POST"])
    def ingest_batch(self, request: RTARequest) -> bytes | Deferred[bytes]:
        return self.handler.batch(request, _body(request))


def _body(request: RTARequest) -> bytes:
    content = request.content  # None only once the request is finished
    return content.read() if content is not None else b""
