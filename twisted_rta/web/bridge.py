"""The fast lane's way back to twisted.web: requests it does not answer itself are written,
whole and one at a time, into an inner ``HTTPChannel`` of the site that shares the client's
connection, so every route keeps exactly its twisted.web behaviour (streaming, SSE, the
Klein apps, the access log) while the fast lane owns parsing, limits and deadlines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IProducer,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
    ITransport,
)
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request
from zope.interface import implementer

from twisted_rta.web.site import RTAChannel, RTASite

# Hop-by-hop framing the fast lane has already dealt with: the body arrives de-chunked with
# its length, and the 100 Continue has been sent (twisted.web would send a second one).
_REFRAMED = frozenset({b"content-length", b"transfer-encoding", b"expect"})


def serialised_request(
    method: bytes,
    target: bytes,
    version: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    had_body: bool,
) -> bytes:
    """One parsed request written back as HTTP/1.x bytes, its body framed by a length."""
    parts = [method, b" ", target, b" HTTP/", version, b"\r\n"]
    for name, value in headers:
        if name.lower() not in _REFRAMED:
            parts += (name, b": ", value, b"\r\n")
    if had_body or body:
        parts += (b"Content-Length: ", b"%d" % len(body), b"\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)


@implementer(ITransport, IConsumer, IPushProducer)
class SharedTransport:
    """The client's transport as the inner channel sees it: writes and closes go through;
    reading is the fast lane's business, so the inner channel's pauses are ignored, and the
    producer it registers is kept for the fast lane to pause when the client reads slowly."""

    def __init__(self, transport: ITCPTransport) -> None:
        self._transport = transport
        self.producer: IPushProducer | None = None
        self.disconnecting = False

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self._transport.writeSequence(data)

    def loseConnection(self) -> None:
        self.disconnecting = True
        self._transport.loseConnection()

    def abortConnection(self) -> None:
        self.disconnecting = True
        self._transport.abortConnection()

    def getPeer(self) -> IAddress:
        return self._transport.getPeer()

    def getHost(self) -> IAddress:
        return self._transport.getHost()

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self.producer = producer if IPushProducer.providedBy(producer) else None

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        pass  # the fast lane decides when the socket is read

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class BridgedChannel(HTTPChannel):
    """A twisted.web channel fed complete requests by the fast lane. Its own deadlines are
    off (the fast lane enforces them on the real connection) and it opens no connection of
    its own in the site's count; it says when each response is complete."""

    maxHeaders = RTAChannel.maxHeaders
    totalHeadersSize = RTAChannel.totalHeadersSize
    site: RTASite
    on_response_done: Callable[[], None]

    def requestDone(self, request: Request) -> None:
        super().requestDone(request)
        self.on_response_done()


class Bridge:
    """One connection's inner channel, created on its first bridged request."""

    def __init__(
        self,
        site: RTASite,
        transport: ITCPTransport,
        clock: IReactorTime,
        on_response_done: Callable[[], None],
    ) -> None:
        self.transport = SharedTransport(transport)
        channel = BridgedChannel()
        channel.site = site
        channel.factory = site  # twisted.web logs each finished request through it
        channel.requestFactory = site.requestFactory
        channel.timeOut = None
        channel.callLater = clock.callLater  # type: ignore[method-assign,assignment]
        channel.on_response_done = on_response_done
        channel.makeConnection(self.transport)
        self.channel = channel

    def send(self, request: bytes) -> None:
        self.channel.dataReceived(request)

    def pause(self) -> None:
        producer = self.transport.producer
        if producer is not None:
            producer.pauseProducing()

    def resume(self) -> None:
        producer = self.transport.producer
        if producer is not None:
            producer.resumeProducing()

    def connection_lost(self, reason: Failure | Any) -> None:
        self.channel.connectionLost(reason)
