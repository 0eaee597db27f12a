"""The fast ingest lane: an HTTP/1.1 server protocol on httptools (C llhttp) that answers
the ingest POSTs itself (/api/v1/events, /api/v1/events/batch, /api/event and a renamed
tracker.endpoint_path: every ingest route of the table), with the edge's rules (``admit``)
and the ingest handler the Klein routes use, and bridges every other request to twisted.web
(web/bridge.py) on the same connection.

It owns the connection: parsing, the header and body limits (413 before buffering, chunked
too), Expect: 100-continue, the request, write (its rule: web/site.py's docstring) and idle
deadlines, the connection cap, keep-alive and HTTP/1.0. Requests on one connection are
answered one at a time, in order, whichever lane answers them. Answers are byte for byte
what twisted.web would send (the differential test holds it to that), except for the Date
and generated ids.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import httptools
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString, parse_qs
from twisted.web.http_headers import Headers
from twisted.web.server import version as SERVER_VERSION
from zope.interface import implementer

from twisted_rta.web.auth import Authenticator
from twisted_rta.web.bridge import Bridge, serialised_request
from twisted_rta.web.edge import EdgeResource
from twisted_rta.web.errors import internal_error
from twisted_rta.web.ingest import POSTHOG, IngestHandler
from twisted_rta.web.responses import ApiError
from twisted_rta.web.routes import (
    INGEST_APP,
    POSTHOG_RULE,
    SEGMENT_CALLS,
    UNKNOWN,
    Route,
    RouteTable,
)
from twisted_rta.web.site import (
    RTAChannel,
    RTASite,
    body_too_large_answer,
    loggable_path,
    new_request_id,
    reason_phrase,
)

failures = Logger(namespace="twisted_rta.web.fastlane")

# What this lane answers itself, by the ingest app's rule: every path the route table gives
# one of these rules is answered here when POSTed (renamed ones too).
INGEST_KINDS = {
    "/events": "single",
    "/events/batch": "batch",
    "/event": "plausible",
    **{f"/{call}": f"segment_{call}" for call in SEGMENT_CALLS},
    POSTHOG_RULE: POSTHOG,
}
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\n\r\n"  # twisted.web's own, then it closes
MAX_LINE_BYTES = 16384  # twisted.web's longest request or header line (HTTPChannel.MAX_LENGTH)
MAX_WAITING = 16  # parsed requests queued behind the one being answered before reading pauses


class _Stop(Exception):
    """Raised from a parser callback once the connection's last answer is decided."""


class ResponseHeaders:
    """Response headers in twisted.web's order and spelling (first set, first sent)."""

    def __init__(self, spelling: Callable[[bytes], bytes]) -> None:
        self._spelling = spelling
        self.values: dict[bytes, tuple[bytes, bytes]] = {}

    def set(self, name: bytes, value: bytes) -> None:
        self.values[name.lower()] = (self._spelling(name), value)

    def head(self, version: bytes, code: int, reason: bytes) -> list[bytes]:
        parts = [b"HTTP/", version, b" ", b"%d" % code, b" ", reason, b"\r\n"]
        for name, value in self.values.values():
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        return parts


class RequestHeaders:
    """The request's headers by lower-case name (``Exchange.requestHeaders``)."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        by_name: dict[bytes, list[bytes]] = {}
        for name, value in raw:
            by_name.setdefault(name.lower(), []).append(value)
        self._by_name = by_name

    def getRawHeaders(self, name: bytes) -> list[bytes] | None:
        return self._by_name.get(name.lower())


class LeanRequest:
    """One request answered by the fast lane: the ``Exchange`` the edge and the ingest
    handler work on, and the response they set on it."""

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: RequestHeaders,
        peer: IAddress,
        response: ResponseHeaders,
    ) -> None:
        self.method = method
        path, query = target.split(b"?", 1) if b"?" in target else (target, b"")
        self.path = path
        self.args: dict[bytes, list[bytes]] = (
            parse_qs(query, 1) if query else {}  # twisted.web's parser: the same args
        )
        self._headers = headers
        self._peer = peer
        self.request_id = b""
        self.route: Route = UNKNOWN
        self.caller_name = "-"
        self.rate_identity: tuple[str, str] | None = None
        self.client_address = "unknown"
        self.body_key_check: Authenticator | None = None
        self.history_allowed = False
        self.code = 200
        self.reason = b"OK"
        self.response = response

    @property
    def requestHeaders(self) -> RequestHeaders:
        return self._headers

    def getHeader(self, key: bytes) -> bytes | None:
        values = self._headers.getRawHeaders(key)
        return values[-1] if values else None  # twisted.web's choice: the last one

    def getClientAddress(self) -> IAddress:
        return self._peer

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        self.code = code
        self.reason = reason_phrase(code) if message is None else message

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.response.set(name, value)


class Message:
    """One request as parsed, until it is answered."""

    __slots__ = (
        "body",
        "body_bytes",
        "had_body",
        "header_bytes",
        "headers",
        "kind",
        "method",
        "owes_continue",
        "persistent",
        "refusal",
        "started_at",
        "target",
        "version",
    )

    def __init__(self) -> None:
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.method = b""
        self.version = b"1.1"
        self.persistent = True
        self.kind: str | None = None  # an INGEST_KINDS kind when this lane answers it
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.had_body = False
        self.refusal: ApiError | None = None  # a 503 decided from Content-Length alone
        self.owes_continue = False
        self.started_at = 0.0


class Closing:
    """The connection's last answer (400, 413), queued behind any answer still owed."""

    __slots__ = ("data", "log_args")

    def __init__(self, data: bytes, log_args: tuple[Any, ...] | None) -> None:
        self.data = data
        self.log_args = log_args


