"""The ``inherited:`` endpoint: adopt a listening TCP socket passed in as a file descriptor.

``twistd rta --processes N`` binds every listen address once, in the supervisor, and starts
each child with ``--listen inherited:fd=3:domain=INET``: the child adopts the socket, as it
would one from systemd (Twisted's ``AdoptedStreamServerEndpoint``, which closes the passed
descriptor once the reactor holds its own duplicate). Only TCP: an adopted unix socket's
file is removed by the first process that stops listening on it.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.endpoints import AdoptedStreamServerEndpoint

DOMAINS = {"INET": socket.AF_INET, "INET6": socket.AF_INET6}
FIRST_FD = 3  # 0, 1 and 2 are stdin, stdout and stderr


def parse_inherited(reactor: Any, fd: str, domain: str = "INET") -> AdoptedStreamServerEndpoint:
    """``inherited:fd=3:domain=INET`` (or ``inherited:3:INET6``)."""
    if not fd.isascii() or not fd.isdigit() or int(fd) < FIRST_FD:
        raise ValueError(f"fd= must be a descriptor number of {FIRST_FD} or more, got {fd!r}")
    family = DOMAINS.get(domain.upper())
    if family is None:
        raise ValueError(f"domain= must be INET or INET6, got {domain!r}")
    return AdoptedStreamServerEndpoint(reactor, int(fd), family)


def inherited_endpoint(fd: int, family: int) -> str:
    """The endpoint string a child adopts descriptor ``fd`` of ``family`` with."""
    domain = next(name for name, value in DOMAINS.items() if value == family)
    return f"inherited:fd={fd}:domain={domain}"
