"""The HTTP Site: a Request that bounds the body before buffering it and carries the edge's
per-request state, connection deadlines, and the access log.

The write deadline (``server.write_timeout``), the same on both lanes (the fast lane keeps
it too). A response is written whole into the transport; what the kernel's socket buffer
cannot take waits in the transport's buffer. When that buffer holds more than the
transport's ``bufferSize`` (64 KiB) the transport pauses its producer (the connection): the
deadline starts then (a pause while it runs does not restart it). The transport resuming
its producer, which it does only once its buffer has drained completely into the kernel, is
the client's progress: the deadline ends, and idle time counts from then. The deadline
passing aborts the connection (counted in ``ConnectionCounts.slow_readers``, one log line).
So a client that empties the transport's buffer at least once every write_timeout is never
cut, however slowly it reads (the SSE stream's small writes drain one by one), while a
response larger than the socket buffers plus 64 KiB must be taken whole within it. While
the deadline runs the idle deadline does not apply: the connection is not idle, it waits for
the client. When the daemon closes a connection (Connection: close, HTTP/1.0, idle, 400,
413) the transport ends it once its buffer drains: the deadline, running or started at the
close, bounds that wait too (no signal of progress comes after a close).
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from twisted_rta.events.ids import new_uuid4
from twisted_rta.internals import channel_handling_request
from twisted_rta.ops.status import ConnectionCounts
from twisted_rta.ops.telemetry import Telemetry
from twisted_rta.web.auth import Authenticator
from twisted_rta.web.exchange import Exchange
from twisted_rta.web.responses import encode_json, error_payload
from twisted_rta.web.routes import UNKNOWN, Route, RouteTable

if TYPE_CHECKING:  # the wrapper HTTPFactory.buildProtocol returns (typing only)
    from twisted.web.http import _GenericHTTPChannelProtocol

log = Logger(namespace="twisted_rta.access")

_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
# RFC 9110 names; twisted.web has none for 429 and 431 ("Unknown Status") and the old one
# for 413.
_REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}
_REASONS[413] = b"Content Too Large"
_API_KEY_VALUE = re.compile(rb"(?<=[?&]api_key=)[^&#]*")


def loggable_path(uri: bytes) -> bytes:
    """The request URI with an ``api_key`` query value masked: keys are never logged."""
    return _API_KEY_VALUE.sub(b"***", uri)


def reason_phrase(status: int) -> bytes:
    """The reason phrase of a status line (RFC 9110 wording)."""
    return _REASONS.get(status, b"Unknown Status")


def client_request_id(request: Exchange) -> bytes | None:
    """The client's X-Request-ID if it is 1-128 chars of [A-Za-z0-9._-], else None."""
    value = request.getHeader(b"X-Request-ID")
    if value is not None and _VALID_REQUEST_ID.fullmatch(value):
        return value
    return None


def new_request_id(request: Exchange) -> bytes:
    """The client's valid X-Request-ID, else a fresh UUID4."""
    return client_request_id(request) or new_uuid4().encode("ascii")


class RTARequest(Request):
    """A Request with a body size limit enforced while receiving, and the state the edge
    keeps for the rest of the request (the route, the caller, the access log read it)."""

    channel: Any
    request_id: bytes = b""  # the X-Request-ID of the response
    started_at: float = 0.0
    route: Route = UNKNOWN  # set by the edge from the route table
    caller_name: str = "-"  # the name of the caller's API key, for the access log
    rate_identity: tuple[str, str] | None = None  # ("key", name) or ("address", host)
    client_address: str = "unknown"  # the edge's answer (trusted proxies); never logged
    body_key_check: Authenticator | None = None  # the key is in the body: check it with this
    history_allowed: bool = False  # the caller may import history (Exchange)
    _body_bytes: int = 0
    _rejected: bool = False

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        super().setResponseCode(code, reason_phrase(code) if message is None else message)

    def gotLength(self, length: int | None) -> None:
        site: RTASite = self.channel.site
        self.started_at = site.clock.seconds()
        if length is not None and length > site.max_body_bytes:
            self._reject_too_large(site.max_body_bytes)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._rejected:
            return
        self._body_bytes += len(data)
        limit = self.channel.site.max_body_bytes
        if self._body_bytes > limit:  # chunked bodies announce no length up front
            self._reject_too_large(limit)
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if not self._rejected:
            super().process()

    def _reject_too_large(self, limit: int) -> None:
        """Answer 413 at once and close, so an oversized body is never buffered."""
        self._rejected = True
        # The request line is parsed but not yet handed to the Request (requestReceived
        # runs after the body): HTTPChannel keeps it meanwhile.
        method: bytes = getattr(self.channel, "_command", b"-")
        uri: bytes = getattr(self.channel, "_path", b"-")
        self.request_id = new_request_id(self)
        site: RTASite = self.channel.site
        self.route = site.routes.match(uri.split(b"?", 1)[0])
        answer, log_args = body_too_large_answer(
            method, uri, limit, self.request_id, self.route.label
        )
        self.channel.transport.write(answer)
        self.channel.loseConnection()
        site.log_line(*log_args)


