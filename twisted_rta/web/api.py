"""The /api/v1 routes: event ingestion and the query endpoints (seed-compatible envelopes)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from twisted_rta.aggregation.metrics import metric_class
from twisted_rta.aggregation.resolution import Resolution
from twisted_rta.events.decode import decode_batch, decode_event
from twisted_rta.events.model import BodyError, Event, EventLimits, RejectedEvent
from twisted_rta.ingest.queue import IntakeQueue
from twisted_rta.ops.telemetry import Telemetry
from twisted_rta.query.service import (
    QueryService,
    StoreUnavailable,
    metric_view,
    range_view,
    tidy_number,
)
from twisted_rta.query.timerange import (
    RangeError,
    TimeRange,
    choose_resolution,
    parse_range,
    parse_resolution,
)
from twisted_rta.web.errors import add_json_error_handlers
from twisted_rta.web.ratelimit import RequestLimiters, retry_after
from twisted_rta.web.responses import ApiError, json_body

RETRY_AFTER_SECONDS = "1"
T = TypeVar("T")


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
        resolutions: tuple[Resolution, ...],
        store_backlogged: Callable[[], bool],
        telemetry: Telemetry,
        limiters: RequestLimiters | None = None,
    ) -> None:
        self._clock = clock
        self._queue = queue
        self._query = query
        self.limits = limits
        self._resolutions = resolutions
        self._store_backlogged = store_backlogged
        self._telemetry = telemetry
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._limiters = limiters

    # -- ingestion ---------------------------------------------------------------------

    @app.route("/events", methods=["POST"])
    def ingest_one(self, request: IRequest) -> bytes:
        endpoint = "single"
        self._received(endpoint).inc()
        body = request.content.read()
        try:
            event = decode_event(body, now=self._clock.seconds(), limits=self.limits)
        except BodyError as error:
            self._rejected(endpoint, error.code)
            raise ApiError(error.status, error.code, error.message) from None
        except RejectedEvent as rejected:
            problem = rejected.error
            self._rejected(endpoint, problem.code)
            raise ApiError(400, problem.code, problem.message, field=problem.field) from None
        self._check_event_rate(request, 1, endpoint)
        self._enqueue((event,), endpoint)
        payload = {
            "status": "accepted",
            "data": {"event_id": event.id, "type": event.type},
            "message": "event queued for processing",
        }
        return json_body(request, payload, 202)

    @app.route("/events/batch", methods=["POST"])
    def ingest_batch(self, request: IRequest) -> bytes:
        endpoint = "batch"
        body = request.content.read()
        try:
            batch = decode_batch(body, now=self._clock.seconds(), limits=self.limits)
        except BodyError as error:
            # The events of an unreadable body cannot be counted: count the request as one.
            self._received(endpoint).inc()
            self._rejected(endpoint, error.code)
            raise ApiError(error.status, error.code, error.message) from None
        self._received(endpoint).inc(batch.total)
        for problem in batch.errors:
            self._rejected(endpoint, problem.code)
        errors = [problem.as_dict() for problem in batch.errors]
        if not batch.events:
            raise ApiError(
                400,
                "no_valid_events",
                f"none of the {batch.total} events is valid",
                errors=errors,
            )
        self._check_event_rate(request, len(batch.events), endpoint)
        self._enqueue(batch.events, endpoint)
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

    def _check_event_rate(self, request: IRequest, count: int, endpoint: str) -> None:
        if self._limiters is None:
            return
        identity = getattr(request, "rate_identity", None)
        wait = self._limiters.take_events(identity, count, self._clock.seconds())
        if wait:
            self._rejected(endpoint, "rate_limited", count)
            rate = self._limiters.ingest_events.rate
            raise ApiError(
                429,
                "rate_limited",
                f"too many events; at most {rate.per_second:g} per second (burst "
                f"{rate.burst:g}) for this client; nothing of this request was accepted",
                headers={"Retry-After": retry_after(wait)},
            )

    def _received(self, endpoint: str) -> Any:
        # Label lookups cost ~3 us each; the few label values are resolved once.
        return self._counter_child(self._telemetry.events_received, endpoint)

    def _counter_child(self, counter: Any, *labels: str) -> Any:
        key = (id(counter), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        return child

    def _rejected(self, endpoint: str, reason: str, count: int = 1) -> None:
        self._counter_child(self._telemetry.events_rejected, endpoint, reason).inc(count)

    def _enqueue(self, events: Sequence[Event], endpoint: str) -> None:
        """All or nothing: a 202 promises that every listed event will be aggregated."""
        try:
            self._offer(events)
        except ApiError as refused:
            self._rejected(endpoint, refused.code, len(events))
            raise
        self._counter_child(self._telemetry.events_accepted, endpoint).inc(len(events))

    def _offer(self, events: Sequence[Event]) -> None:
        headers = {"Retry-After": RETRY_AFTER_SECONDS}
        if self._store_backlogged():
            raise ApiError(
                503,
                "store_unavailable",
                "the window store is failing and too many "
                "closed windows wait for it; nothing of this request was accepted, "
                "retry later",
                headers={"Retry-After": "5"},
            )
        if self._queue.offer(events):
            return
        if self._queue.closed:
            raise ApiError(
                503,
                "shutting_down",
                "the daemon is shutting down; retry on another node or after it restarts",
                headers=headers,
            )
        raise ApiError(
            503,
            "queue_full",
            f"intake queue is full ({self._queue.depth} of {self._queue.capacity} events "
            "waiting); nothing of this request was accepted, retry later",
            headers=headers,
        )

    # -- queries -----------------------------------------------------------------------

    @app.route("/metrics", methods=["GET"])
    async def all_metrics(self, request: IRequest) -> bytes:
        metrics, complete = await self._query.metrics(_arg(request, "prefix"))
        message = f"retrieved {len(metrics)} metrics" if metrics else "no metrics yet"
        if not complete:
            message += " (this node only: the store could not be read)"
        return _success(request, metrics, message)

    @app.route("/metrics/<path:name>/series", methods=["GET"])
    async def metric_series(self, request: IRequest, name: str) -> bytes:
        timerange = self._range(request, default_from="-1h", explicit_resolution=True)
        points = await self._history(self._query.series(name, timerange))
        data = {"name": name, **range_view(timerange), "points": points}
        return _success(request, data, f"{len(points)} points of {name!r}")

    @app.route("/metrics/<path:name>", methods=["GET"])
    async def one_metric(self, request: IRequest, name: str) -> bytes:
        if _arg(request, "from") is None and _arg(request, "to") is None:
            metric = await self._query.metric(name)
            if metric is None:
                raise _metric_not_found(name)
            return _success(request, metric, f"metric {name!r} found")
        timerange = self._range(request, default_from=None)
        merged = await self._history(self._query.metric_over(name, timerange))
        if merged is None:
            # Known metric, no data in the range: an empty value of its kind.
            known = await self._query.metric(name)
            if known is None:
                raise _metric_not_found(name)
            merged = metric_class(known["type"])()
        view = {**metric_view(merged.snapshot(name)), "range": range_view(timerange)}
        return _success(request, view, f"metric {name!r} found")

    @app.route("/breakdown/<base>", methods=["GET"])
    async def breakdown(self, request: IRequest, base: str) -> bytes:
        if not _BASE_NAME.fullmatch(base):
            raise ApiError(
                400,
                "invalid_parameter",
                "base must be a metric family name such as page_views, clicks or events_by_type",
                parameter="base",
            )
        limit = _int_arg(request, "limit", default=10, minimum=1, maximum=1000)
        ranged = _arg(request, "from") is not None or _arg(request, "to") is not None
        timerange = self._range(request, default_from=None) if ranged else None
        result, complete = await self._history(self._query.breakdown(base, timerange, limit))
        data: dict[str, Any] = {
            "base": base,
            "items": [{"value": key, "count": tidy_number(value)} for key, value in result.items],
            "other": tidy_number(result.other),
            "total": tidy_number(result.total),
        }
        data.update(range_view(timerange) if timerange else {"complete": complete})
        return _success(request, data, f"top {len(result.items)} values of {base!r}")

    @app.route("/stats", methods=["GET"])
    def stats(self, request: IRequest) -> bytes:
        return _success(request, self._query.stats(self._clock.seconds()), "aggregator statistics")

    @app.route("/windows", methods=["GET"])
    def windows(self, request: IRequest) -> bytes:
        windows = self._query.windows()
        return _success(request, {"windows": windows}, f"{len(windows)} windows")

    def _range(
        self, request: IRequest, *, default_from: str | None, explicit_resolution: bool = False
    ) -> TimeRange:
        now = self._clock.seconds()
        try:
            start, end = parse_range(
                _arg(request, "from"), _arg(request, "to"), now=now, default_from=default_from
            )
            wanted = parse_resolution(_arg(request, "resolution")) if explicit_resolution else None
            return choose_resolution(
                start, end, now=now, resolutions=self._resolutions, wanted_size=wanted
            )
        except RangeError as error:
            raise ApiError(
                400, "invalid_parameter", error.message, parameter=error.parameter
            ) from None

    @staticmethod
    async def _history(pending: Awaitable[T]) -> T:
        try:
            return await pending
        except StoreUnavailable as error:
            raise ApiError(
                503,
                "store_unavailable",
                f"history is unavailable: {error}",
                headers={"Retry-After": "5"},
            ) from None


_BASE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def _metric_not_found(name: str) -> ApiError:
    return ApiError(404, "metric_not_found", f"metric {name!r} not found", name=name)


def _arg(request: IRequest, name: str) -> str | None:
    values = request.args.get(name.encode("ascii"))
    return values[0].decode("utf-8", "replace") if values else None


def _int_arg(request: IRequest, name: str, *, default: int, minimum: int, maximum: int) -> int:
    raw = _arg(request, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= maximum:
        raise ApiError(
            400,
            "invalid_parameter",
            f"{name} must be an integer between {minimum} and {maximum}; got {raw!r}",
            parameter=name,
        )
    return value
