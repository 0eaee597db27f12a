"""The HTTP Site: a Request that bounds the body before buffering it, and the access log."""

from __future__ import annotations

import re
import uuid
from typing import Any

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from twisted_rta.internals import channel_handling_request
from twisted_rta.ops.telemetry import Telemetry
from twisted_rta.web.edge import client_request_id
from twisted_rta.web.responses import encode_json, error_payload

log = Logger(namespace="twisted_rta.access")

_EXACT_ROUTES = frozenset(
    {
        "/",
        "/dashboard",
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/api/v1/events",
        "/api/v1/events/batch",
        "/api/v1/metrics",
        "/api/v1/stats",
        "/api/v1/windows",
        "/api/v1/stream",
    }
)
_API_KEY_VALUE = re.compile(rb"(?<=[?&]api_key=)[^&#]*")


def loggable_path(uri: bytes) -> bytes:
    """The request URI with an ``api_key`` query value masked: keys are never logged."""
    return _API_KEY_VALUE.sub(b"***", uri)


def route_label(path: bytes) -> str:
    """The route template of a request path: a bounded label set for the HTTP metrics."""
    text = path.split(b"?", 1)[0].decode("utf-8", "replace")
    if text in _EXACT_ROUTES:
        return text
    if text.startswith("/api/v1/metrics/"):
        suffix = "/series" if text.endswith("/series") else ""
        return "/api/v1/metrics/{name}" + suffix
    if text.startswith("/api/v1/breakdown/"):
        return "/api/v1/breakdown/{base}"
    if text.startswith("/dashboard/assets/"):
        return "/dashboard/assets/{file}"
    return "other"


class RTARequest(Request):
    """A Request with an id, a start time and a body size limit enforced while receiving."""

    channel: Any
    request_id: bytes = b""
    started_at: float = 0.0
    _body_bytes: int = 0
    _rejected: bool = False

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
        self.request_id = client_request_id(self) or str(uuid.uuid4()).encode("ascii")
        body = encode_json(
            error_payload(
                "body_too_large", f"request body exceeds the limit of {limit} bytes", limit=limit
            )
        )
        head = (
            b"HTTP/1.1 413 Content Too Large\r\n"
            b"Content-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: " + str(len(body)).encode("ascii") + b"\r\n"
            b"X-Request-ID: " + self.request_id + b"\r\n"
            b"Connection: close\r\n\r\n"
        )
        self.channel.transport.write(head + body)
        self.channel.loseConnection()
        site: RTASite = self.channel.site
        site.log_line(b"-", loggable_path(self.uri or b"-"), 413, 0.0, len(body), self.request_id)


class RTAChannel(HTTPChannel):
    """An HTTP connection that must deliver each request's head and body within the site's
    ``request_timeout`` (a slowloris client trickling bytes never gets to hold it), with
    Twisted's header flood limits tightened."""

    maxHeaders = 100
    totalHeadersSize = 16384
    site: RTASite
    _deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.connection_opened()

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None and not channel_handling_request(self):
            self._deadline = self.site.clock.callLater(self.site.request_timeout, self._too_slow)
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._cancel_deadline()
        super().allContentReceived()

    def connectionLost(self, reason: Failure) -> None:
        self._cancel_deadline()
        self.site.connection_closed()
        super().connectionLost(reason)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        log.info(
            "closing a client that took more than {timeout}s to send a request",
            timeout=self.site.request_timeout,
        )
        self.site.slow_clients += 1
        self.transport.abortConnection()


class RTASite(Site):
    """Site without form parsing (we only take JSON), with a structured access log, request
    deadlines and a cap on open connections."""

    requestFactory = RTARequest
    protocol = RTAChannel

    def __init__(
        self,
        resource: IResource,
        *,
        clock: IReactorTime,
        max_body_bytes: int,
        access_log: bool,
        telemetry: Telemetry | None = None,
        request_timeout: float = 30.0,
        idle_timeout: float = 60.0,
        max_connections: int = 10_000,
    ) -> None:
        # Form parsing costs about a third of the CPU of a small JSON POST (DESIGN.md 6).
        super().__init__(
            resource, parsePOSTFormSubmission=False, reactor=clock, timeout=idle_timeout
        )
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.open_connections = 0
        self.refused_connections = 0
        self.slow_clients = 0
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self.telemetry = telemetry
        self.noisy = False

    def buildProtocol(self, addr: IAddress) -> RTAChannel | None:
        if self.open_connections >= self.max_connections:
            self.refused_connections += 1
            return None  # Twisted closes the connection at once
        return super().buildProtocol(addr)

    def connection_opened(self) -> None:
        self.open_connections += 1

    def connection_closed(self) -> None:
        self.open_connections -= 1

    def log(self, request: RTARequest) -> None:  # called by twisted.web when a request ends
        duration_ms = (self.clock.seconds() - request.started_at) * 1000.0
        self.log_line(
            request.method,
            loggable_path(request.uri),
            request.code,
            duration_ms,
            request.sentLength,
            request.request_id,
            getattr(request, "caller_name", "-"),
        )

    def log_line(
        self,
        method: bytes,
        path: bytes,
        status: int,
        duration_ms: float,
        sent: int,
        request_id: bytes,
        caller: str = "-",
    ) -> None:
        if self.telemetry is not None:
            route = route_label(path)
            self.telemetry.http_requests.labels(route, str(status)).inc()
            self.telemetry.http_latency.labels(route).observe(duration_ms / 1000.0)
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
