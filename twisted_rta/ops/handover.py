"""The supervisor's listening sockets: every listen endpoint bound once, to hand to each child.

The endpoint strings are parsed and bound by Twisted's own endpoint objects (and ours), given
a stand-in for the reactor whose ``listenTCP`` and ``adoptStreamPort`` make a bound,
listening socket instead of a port that accepts: the supervisor never accepts a connection,
its children do, from the one kernel queue of each socket. Only TCP sockets can be shared:
a unix socket's file is removed by the first process that stops listening on it, and TLS
would have to be set up in every child.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

from attrs import define, field, frozen
from twisted.internet.endpoints import serverFromString
from twisted.python.failure import Failure

from twisted_rta.config.endpoints import endpoint_type, with_backlog
from twisted_rta.web.inherited import DOMAINS, FIRST_FD, inherited_endpoint

SHAREABLE = ("tcp", "tcp6", "reuseport", "inherited", "systemd")
_TCP_FAMILIES = frozenset(DOMAINS.values())


class HandoverError(Exception):
    """A listen endpoint that cannot be bound or shared; ``str()`` is one line."""


def refusal(description: str, processes: int) -> str | None:
    """Why ``description`` cannot be shared by ``processes`` children, or None if it can.

    ``systemd:`` sockets are checked for their domain when bound (the name is resolved then).
    """
    if endpoint_type(description) in SHAREABLE:
        return None
    return (
        f"--processes {processes} cannot share {description!r}: only tcp:, tcp6:, reuseport:, "
        "inherited: and systemd: TCP endpoints can be handed to the processes (a unix "
        "socket's file is removed by the first process that stops; TLS would need each "
        "process to set it up)"
    )


@frozen
class ListeningSocket:
    """One bound, listening TCP socket and the endpoint string it was made from."""

    description: str
    sock: socket.socket

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if self.sock.family == socket.AF_INET6 else f"{host}:{port}"

    def child_endpoint(self, fd: int) -> str:
        return inherited_endpoint(fd, self.sock.family)


class _BindingReactor:
    """Stands in for the listening half of the reactor (``IReactorTCP.listenTCP``,
    ``IReactorSocket.adoptStreamPort``), which is all that the shareable endpoints call:
    it returns a listening socket, not a port."""

    def listenTCP(
        self, port: int, factory: object, backlog: int = 50, interface: str = ""
    ) -> socket.socket:
        # As Twisted's tcp.Port: an IPv6 literal as interface makes an IPv6 socket.
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        address = socket.getaddrinfo(
            interface or "0.0.0.0", port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )[0][4]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        return sock

    def adoptStreamPort(self, fd: int, family: int, factory: object) -> socket.socket:
        # A duplicate: the endpoint closes the descriptor it passed, as with the real reactor.
        # Without a family, Python asks the kernel which one the socket really has.
        sock = socket.socket(fileno=os.dup(fd))
        if sock.family not in _TCP_FAMILIES or sock.type != socket.SOCK_STREAM:
            sock.close()
            raise HandoverError("only TCP sockets (domain=INET or INET6) can be shared")
        if sock.family != family:
            sock.close()
            raise HandoverError("the socket's address family is not the domain= given")
        return sock


def bind_endpoint(description: str, backlog: int) -> ListeningSocket:
    """Bind ``description`` (with ``backlog`` where it sets none); HandoverError if not."""
    try:
        endpoint = serverFromString(_BindingReactor(), with_backlog(description, backlog))
    except (KeyError, IndexError):
        # systemd: a name= or index= that systemd did not pass (LISTEN_FDNAMES, LISTEN_FDS).
        raise HandoverError(
            f"listen endpoint {description!r}: no such socket was passed by systemd"
        ) from None
    except (ValueError, TypeError) as error:
        raise HandoverError(f"invalid listen endpoint {description!r}: {error}") from None
    outcome: list[Any] = []
    endpoint.listen(None).addBoth(outcome.append)
    result = outcome[0] if outcome else None
    if isinstance(result, Failure):
        raise HandoverError(
            f"cannot listen on {description!r}: {result.getErrorMessage()}"
        ) from None
    if not isinstance(result, socket.socket):
        raise HandoverError(f"listen endpoint {description!r} did not bind at once")
    return ListeningSocket(description, result)


@define
class HandoverSockets:
    """The supervisor's listening sockets, bound at start, closed at stop; in each child they
    are descriptors ``3``, ``4``, ... in the order of ``server.listen``."""

    descriptions: Sequence[str]
    backlog: int
    sockets: tuple[ListeningSocket, ...] = field(default=(), init=False)

    def bind(self) -> None:
        """Bind every endpoint, or none: HandoverError names the first that failed."""
        bound: list[ListeningSocket] = []
        try:
            for description in self.descriptions:
                bound.append(bind_endpoint(description, self.backlog))
        except HandoverError:
            for listening in bound:
                listening.sock.close()
            raise
        self.sockets = tuple(bound)

    def child_fds(self) -> dict[int, int]:
        """The descriptors a child is given: its fd -> the supervisor's fd."""
        return {FIRST_FD + i: listening.sock.fileno() for i, listening in enumerate(self.sockets)}

    def child_endpoints(self) -> list[str]:
        """The ``--listen`` endpoints a child adopts the sockets with."""
        return [listening.child_endpoint(fd) for fd, listening in self._numbered()]

    def addresses(self) -> str:
        return ", ".join(listening.address for listening in self.sockets)

    def close(self) -> None:
        for listening in self.sockets:
            listening.sock.close()
        self.sockets = ()

    def _numbered(self) -> list[tuple[int, ListeningSocket]]:
        return [(FIRST_FD + i, listening) for i, listening in enumerate(self.sockets)]
