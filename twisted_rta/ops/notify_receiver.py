"""The supervisor's end of its children's sd_notify: a unix datagram socket that names the
sending process (``SO_PASSCRED``), so each child's own notifier (``ops/systemd.py``) works
unchanged with ``NOTIFY_SOCKET`` set to this socket's path."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger()

_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_MAX_MESSAGE = 4096
_PER_READ = 64  # datagrams taken per wake-up, so that a chatty child cannot stall the reactor

Deliver = Callable[[int, dict[str, str]], None]


def assignments(datagram: bytes) -> dict[str, str]:
    """``KEY=value`` lines (sd_notify's format); lines without ``=`` are ignored."""
    parsed: dict[str, str] = {}
    for line in datagram.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            parsed[key] = value
    return parsed


@implementer(IReadDescriptor)
class NotifyReceiver:
    """Reads sd_notify datagrams on the reactor and hands ``(sender pid, assignments)`` to
    ``deliver``. The socket lives in a private directory (mode 0700) made at ``open()`` and
    removed at ``close()``."""

    def __init__(self, reactor: IReactorFDSet, deliver: Deliver, directory: str | None = None):
        self._reactor = reactor
        self._deliver = deliver
        self._directory = directory
        self._socket: socket.socket | None = None
        self.path: str | None = None

    def open(self) -> str:
        """Bind the socket and start reading; returns its path (the children's NOTIFY_SOCKET)."""
        directory = Path(tempfile.mkdtemp(prefix="rta-supervisor-", dir=self._directory))
        path = str(directory / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(path)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.setblocking(False)
        except OSError:
            sock.close()
            shutil.rmtree(directory, ignore_errors=True)
            raise
        self._socket, self.path = sock, path
        self._reactor.addReader(self)
        return path

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is None:
            return
        self._reactor.removeReader(self)
        sock.close()
        if self.path is not None:
            shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)

    def fileno(self) -> int:
        return self._socket.fileno() if self._socket is not None else -1

    def logPrefix(self) -> str:
        return "NotifyReceiver"

    def doRead(self) -> None:
        for _ in range(_PER_READ):
            if self._socket is None:
                return
            try:
                data, ancillary, _flags, _address = self._socket.recvmsg(
                    _MAX_MESSAGE, socket.CMSG_SPACE(_CREDENTIALS.size)
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                log.warn("cannot read a child's notification: {error}", error=error)
                return
            pid = _sender(ancillary)
            if pid is not None:
                self._deliver(pid, assignments(data))

    def connectionLost(self, reason: Failure) -> None:
        self.close()


def _sender(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid, _uid, _gid = _CREDENTIALS.unpack(payload[: _CREDENTIALS.size])
            return int(pid)
    return None