@implementer(IPushProducer)
class FastLaneProtocol(Protocol):
    """One client connection (see the module docstring)."""

    # A TCP transport that is also a push producer and consumer (typeshed's ITCPTransport
    # has no producer methods).
    transport: Any

    def __init__(self, lane: FastLane) -> None:
        self._lane = lane
        self._parser = httptools.HttpRequestParser(self)
        self._message: Message | None = None  # being parsed
        self._waiting: deque[Message | Closing] = deque()  # parsed, not yet being answered
        self._answering = False
        self._draining = False
        self._stopped = False  # no more requests are read: a last answer is decided
        self._closed = False
        self._bridge: Bridge | None = None
        # Deadlines: since when a request is being received (None: none is), since when the
        # transport has held more than its buffer without draining it or the connection has
        # been closing (None: neither; the write deadline's rule is web/site.py's), and since
        # when the connection has been idle (None: it is not). One timer serves them all,
        # re-armed only when it fires early: no timer call per request.
        self._receiving_since: float | None = None
        self._writing_since: float | None = None
        self._idle_since: float | None = None
        self._closing = False
        self._timer: IDelayedCall | None = None
        self._timer_due = 0.0
        self._paused_for_writes = False
        self._paused_for_backlog = False

    # -- connection --

    def connectionMade(self) -> None:
        lane = self._lane
        lane.site.connection_opened()
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)  # answers go out at once, not after 40 ms
        self.transport.registerProducer(self, True)
        self._peer = self.transport.getPeer()  # built anew by every call: once is enough
        # The first request must arrive within request_timeout too: a connection that never
        # sends a byte would otherwise hold a slot until idle_timeout.
        self._receiving_since = self._idle_since = lane.clock.seconds()
        self._arm_timer()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._closed = True
        self._cancel_timer()
        self._lane.site.connection_closed()
        if self._bridge is not None:
            self._bridge.connection_lost(reason)

    def dataReceived(self, data: bytes) -> None:
        if self._stopped:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            if not self._stopped:  # a bug of ours, not a decided last answer
                cause = error.__context__ or error
                failures.failure(
                    "the fast lane failed on a request; closing its connection",
                    Failure(cause, type(cause), cause.__traceback__),
                )
                # Where the connection stood is unknown: end it rather than guess.
                self._stopped = True
                self.transport.abortConnection()
        except httptools.HttpParserUpgrade as upgrade:
            # No protocol is offered to upgrade to: the request was answered as any other
            # (twisted.web ignores Upgrade too) and the connection goes on as HTTP, but llhttp
            # stops after an Upgrade request: a fresh parser takes the rest.
            self._parser = httptools.HttpRequestParser(self)
            rest = data[upgrade.args[0] :]
            if rest:
                self.dataReceived(rest)
        except httptools.HttpParserError:
            self._last_answer(BAD_REQUEST, None)

    # -- IPushProducer: the transport says the client reads slower than we answer --

    def pauseProducing(self) -> None:
        self._paused_for_writes = True
        self.transport.pauseProducing()
        if self._bridge is not None:
            self._bridge.pause()
        if self._writing_since is None:  # a pause while it runs does not restart it
            self._writing_since = self._lane.clock.seconds()
            self._arm_timer()

    def resumeProducing(self) -> None:
        # The transport's buffer has drained: the client's progress (the write deadline's rule).
        self._paused_for_writes = False
        self._writing_since = None
        if self._idle_since is not None:
            self._idle_since = self._lane.clock.seconds()  # idle from the drain
            self._arm_timer()
        if self._bridge is not None:
            self._bridge.resume()
        if not self._paused_for_backlog and not self._closed:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass  # connectionLost follows

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        self._message = Message()
        self._idle_since = None
        if self._receiving_since is None:  # from the first byte of each request
            self._receiving_since = self._lane.clock.seconds()
            self._arm_timer()

    def on_url(self, url: bytes) -> None:
        message = cast(Message, self._message)
        message.target += url
        if len(message.target) > MAX_LINE_BYTES:
            self._last_answer(b"", None)  # twisted.web closes on an overlong line, unanswered
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        message = cast(Message, self._message)
        message.headers.append((name, value))
        line = len(name) + 2 + len(value)  # "Name: value", as twisted.web counts it
        if line > MAX_LINE_BYTES:
            self._last_answer(b"", None)  # closed unanswered, as by twisted.web
            raise _Stop
        message.header_bytes += line
        # twisted.web counts the request line in the headers' total (method, target and
        # version with their two spaces: at least 14 bytes besides the target).
        total = message.header_bytes + len(message.target) + 14
        if len(message.headers) > RTAChannel.maxHeaders or total > RTAChannel.totalHeadersSize:
            self._last_answer(BAD_REQUEST, None)
            raise _Stop

    def on_headers_complete(self) -> None:
        message = cast(Message, self._message)
        lane = self._lane
        parser = self._parser
        message.started_at = lane.clock.seconds()
        message.method = parser.get_method()
        message.version = parser.get_http_version().encode("ascii")
        if message.version == b"0.9":  # a request line without a version: twisted.web's 400
            self._last_answer(BAD_REQUEST, None)
            raise _Stop
        length: int | None = None
        expects_continue = False
        connection: bytes | None = None
        for name, value in message.headers:
            lowered = name.lower()
            if lowered == b"content-length":
                length = int(value)  # llhttp has checked it is a number
            elif lowered == b"transfer-encoding":
                message.had_body = True
            elif lowered == b"expect":
                expects_continue = expects_continue or value.lower() == b"100-continue"
            elif lowered == b"connection" and connection is None:
                connection = value
        if length is not None:
            message.had_body = True
        if message.had_body and parser.should_upgrade():
            # llhttp would take the body for the upgraded protocol, and none is offered:
            # refused like any request this server cannot read (twisted.web's bare 400).
            self._last_answer(BAD_REQUEST, None)
            raise _Stop
        # twisted.web's rule, kept for identical answers: HTTP/1.1 stays open unless the
        # first Connection header has the token "close"; anything older closes.
        tokens = connection.lower().split(b" ") if connection is not None else []
        message.persistent = message.version == b"1.1" and b"close" not in tokens
        limit = lane.site.max_body_bytes
        if length is not None and length > limit:
            self._refuse_too_large(message, limit)
        if message.method == b"POST":
            kind = lane.fast_paths.get(message.target.split(b"?", 1)[0])
            if kind is not None:
                message.kind = kind
                message.refusal = lane.ingest.early_refusal(kind, length or 0)
        if expects_continue and message.version == b"1.1":
            if self._answering or self._waiting:
                message.owes_continue = True  # sent once the answers before it are out
            else:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        message = cast(Message, self._message)
        message.body_bytes += len(body)
        limit = self._lane.site.max_body_bytes
        if message.body_bytes > limit:  # chunked bodies announce no length
            self._refuse_too_large(message, limit)
        if message.refusal is None:  # a body refused for want of room is never kept
            message.body.append(body)

    def on_message_complete(self) -> None:
        message = cast(Message, self._message)
        self._message = None
        self._receiving_since = None
        self._waiting.append(message)
        if len(self._waiting) > MAX_WAITING and not self._paused_for_backlog:
            self._paused_for_backlog = True
            self.transport.pauseProducing()
        self._drain()

    # -- answering, one request at a time --

    def _drain(self) -> None:
        if self._draining:
            return  # the loop below is already running further up the stack
        self._draining = True
        try:
            while self._waiting and not self._answering and not self._closed:
                item = self._waiting.popleft()
                if isinstance(item, Closing):
                    self._write_last(item)
                    return
                self._answering = True
                self._idle_since = None
                if item.kind is not None:
                    self._answer_here(item)
                else:
                    self._answer_by_bridge(item)
        finally:
            self._draining = False
        if not self._answering and not self._closed:
            if self._paused_for_backlog and len(self._waiting) <= MAX_WAITING // 2:
                self._paused_for_backlog = False
                if not self._paused_for_writes:
                    self.transport.resumeProducing()
            message = self._message
            if message is not None and message.owes_continue:
                message.owes_continue = False
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _answered(self, persistent: bool) -> None:
        self._answering = False
        if not persistent:
            self._stopped = True
            self._close()
            return
        self._drain()
        if not self._answering and self._message is None and self._idle_since is None:
            self._idle_since = self._lane.clock.seconds()
            self._arm_timer()

    def _answer_here(self, message: Message) -> None:
        lane = self._lane
        response = ResponseHeaders(lane.spelling)
        if message.version == b"1.1" and not message.persistent:
            response.set(b"Connection", b"close")
        response.set(b"Server", SERVER_VERSION)
        response.set(b"Date", lane.http_date())
        request = LeanRequest(
            message.method,
            message.target,
            RequestHeaders(message.headers),
            self._peer,
            response,
        )
        try:
            admitted = lane.edge.admit(request)
            if isinstance(admitted, bytes):
                result: bytes | Deferred[bytes] = admitted
            elif message.refusal is not None:
                refusal = lane.ingest.count_early_refusal(message.kind or "", message.refusal)
                result = refusal.render(request)
            else:
                handle = lane.handlers[message.kind or ""]
                result = handle(request, b"".join(message.body))
        except ApiError as error:
            result = error.render(request)
        except Exception:
            result = internal_error(request, Failure())
        if isinstance(result, Deferred):
            result.addCallbacks(
                lambda body: self._send(message, request, body),
                lambda failure: self._send(message, request, self._failed(request, failure)),
            )
        else:
            self._send(message, request, result)

    @staticmethod
    def _failed(request: LeanRequest, failure: Failure) -> bytes:
        if isinstance(failure.value, ApiError):
            return failure.value.render(request)
        return internal_error(request, failure)

    def _send(self, message: Message, request: LeanRequest, body: bytes) -> None:
        if self._closed:
            return  # the client left; like twisted.web, nothing is logged
        head = request.response.head(message.version, request.code, request.reason)
        head.append(body)
        self.transport.writeSequence(head)
        lane = self._lane
        lane.site.log_line(
            message.method,
            loggable_path(message.target),
            request.code,
            (lane.clock.seconds() - message.started_at) * 1000.0,
            len(body),
            request.request_id,
            request.route.label,
            request.caller_name,
        )
        self._answered(message.persistent)

    def _answer_by_bridge(self, message: Message) -> None:
        bridge = self._bridge
        if bridge is None:
            lane = self._lane
            bridge = self._bridge = Bridge(lane.site, self.transport, lane.clock, self._bridged)
            if self._paused_for_writes:
                bridge.pause()
        bridge.send(
            serialised_request(
                message.method,
                message.target,
                message.version,
                message.headers,
                b"".join(message.body),
                message.had_body,
            )
        )

    def _bridged(self) -> None:
        bridge = cast(Bridge, self._bridge)
        self._answered(not bridge.transport.disconnecting)

    # -- the last answer, deadlines, closing --

    def _refuse_too_large(self, message: Message, limit: int) -> None:
        headers = RequestHeaders(message.headers)
        probe = LeanRequest(
            message.method, message.target, headers, self._peer, ResponseHeaders(bytes)
        )
        request_id = new_request_id(probe)  # the client's own when valid, as on Klein
        label = self._lane.site.routes.match(message.target.split(b"?", 1)[0]).label
        self._last_answer(
            *body_too_large_answer(message.method, message.target, limit, request_id, label)
        )
        raise _Stop

    def _last_answer(self, data: bytes, log_args: tuple[Any, ...] | None) -> None:
        """Stop reading; send ``data`` once the answers owed before it are out, then close."""
        self._stopped = True
        self._receiving_since = None
        self._waiting.append(Closing(data, log_args))
        self._drain()

    def _write_last(self, last: Closing) -> None:
        self.transport.write(last.data)
        if last.log_args is not None:
            self._lane.site.log_line(*last.log_args)
        self._close()

    def _close(self) -> None:
        if self._closing or self._closed:
            return
        self._closing = True
        # The transport closes once its buffer drains, and only without a producer.
        self.transport.unregisterProducer()
        self.transport.loseConnection()
        # A client that never reads would keep the connection: the write deadline, running
        # or started now, bounds the wait (web/site.py's docstring).
        self._receiving_since = self._idle_since = None
        if self._writing_since is None:
            self._writing_since = self._lane.clock.seconds()
        self._cancel_timer()
        self._arm_timer()

    def _arm_timer(self) -> None:
        """Make sure the timer fires no later than the earliest deadline now running."""
        due = self._next_due()
        if due is None or self._closed:
            return
        timer = self._timer
        if timer is not None and timer.active():
            if self._timer_due <= due:
                return  # it fires first, sees this deadline still ahead and re-arms
            timer.cancel()
        clock = self._lane.clock
        self._timer_due = due
        self._timer = clock.callLater(max(0.0, due - clock.seconds()), self._on_timer)

    def _next_due(self) -> float | None:
        site = self._lane.site
        dues = []
        if self._receiving_since is not None:
            dues.append(self._receiving_since + site.request_timeout)
        if self._writing_since is not None:
            dues.append(self._writing_since + site.write_timeout)
        elif self._idle_since is not None and site.timeOut is not None:
            dues.append(self._idle_since + site.timeOut)  # not idle while the client reads
        return min(dues) if dues else None

    def _on_timer(self) -> None:
        self._timer = None
        site = self._lane.site
        now = self._lane.clock.seconds()
        since = self._receiving_since
        writing = self._writing_since
        if since is not None and now >= since + site.request_timeout:
            self._too_slow()
        elif writing is not None and now >= writing + site.write_timeout:
            self._not_reading()
        elif (
            writing is None
            and self._idle_since is not None
            and site.timeOut is not None
            and now >= self._idle_since + site.timeOut
        ):
            self._stopped = True  # idle too long: closed as twisted.web does
            self._close()
        else:
            self._arm_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _too_slow(self) -> None:
        self._lane.site.slow_request()
        self._stopped = True
        self.transport.abortConnection()

    def _not_reading(self) -> None:
        self._lane.site.slow_reader()
        self._stopped = True
        self.transport.abortConnection()


