"""server.write_timeout on both lanes: a client that does not take its responses is aborted
once the deadline passes without the transport's buffer draining; one that keeps taking
them, however slowly, is not (the rule: the docstring of ``twisted_rta/web/site.py``)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IProtocol, IPushProducer, IReactorTime
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tests.conftest import Daemon, make_daemon
from tests.helpers import site_of
from twisted_rta.web.live import LiveFeed

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
BIG = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"  # well over 64 KiB of JSON
SMALL = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


class ClientSocket(StringTransport):
    """A connection with the write buffering of Twisted's TCP transport (FileDescriptor),
    the client's reading in the test's hands: what is written waits until ``read``; over
    ``buffer_size`` waiting, a registered streaming producer is paused (on every write, as
    Twisted does); it is resumed once everything has been read; after ``loseConnection``
    the connection ends once drained, and only without a producer (Twisted's rule), at the
    next reactor turn."""

    def __init__(self, clock: IReactorTime, buffer_size: int = 65536) -> None:
        super().__init__(peerAddress=PEER)
        self.clock = clock
        self.buffer_size = buffer_size
        self.unread = bytearray()
        self.received = bytearray()
        self.producer_paused = False
        self.aborted = False
        self.ended = False
        self.protocol: IProtocol | None = None

    def connect(self, protocol: IProtocol) -> None:
        self.protocol = protocol
        protocol.makeConnection(self)

    def write(self, data: bytes) -> None:
        if self.ended:
            return
        self.unread += data
        if self.producer is not None and self.streaming and len(self.unread) > self.buffer_size:
            self.producer_paused = True
            self.producer.pauseProducing()

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def read(self, size: int | None = None) -> bytes:
        """The client takes ``size`` bytes (all by default)."""
        size = len(self.unread) if size is None else size
        taken = bytes(self.unread[:size])
        del self.unread[:size]
        self.received += taken
        if not self.unread and not self.ended:
            if self.producer is not None and self.producer_paused:
                self.producer_paused = False
                self.producer.resumeProducing()
            elif self.disconnecting:
                self._end_soon()
        return taken

    def loseConnection(self) -> None:
        super().loseConnection()
        if not self.unread and self.producer is None:
            self._end_soon()

    def _end_soon(self) -> None:
        # As Twisted does: at the next reactor turn, never inside the protocol's call.
        self.clock.callLater(0, self._end, Failure(ConnectionDone()))

    def abortConnection(self) -> None:
        self.aborted = True
        self._end(Failure(ConnectionAborted()))

    def _end(self, reason: Failure) -> None:
        if not self.ended:
            self.ended = True
            assert self.protocol is not None
            self.protocol.connectionLost(reason)


def daemon_with(fast_lane: bool, **server: Any) -> Daemon:
    return make_daemon({"server": {"listen": ["tcp:0"], "fast_lane": fast_lane, **server}})


def connect(daemon: Daemon, buffer_size: int = 65536) -> tuple[Any, ClientSocket]:
    factory = daemon.service.listeners[0].factory
    protocol = factory.buildProtocol(PEER)
    assert protocol is not None
    client = ClientSocket(daemon.reactor, buffer_size)
    client.connect(protocol)
    assert IPushProducer.providedBy(client.producer)  # both lanes register as one
    return protocol, client


def slow_readers(daemon: Daemon) -> int:
    return int(site_of(daemon.service.listeners[0].factory).connections.slow_readers)


LANES = pytest.mark.parametrize("fast_lane", [True, False], ids=["fast_lane", "twisted_web"])


@LANES
def test_a_client_that_never_reads_is_aborted_at_the_write_timeout(
    fast_lane: bool, captured_logs: list[dict[str, Any]]
) -> None:
    daemon = daemon_with(fast_lane, write_timeout="5s")
    protocol, client = connect(daemon)
    protocol.dataReceived(BIG)
    assert client.producer_paused  # the response waits for the client
    daemon.reactor.advance(4.9)
    assert not client.ended
    daemon.reactor.advance(0.1)
    assert client.aborted
    assert slow_readers(daemon) == 1
    lines = [e for e in captured_logs if "did not read its response" in str(e.get("log_format"))]
    assert len(lines) == 1 and lines[0]["timeout"] == 5.0
    assert site_of(daemon.service.listeners[0].factory).open_connections == 0


@LANES
def test_a_client_that_drains_each_response_in_time_is_never_cut(fast_lane: bool) -> None:
    daemon = daemon_with(fast_lane, write_timeout="5s", idle_timeout="60s")
    protocol, client = connect(daemon)
    for _ in range(6):  # 24 s in all, each response drained 4 s after it was written
        protocol.dataReceived(BIG)
        assert client.producer_paused
        daemon.reactor.advance(4.0)
        client.read()
        assert not client.producer_paused
    assert not client.ended and slow_readers(daemon) == 0
    assert client.received.count(b"HTTP/1.1 200 OK") == 6


@LANES
def test_a_slow_reader_of_the_event_stream_stays_and_a_stuck_one_is_cut(fast_lane: bool) -> None:
    # The stream writes a snapshot each period (2 s): with a small buffer every one fills
    # it. The reader taking them every 4 s drains it in time, again and again.
    daemon = daemon_with(fast_lane, write_timeout="5s")
    feed_period = 2.0
    assert next(m for m in daemon.service.monitors if isinstance(m, LiveFeed)).period == 2.0
    stream = b"GET /api/v1/stream HTTP/1.1\r\nHost: x\r\n\r\n"
    reading, reader = connect(daemon, buffer_size=256)
    stuck, stuck_client = connect(daemon, buffer_size=256)
    reading.dataReceived(stream)
    stuck.dataReceived(stream)
    for _ in range(10):  # 40 s
        for _ in range(2):
            daemon.reactor.advance(feed_period)  # one tick per period
        reader.read()
    assert reader.received.count(b"data: ") == 21  # the first at once, one per period
    assert not reader.ended
    assert stuck_client.aborted and slow_readers(daemon) == 1


@LANES
def test_the_idle_deadline_waits_for_the_reader_then_counts_from_the_drain(
    fast_lane: bool,
) -> None:
    daemon = daemon_with(fast_lane, write_timeout="30s", idle_timeout="10s")
    protocol, client = connect(daemon)
    protocol.dataReceived(BIG)
    daemon.reactor.advance(20.0)  # past idle_timeout: not idle, the response is waiting
    assert not client.disconnecting
    client.read()
    daemon.reactor.advance(9.9)
    assert not client.disconnecting
    daemon.reactor.advance(0.2)  # idle_timeout after the drain: an orderly close
    daemon.reactor.advance(0)
    assert client.ended and not client.aborted
    assert slow_readers(daemon) == 0


@LANES
def test_a_closed_connection_whose_last_answer_is_not_taken_is_aborted(fast_lane: bool) -> None:
    daemon = daemon_with(fast_lane, write_timeout="5s")
    protocol, client = connect(daemon, buffer_size=1 << 20)  # never paused: closing alone
    protocol.dataReceived(b"GET /openapi.json HTTP/1.0\r\nHost: x\r\n\r\n")
    assert client.disconnecting and not client.producer_paused
    assert client.producer is None  # unregistered, or the transport would never close
    daemon.reactor.advance(4.9)
    assert not client.ended
    daemon.reactor.advance(0.1)
    assert client.aborted and slow_readers(daemon) == 1


@LANES
def test_a_closed_connection_whose_last_answer_is_taken_ends_in_order(fast_lane: bool) -> None:
    daemon = daemon_with(fast_lane, write_timeout="5s")
    protocol, client = connect(daemon)
    protocol.dataReceived(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert client.disconnecting
    daemon.reactor.advance(3.0)
    client.read()
    daemon.reactor.advance(0)
    assert client.ended and not client.aborted
    daemon.reactor.advance(10.0)
    assert slow_readers(daemon) == 0


@LANES
def test_small_answers_never_start_the_deadline(fast_lane: bool) -> None:
    daemon = daemon_with(fast_lane, write_timeout="5s", idle_timeout="60s")
    protocol, client = connect(daemon)
    for _ in range(20):
        protocol.dataReceived(SMALL)
        daemon.reactor.advance(1.0)
    assert not client.producer_paused and not client.ended  # nothing read, nothing due
    assert slow_readers(daemon) == 0


@LANES
def test_aborts_by_either_deadline_are_exposed_to_prometheus(fast_lane: bool) -> None:
    daemon = daemon_with(fast_lane, write_timeout="5s", request_timeout="2s")
    protocol, client = connect(daemon)
    protocol.dataReceived(BIG)
    connect(daemon)  # sends nothing: the request deadline
    daemon.reactor.advance(6.0)
    assert client.aborted
    text = daemon.http.get("/metrics").body.decode()
    assert 'rta_http_connections_aborted_total{reason="write_timeout"} 1.0' in text
    assert 'rta_http_connections_aborted_total{reason="request_timeout"} 1.0' in text
    assert "rta_http_connections_refused_total 0.0" in text