def body_too_large_answer(
    method: bytes, uri: bytes, limit: int, request_id: bytes, label: str
) -> tuple[bytes, tuple[Any, ...]]:
    """The whole 413 answer (the connection closes after it) and its access log line's
    arguments (``label``: the route's), for a body over ``limit``: sent before the body is
    read, on either lane."""
    body = encode_json(
        error_payload(
            "body_too_large", f"request body exceeds the limit of {limit} bytes", limit=limit
        )
    )
    answer = (
        b"HTTP/1.1 413 " + reason_phrase(413) + b"\r\n"
        b"Content-Type: application/json; charset=utf-8\r\n"
        b"Content-Length: " + str(len(body)).encode("ascii") + b"\r\n"
        b"X-Request-ID: " + request_id + b"\r\n"
        b"Connection: close\r\n\r\n" + body
    )
    return answer, (method, loggable_path(uri), 413, 0.0, len(body), request_id, label)


class RTAChannel(HTTPChannel):
    """An HTTP connection that must deliver each request's head and body within the site's
    ``request_timeout``, counted from the connection's opening for its first request and
    from the first byte for the next ones on a kept-alive connection (a slowloris client
    trickling bytes, or one sending nothing, never gets to hold it; between requests the
    idle timeout applies), whose responses must be taken by the client under the write
    deadline (the module docstring), with Twisted's header flood limits tightened."""

    maxHeaders = 100
    totalHeadersSize = 16384
    # twisted.web aborts 15 s after an idle close whatever the client does: the write
    # deadline bounds every close instead (twisted.web takes None: no abort of its own).
    abortTimeout = None  # type: ignore[assignment]
    site: RTASite
    _deadline: IDelayedCall | None = None
    _write_deadline: IDelayedCall | None = None
    _lost = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.connection_opened()
        # A new connection must send its first request within request_timeout too: one
        # that never sends a byte would otherwise hold a slot until idle_timeout.
        self._start_deadline()

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None and not channel_handling_request(self):
            self._deadline = self.site.clock.callLater(self.site.request_timeout, self._too_slow)
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        if self.length is not None and self.length > self.site.max_body_bytes:
            # RTARequest.gotLength answers 413 and closes: twisted.web would then still send
            # its automatic "100 Continue", a stray interim answer after the final one.
            self.requests[-1].requestHeaders.removeHeader(b"Expect")
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self._cancel_deadline()
        super().allContentReceived()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._lost = True
        self._cancel_deadline()
        self._cancel_write_deadline()
        self.site.connection_closed()
        super().connectionLost(reason)

    # -- the write deadline (the module docstring) --

    def pauseProducing(self) -> None:  # the transport's buffer is full
        super().pauseProducing()
        self._start_write_deadline()

    def resumeProducing(self) -> None:  # the transport's buffer has drained
        self._cancel_write_deadline()
        super().resumeProducing()
        self.resetTimeout()  # idle from now (a no-op while a request is handled)

    def timeoutConnection(self) -> None:
        if self._write_deadline is not None:
            self.setTimeout(self.timeOut)  # not idle: waiting for the client to read
            return
        super().timeoutConnection()

    def loseConnection(self) -> None:
        super().loseConnection()  # unregisters from the transport: no resume comes now
        self._start_write_deadline()

    def _start_write_deadline(self) -> None:
        if self._write_deadline is None and not self._lost:
            self._write_deadline = self.site.clock.callLater(
                self.site.write_timeout, self._not_reading
            )

    def _cancel_write_deadline(self) -> None:
        if self._write_deadline is not None and self._write_deadline.active():
            self._write_deadline.cancel()
        self._write_deadline = None

    def _not_reading(self) -> None:
        self._write_deadline = None
        self.site.slow_reader()
        cast(ITCPTransport, self.transport).abortConnection()

    # -- the request deadline --

    def _start_deadline(self) -> None:
        self._deadline = self.site.clock.callLater(self.site.request_timeout, self._too_slow)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        self.site.slow_request()
        cast(ITCPTransport, self.transport).abortConnection()