def fast_paths(routes: RouteTable) -> dict[bytes, str]:
    """The raw paths this lane answers when POSTed (before any query), with their kind: the
    ingest app's routes as the table has them (a renamed browser endpoint too)."""
    paths: dict[bytes, str] = {}
    for route in routes.of_app(INGEST_APP):
        kind = INGEST_KINDS.get(route.klein_rule)
        if kind is None or not route.literal or route.methods != ("POST",):
            raise ValueError(f"the fast lane cannot answer the ingest route {route.template}")
        paths[route.template.encode()] = kind
    return paths


class FastLane(Factory):
    """The protocol factory of a listener with the fast lane: the site's limits, counters
    and access log, the edge's rules and the ingest handler, shared by its connections."""

    noisy = False

    def __init__(
        self,
        *,
        site: RTASite,
        edge: EdgeResource,
        ingest: IngestHandler,
        clock: IReactorTime,
    ) -> None:
        self.fast_paths = fast_paths(edge.routes)
        self.site = site
        self.edge = edge
        self.ingest = ingest
        self.handlers: dict[str, Callable[[LeanRequest, bytes], bytes | Deferred[bytes]]] = {
            "single": ingest.single,
            "batch": ingest.batch,
            "plausible": ingest.plausible,
            **{f"segment_{call}": partial(ingest.segment, call) for call in SEGMENT_CALLS},
            POSTHOG: ingest.posthog,
        }
        self.clock = clock
        self._spellings: dict[bytes, bytes] = {}
        self._date_second = -1
        self._date = b""

    def buildProtocol(self, addr: IAddress | None) -> FastLaneProtocol | None:
        site = self.site
        if site.open_connections >= site.max_connections:
            site.connections.refused += 1
            return None  # Twisted closes the connection at once
        protocol = FastLaneProtocol(self)
        protocol.factory = self
        return protocol

    def spelling(self, name: bytes) -> bytes:
        """A header name as twisted.web sends it (X-Request-Id), worked out once per name."""
        spelled = self._spellings.get(name)
        if spelled is None:
            headers = Headers()
            headers.setRawHeaders(name, [b""])
            spelled = next(iter(headers.getAllRawHeaders()))[0]
            self._spellings[name] = spelled
        return spelled

    def http_date(self) -> bytes:
        """The Date header, formatted once per second."""
        now = self.clock.seconds()
        second = int(now)
        if second != self._date_second:
            self._date_second = second
            self._date = datetimeToString(now)
        return self._date
