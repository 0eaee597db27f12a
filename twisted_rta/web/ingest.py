"""Ingest: POST /api/v1/events, /api/v1/events/batch, Plausible's /api/event, Segment's
/v1/<call> and PostHog's capture routes. Bodies are
inflated when compressed (web/compression.py), events decoded and validated, rate limited per
client, and queued all or nothing before the 202.

``IngestHandler`` is the whole of it, framework-neutral: both the Klein routes of
``IngestApp`` (mounted by the edge, the declared reference) and the fast lane
(web/fastlane.py) call it, so no rule exists twice."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import msgspec
from attrs import evolve
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from twisted_rta.config import LimitsConfig
from twisted_rta.events.decode import decode_batch, decode_event
from twisted_rta.events.ids import new_uuid4
from twisted_rta.events.model import BatchResult, BodyError, Event, EventLimits, RejectedEvent
from twisted_rta.events.plausible import (
    PAGEVIEW,
    RESERVED_PROPERTIES,
    decode_plausible,
    to_event,
)
from twisted_rta.events.posthog import frame_posthog, posthog_events
from twisted_rta.events.segment import BATCH, frame_segment, segment_events
from twisted_rta.ingest.intake import Intake, Refused
from twisted_rta.ops.telemetry import Telemetry
from twisted_rta.web.auth import ADMIN, INGEST, Authenticator
from twisted_rta.web.browser import (
    ENGAGEMENT,
    MAX_SITES_PER_HIT,
    NOT_COUNTED_NAMES,
    BrowserPolicy,
    enriched,
    site_of,
)
from twisted_rta.web.compression import decoded_body
from twisted_rta.web.edge import key_refusal
from twisted_rta.web.errors import add_json_error_handlers
from twisted_rta.web.exchange import Exchange
from twisted_rta.web.ratelimit import RequestLimiters, retry_after
from twisted_rta.web.responses import ApiError, encoded_json_body, plain_body
from twisted_rta.web.routes import POSTHOG_RULE
from twisted_rta.web.site import RTARequest

_encode_answer = msgspec.json.Encoder().encode
SEGMENT_BATCH = f"segment_{BATCH}"  # the endpoint (telemetry label) of /v1/batch
SEGMENT_IMPORT = "import"  # /v1/import: a batch, historical for a key that may import
POSTHOG = "posthog"  # the endpoint of PostHog's capture routes
_BATCH_ENDPOINTS = frozenset({"batch", SEGMENT_BATCH, f"segment_{SEGMENT_IMPORT}", POSTHOG})
_FORM = b"application/x-www-form-urlencoded"
_GZIP_MAGIC = b"\x1f\x8b"


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
        browser: BrowserPolicy | None = None,
        new_id: Callable[[], str] = new_uuid4,
        history_age: float | None = None,
    ) -> None:
        self._clock = clock
        self._intake = intake
        self.limits = limits  # replaced on reload
        self._telemetry = telemetry
        self._limiters = limiters
        self._browser = browser
        self._new_id = new_id
        # How far back a historical import may go: the longest window retention (older
        # events would land in windows already deleted). None: no older than the limits.
        self._history_age = history_age

    def early_refusal(self, endpoint: str, body_bytes: int) -> ApiError | None:
        """The 503 a body of this size would get for want of room, known before decoding it
        (the fast lane asks from Content-Length alone and then skips the body). Every event
        is at most ``max_event_bytes``, so the body holds at least this many; one at least."""
        batch = endpoint in _BATCH_ENDPOINTS
        count = max(1, body_bytes // self.limits.max_event_bytes) if batch else 1
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
        body = self._decoded(request, body, endpoint)
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
        body = self._decoded(request, body, endpoint)
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

    def plausible(self, request: Exchange, body: bytes) -> bytes | Deferred[bytes]:
        """``POST /api/event``: one event as Plausible's tracker sends it, answered 202
        ``ok`` as Plausible answers. The visitor is a keyed hash of the client's address
        and User-Agent per site (web/visitors.py); neither is kept. A crawler, or with
        ``privacy.honor_do_not_track`` a DNT or GPC request, is answered 202 and not
        counted. A hit for several sites (``domain`` "a.com,b.com") is one event per site."""
        endpoint = "plausible"
        browser = self._browser
        if browser is None:
            raise ApiError(404, "not_found", "the browser endpoints are not configured")
        refusal = self.early_refusal(endpoint, len(body))
        if refusal is not None:
            raise self.count_early_refusal(endpoint, refusal)
        body = self._decoded(request, body, endpoint)
        telemetry = self._telemetry
        raw_agent = request.getHeader(b"User-Agent")
        user_agent = raw_agent.decode("latin-1") if raw_agent is not None else None
        try:
            hit = decode_plausible(body, self.limits)
        except BodyError as error:
            telemetry.received(endpoint).inc()
            telemetry.rejected(endpoint, error.code).inc()
            raise ApiError(error.status, error.code, error.message) from None
        sites = tuple(dict.fromkeys(site_of(domain) for domain in hit.domains))
        telemetry.received(endpoint).inc(len(sites))
        if len(sites) > MAX_SITES_PER_HIT:
            telemetry.rejected(endpoint, "invalid_field").inc(len(sites))
            raise ApiError(
                400,
                "invalid_field",
                f'"domain" names {len(sites)} sites; at most {MAX_SITES_PER_HIT} per event',
            )
        dropped = browser.refusal(
            user_agent, request.getHeader(b"DNT"), request.getHeader(b"Sec-GPC")
        )
        if dropped is None and hit.name in NOT_COUNTED_NAMES:
            dropped = ENGAGEMENT
        if dropped is not None:
            browser.drops.add(dropped, len(sites))
            return plain_body(request, b"ok", 202)
        now = self._clock.seconds()
        events = []
        for site in sites:
            visitor = browser.visitors.visitor(site, request.client_address, user_agent or "", now)
            if visitor is None:
                telemetry.rejected(endpoint, "visitors_unavailable").inc(len(hit.domains))
                raise ApiError(
                    503,
                    "visitors_unavailable",
                    "visitor ids need the store's salts, which are not loaded yet; retry",
                    headers={"Retry-After": "5"},
                )
            event = to_event(hit, now=now, event_id=self._new_id(), user_id=visitor, site=site)
            found = browser.enricher.properties(hit.url, hit.referrer, site, user_agent)
            visit = browser.visitors.visit(visitor, pageview=hit.name == PAGEVIEW)
            events.append(
                enriched(event, found, self.limits.max_properties, RESERVED_PROPERTIES, visit)
            )
        self._check_event_rate(request, len(events), endpoint)
        return self._take(events, endpoint, request, None)

    def segment(self, call: str, request: Exchange, body: bytes) -> bytes | Deferred[bytes]:
        """``POST /v1/<call>``: Segment's HTTP Tracking API (events/segment.py), answered
        200 ``{"success": true}`` as Segment answers. ``/v1/import`` is a batch whose events
        may be as old as the windows kept, for a key that may import history (``admin``;
        with another key it is ``/v1/batch``). Without a header key, the body's
        ``writeKey`` is checked here, as the edge checks a header's (``body_key_check``)."""
        endpoint = f"segment_{call}"
        refusal = self.early_refusal(endpoint, len(body))
        if refusal is not None:
            raise self.count_early_refusal(endpoint, refusal)
        body = self._decoded(request, body, endpoint)
        check = request.body_key_check
        try:
            framed = frame_segment(body, BATCH if call == SEGMENT_IMPORT else call, self.limits)
        except BodyError as error:
            raise self._unreadable(request, endpoint, error) from None
        if check is not None:
            _admit_body_key(request, check, framed.write_key)
        limits = self._limits(request, historical=call == SEGMENT_IMPORT)
        result = segment_events(
            framed, received=self._clock.seconds(), limits=limits, new_id=self._new_id
        )
        return self._take_sdk(
            request, endpoint, result, framed.call is not None, {"success": True}, "messages"
        )

    def posthog(self, request: Exchange, body: bytes) -> bytes | Deferred[bytes]:
        """``POST /capture``, ``/batch``, ``/e``, ``/i/v0/e`` (a trailing slash or not):
        PostHog's capture API (events/posthog.py), answered 200 ``{"status": 1}`` as
        PostHog answers. A body without Content-Encoding is gzip when
        ``?compression=gzip-js`` says so or its first bytes do (posthog-js); a form body's
        ``data`` holds the events; ``?_=`` is posthog-js's send time in milliseconds.
        ``historical_migration`` lets a key that may import history send events as old as
        the windows kept. The project key (``api_key``, ``token``) is checked here when no
        header has one."""
        endpoint = POSTHOG
        refusal = self.early_refusal(endpoint, len(body))
        if refusal is not None:
            raise self.count_early_refusal(endpoint, refusal)
        args = request.args
        # posthog-js names gzip in the query, or (recent versions) not at all: a JSON or
        # form body never starts with gzip's magic bytes.
        gzip_js = _arg(args, b"compression") == b"gzip-js" or body[:2] == _GZIP_MAGIC
        body = self._decoded(request, body, endpoint, gzip_without_header=gzip_js)
        content_type = request.getHeader(b"Content-Type") or b""
        form = content_type.split(b";", 1)[0].strip().lower() == _FORM
        sent_at_ms = _arg(args, b"_")
        check = request.body_key_check
        try:
            framed = frame_posthog(
                body,
                self.limits,
                form=form,
                sent_at_ms=sent_at_ms.decode("latin-1") if sent_at_ms is not None else None,
            )
        except BodyError as error:
            raise self._unreadable(request, endpoint, error) from None
        if check is not None:
            _admit_body_key(request, check, framed.api_key)
        limits = self._limits(request, historical=framed.historical)
        result = posthog_events(
            framed, received=self._clock.seconds(), limits=limits, new_id=self._new_id
        )
        return self._take_sdk(request, endpoint, result, framed.single, {"status": 1}, "events")

    def _unreadable(self, request: Exchange, endpoint: str, error: BodyError) -> ApiError:
        """The error of a body that could not be read; with the key still in it unread, a
        client without one gets the 401 first (an anonymous client learns nothing more)."""
        check = request.body_key_check
        if check is not None:
            _admit_body_key(request, check, None)
        self._telemetry.received(endpoint).inc()
        self._telemetry.rejected(endpoint, error.code).inc()
        return ApiError(error.status, error.code, error.message)

    def _limits(self, request: Exchange, *, historical: bool) -> EventLimits:
        """The limits of a request: for a historical import by a caller that may import
        history, events may be as old as the longest window retention."""
        age = self._history_age
        if not historical or not request.history_allowed or age is None:
            return self.limits
        limits = cast(LimitsConfig, self.limits)
        return evolve(limits, max_event_age=max(age, limits.max_event_age))

    def _take_sdk(
        self,
        request: Exchange,
        endpoint: str,
        result: BatchResult,
        single: bool,
        payload: dict[str, Any],
        what: str,
    ) -> bytes | Deferred[bytes]:
        """An SDK's events, taken as its service answers (``payload``, 200). A batch's
        invalid events are listed in ``errors`` next to it (the services say nothing of
        them); a batch with none valid, or an invalid single event, is a 400."""
        telemetry = self._telemetry
        telemetry.received(endpoint).inc(result.total)
        for problem in result.errors:
            telemetry.rejected(endpoint, problem.code).inc()
        if single and result.errors:
            problem = result.errors[0]
            raise ApiError(400, problem.code, problem.message, field=problem.field)
        errors = [problem.as_dict() for problem in result.errors]
        if not result.events:
            raise ApiError(
                400,
                "no_valid_events",
                f"none of the {result.total} {what} is valid",
                errors=errors,
            )
        self._check_event_rate(request, len(result.events), endpoint)
        if errors:
            payload = {**payload, "errors": errors}
        return self._take(result.events, endpoint, request, payload, status=200)

    def _decoded(
        self, request: Exchange, body: bytes, endpoint: str, *, gzip_without_header: bool = False
    ) -> bytes:
        """The body inflated as its Content-Encoding says, within the body limit (the one
        the transport holds the bytes on the wire to); a refusal counts as one event, as
        any unreadable body does. Called after the early refusal, which sizes the body as
        sent, as the fast lane does from Content-Length."""
        try:
            return decoded_body(
                request.requestHeaders,
                body,
                self.limits.max_body_bytes,
                gzip_without_header=gzip_without_header,
            )
        except ApiError as error:
            self._telemetry.received(endpoint).inc()
            self._telemetry.rejected(endpoint, error.code).inc()
            raise

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
        payload: dict[str, Any] | None,
        *,
        status: int = 202,
    ) -> bytes | Deferred[bytes]:
        """All or nothing (``payload`` None: Plausible's plain ``ok``): a 202 promises that
        every listed event will be aggregated, so it is sent only once intake has taken
        them (journalled, and queued). A resent event (its id taken before, ingest/dedup.py)
        is acknowledged like the rest, as Segment and PostHog acknowledge one, and counted
        only in ``rta_events_deduplicated_total``."""
        try:
            taken = self._intake.take(events, self._clock.seconds())
        except Refused as refused:
            self._telemetry.rejected(endpoint, refused.code).inc(len(events))
            raise ApiError(
                503,
                refused.code,
                refused.message,
                headers={"Retry-After": str(refused.retry_after)},
            ) from None
        durable = taken.durable
        if taken.duplicates:
            self._telemetry.deduplicated(endpoint).inc(taken.duplicates)
        self._telemetry.accepted(endpoint).inc(len(events) - taken.duplicates)
        if payload is None:  # Plausible's answer
            if durable is None:
                return plain_body(request, b"ok", 202)
            return durable.addCallback(lambda _: plain_body(request, b"ok", 202))
        # msgspec writes what json.dumps would for these strings and integers, 4x faster.
        body = _encode_answer(payload)
        if durable is None:
            return encoded_json_body(request, body, status)
        return durable.addCallback(lambda _: encoded_json_body(request, body, status))


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

    @app.route("/event", methods=["POST"])  # /api/event, Plausible's Events API
    def ingest_plausible(self, request: RTARequest) -> bytes | Deferred[bytes]:
        return self.handler.plausible(request, _body(request))

    # Segment's HTTP Tracking API, below /v1 (/v1/import and /v1/b are /v1/batch's rule).
    @app.route("/track", methods=["POST"])
    def segment_track(self, request: RTARequest) -> bytes | Deferred[bytes]:
        return self.handler.segment("track", request, _body(request))

    @app.route("/page", methods=["POST"])
    def segment_page(self, request: RTARequest) -> bytes | Deferred[bytes]:
        return self.handler.segment("page", request, _body(request))

    @app.route("/screen", methods=["POST"])
    def segment_screen(self, request: RTARequest) -> bytes | Deferred[bytes]:
        return self.handler.segment("screen", request, _body(request))

    @app.route("/identify", methods=["POST"])
    def segment_identify(self, request: RTARequest) -> bytes | Deferred[bytes]:
        return self.handler.segment("identify", request, _body(request))

    @app.route("/group", methods=["POST"])
    def segment_group(self, request: RTARequest) -> bytes | Deferred[bytes]:
        return self.handler.segment("group", request, _body(request))

    @app.route("/alias", methods=["POST"])
    def segment_alias(self, request: RTARequest) -> bytes | Deferred[bytes]:
        return self.handler.segment("alias", request, _body(request))

    @app.route("/batch", methods=["POST"])
    def segment_batch(self, request: RTARequest) -> bytes | Deferred[bytes]:
        return self.handler.segment(BATCH, request, _body(request))

    @app.route("/import", methods=["POST"])
    def segment_import(self, request: RTARequest) -> bytes | Deferred[bytes]:
        return self.handler.segment(SEGMENT_IMPORT, request, _body(request))

    # PostHog's capture API: every path of it is served by this one rule (web/routes.py).
    @app.route(POSTHOG_RULE, methods=["POST"])
    def posthog_capture(self, request: RTARequest) -> bytes | Deferred[bytes]:
        return self.handler.posthog(request, _body(request))


def _arg(args: dict[bytes, list[bytes]], name: bytes) -> bytes | None:
    values = args.get(name)
    return values[0] if values else None


def _admit_body_key(request: Exchange, authenticator: Authenticator, key: str | None) -> None:
    """Let the request on with the body's key, or raise the 401/403 the edge would give."""
    caller, refused = key_refusal(authenticator, key, INGEST)
    if caller is not None:
        request.caller_name = caller.name
        request.rate_identity = ("key", caller.name)  # its events bucket, as the edge's
        request.history_allowed = caller.may(ADMIN)
    if refused is not None:
        raise ApiError(refused.status, refused.code, refused.message, headers=refused.headers)


def _body(request: RTARequest) -> bytes:
    content = request.content  # None only once the request is finished
    return content.read() if content is not None else b""