class RTASite(Site):
    """Site without form parsing (we only take JSON), with a structured access log, request
    deadlines and a cap on open connections."""

    requestFactory = RTARequest
    # twisted's stub types protocol as a factory of its private _GenericHTTPChannelProtocol
    # wrapper; a plain HTTPChannel subclass is what it calls (it wraps it itself).
    protocol = RTAChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: IResource,
        *,
        routes: RouteTable,
        clock: IReactorTime,
        max_body_bytes: int,
        access_log: bool,
        telemetry: Telemetry | None = None,
        request_timeout: float = 30.0,
        write_timeout: float = 30.0,
        idle_timeout: float = 60.0,
        max_connections: int = 10_000,
        connections: ConnectionCounts | None = None,
    ) -> None:
        # Form parsing costs about a third of the CPU of a small JSON POST (DESIGN.md 6).
        super().__init__(
            resource, parsePOSTFormSubmission=False, reactor=clock, timeout=idle_timeout
        )
        self.routes = routes  # the edge's: a 413 answered before it runs is labelled by it
        self.request_timeout = request_timeout
        self.write_timeout = write_timeout
        self.max_connections = max_connections
        self.open_connections = 0  # of this site: each site has its own cap
        # Shared by every site of the daemon (the status snapshot reads it).
        self.connections = connections if connections is not None else ConnectionCounts()
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self.telemetry = telemetry
        self.noisy = False

    def buildProtocol(self, addr: IAddress | None) -> _GenericHTTPChannelProtocol | None:
        if self.open_connections >= self.max_connections:
            self.connections.refused += 1
            return None  # Twisted closes the connection at once
        return super().buildProtocol(addr)

    def connection_opened(self) -> None:
        self.open_connections += 1

    def connection_closed(self) -> None:
        self.open_connections -= 1

    def slow_request(self) -> None:
        """A connection is aborted: its request took longer than ``request_timeout``."""
        log.info(
            "closing a client that took more than {timeout}s to send a request",
            timeout=self.request_timeout,
        )
        self.connections.slow_requests += 1

    def slow_reader(self) -> None:
        """A connection is aborted: the client did not take its response within
        ``write_timeout`` (the module docstring)."""
        log.info(
            "closing a client that did not read its response within {timeout}s",
            timeout=self.write_timeout,
        )
        self.connections.slow_readers += 1

    def log(self, request: http.Request) -> None:  # called by twisted.web when a request ends
        done = cast(RTARequest, request)  # requestFactory builds every request of this site
        duration_ms = (self.clock.seconds() - done.started_at) * 1000.0
        self.log_line(
            done.method,
            loggable_path(done.uri),
            done.code,
            duration_ms,
            done.sentLength,
            done.request_id,
            done.route.label,
            done.caller_name,
        )

    def log_line(
        self,
        method: bytes,
        path: bytes,
        status: int,
        duration_ms: float,
        sent: int,
        request_id: bytes,
        route: str,
        caller: str = "-",
    ) -> None:
        """One finished request: the HTTP metrics by ``route`` (its table label, a bounded
        set), and the access log line unless turned off."""
        if self.telemetry is not None:
            self.telemetry.http_request(route, status, duration_ms / 1000.0)
        if not self.access_log:
            return
        log.info(
            "{method} {path} {status} {duration_ms}ms {bytes}B",
            method=method.decode("ascii", "replace"),
            path=path.decode("utf-8", "replace"),
            status=status,
            duration_ms=round(duration_ms, 3),
            bytes=sent,
            request_id=request_id.decode("ascii"),
            key=caller,
        )
