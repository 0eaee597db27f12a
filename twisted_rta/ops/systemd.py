"""sd_notify for a Type=notify unit: one datagram per message to $NOTIFY_SOCKET, no libsystemd."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping

from attrs import define, field
from twisted.logger import Logger

log = Logger()


def _socket_address(notify_socket: str) -> str | None:
    """The sendto() address for $NOTIFY_SOCKET, or None when it is not one we can use.

    Like libsystemd, only an absolute path or an abstract name (``@name``, whose kernel form
    starts with a NUL byte) is accepted; anything else (a relative path, ``vsock:`` of newer
    systemd versions) is refused rather than guessed at.
    """
    if len(notify_socket) < 2:
        return None
    if notify_socket[0] == "@":
        return "\0" + notify_socket[1:]
    if notify_socket[0] == "/":
        return notify_socket
    return None


def _decimal(text: str | None) -> int | None:
    # Strictly ASCII digits: int() would also take " 7", "+7" and "1_000".
    if text and text.isascii() and text.isdigit():
        return int(text)
    return None


def _one_line(text: str) -> str:
    # A newline would end the STATUS= assignment and let the rest be read as another one.
    return " ".join(text.splitlines())


@define
class SystemdNotifier:
    """Tells systemd about the service's state (READY, STOPPING, RELOADING, WATCHDOG, STATUS).

    Without a usable ``$NOTIFY_SOCKET`` (not started by systemd, or not Type=notify) every
    method is a no-op. Sending never blocks and never raises: systemd is told what it can be
    told, and the daemon keeps running when it cannot (the first failure is logged).
    """

    # The sendto() address (``"\\0name"`` for an abstract socket), or None when disabled.
    address: str | None
    watchdog_usec: str | None = None
    watchdog_pid: str | None = None
    getpid: Callable[[], int] = os.getpid
    _socket: socket.socket | None = field(default=None, init=False)
    _failed: bool = field(default=False, init=False)

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], getpid: Callable[[], int] = os.getpid
    ) -> SystemdNotifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from ``environ`` (os.environ)."""
        notify_socket = environ.get("NOTIFY_SOCKET", "")
        address = _socket_address(notify_socket) if notify_socket else None
        if notify_socket and address is None:
            log.warn(
                "NOTIFY_SOCKET={value!r} is not an absolute path or @name: not notifying systemd",
                value=notify_socket,
            )
        return cls(
            address,
            watchdog_usec=environ.get("WATCHDOG_USEC"),
            watchdog_pid=environ.get("WATCHDOG_PID"),
            getpid=getpid,
        )

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> None:
        """Send ``KEY=value`` assignments as one datagram, e.g. ``notify("READY=1", "STATUS=up")``.

        One datagram makes them one state change for systemd (READY=1 arrives with its STATUS).
        """
        if self.address is None or not assignments:
            return
        message = "\n".join(assignments).encode("utf-8")
        try:
            if self._socket is None:
                # Opened on first use so that a disabled notifier holds no descriptor.
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._socket = sock
            self._socket.sendto(message, self.address)
        except OSError as error:
            # A vanished socket, a full receive queue (EAGAIN) or a refused address family:
            # systemd cannot be told, which must not stop the daemon or flood its log (the
            # watchdog sends every few seconds), so only the first failure is logged.
            if not self._failed:
                self._failed = True
                log.warn(
                    "cannot notify systemd at {address}: {error}; further failures are not logged",
                    address=self.address.replace("\0", "@"),
                    error=error,
                )

    def ready(self, status: str | None = None) -> None:
        """Startup finished: listeners bound, store open. Also ends a reload."""
        if status is None:
            self.notify("READY=1")
        else:
            self.notify("READY=1", "STATUS=" + _one_line(status))

    def stopping(self) -> None:
        """Shutdown began (drain and final flush follow)."""
        self.notify("STOPPING=1")

    def reloading(self, monotonic_usec: int) -> None:
        """A reload began; ``monotonic_usec`` is CLOCK_MONOTONIC in microseconds
        (``time.monotonic_ns() // 1000``). Send ``ready()`` when the reload is done."""
        self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def watchdog(self) -> None:
        """Keep-alive for WatchdogSec=; send every ``watchdog_interval()`` seconds."""
        self.notify("WATCHDOG=1")

    def status(self, text: str) -> None:
        """Free-form one-line status shown by ``systemctl status``."""
        self.notify("STATUS=" + _one_line(text))

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog() calls: half of $WATCHDOG_USEC, as sd_watchdog_enabled()
        recommends, or None when no watchdog is expected from this process."""
        usec = _decimal(self.watchdog_usec)
        if not usec:
            return None
        # WATCHDOG_PID names the process that must ping; a child that inherited the
        # environment is not it.
        if self.watchdog_pid is not None and _decimal(self.watchdog_pid) != self.getpid():
            return None
        return usec / 2_000_000

    def close(self) -> None:
        """Close the socket; a later notify() opens a new one."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
