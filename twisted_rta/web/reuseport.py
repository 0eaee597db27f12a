"""A TCP server endpoint with SO_REUSEPORT, so several rta processes share one port.

The kernel spreads incoming connections over every process listening on the port: one
Twisted process per core, each a node of the same store. Twisted's ``tcp:`` endpoint
cannot set the option, so the socket is made here and adopted by the reactor.
"""

from __future__ import annotations

import socket

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    def __init__(self, reactor: object, port: int, interface: str = "", backlog: int = 50):
        self._reactor = reactor
        self._port = port
        self._interface = interface
        self._backlog = backlog

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        family = socket.AF_INET6 if ":" in self._interface else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self._interface, self._port))
            sock.listen(self._backlog)
            sock.setblocking(False)
            port = self._reactor.adoptStreamPort(  # type: ignore[attr-defined]
                sock.fileno(), family, factory
            )
        except OSError as error:
            return fail(CannotListenError(self._interface, self._port, error))
        finally:
            sock.close()  # the reactor holds its own duplicate of the descriptor
        return succeed(port)


def parse_reuseport(
    reactor: object, port: str, interface: str = "", backlog: str = "50"
) -> ReusePortEndpoint:
    """``reuseport:8080:interface=127.0.0.1:backlog=128``, like ``tcp:``."""
    interface = interface.replace("\\:", ":")
    return ReusePortEndpoint(reactor, int(port), interface=interface, backlog=int(backlog))
