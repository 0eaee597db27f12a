"""Run the real ``twistd -n rta`` as a child process and read its JSON log lines."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

Record = dict[str, Any]


def twistd_path() -> str:
    candidate = Path(sys.executable).with_name("twistd")
    return str(candidate) if candidate.exists() else "twistd"


class DaemonProcess(ProcessProtocol):
    """Collects stdout as JSON records; Deferreds for "a record like this appeared" and exit."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.other_output: list[str] = []
        # Fires with ProcessDone or ProcessTerminated (the exception, not a Failure).
        self.ended: Deferred[Exception] = Deferred()
        self._buffer = b""
        self._waiters: list[tuple[Callable[[Record], bool], Deferred[Record]]] = []

    @classmethod
    def spawn(
        cls,
        args: list[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        *,
        inherit_fd: int | None = None,
        wrapper: tuple[str, ...] = (),
    ) -> DaemonProcess:
        """Start ``twistd -n rta``; ``inherit_fd`` is passed as fd 3 with LISTEN_PID set to
        the daemon's own pid, as systemd's socket activation does; ``wrapper`` runs it
        (``("prlimit", "--nofile=256:256", "--")``)."""
        protocol = cls()
        environment = {**os.environ, **(env or {})}
        argv = [*wrapper, twistd_path(), "-n", "--pidfile=", "rta", "--log-format", "json", *args]
        child_fds: dict[int, object] = {0: "w", 1: "r", 2: "r"}
        if inherit_fd is not None:
            child_fds[3] = inherit_fd
            # The pid is only known after fork: sh's $$ survives the exec into twistd.
            argv = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", *argv]
        reactor.spawnProcess(
            protocol, argv[0], argv, env=environment, path=str(cwd), childFDs=child_fds
        )
        return protocol

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                self.other_output.append(line.decode("utf-8", "replace"))
                continue
            self.records.append(record)
            for waiter in list(self._waiters):
                if waiter[0](record):
                    self._waiters.remove(waiter)
                    waiter[1].callback(record)

    def errReceived(self, data: bytes) -> None:
        self.other_output.append(data.decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:
        for _, waiting in self._waiters:
            waiting.errback(RuntimeError("daemon exited; output:\n" + self.output_text()))
        self._waiters.clear()
        self.ended.callback(reason.value)

    def wait_for(self, match: Callable[[Record], bool], timeout: float = 20.0) -> Deferred[Record]:
        for record in self.records:
            if match(record):
                return succeed(record)
        waiting: Deferred[Record] = Deferred()
        self._waiters.append((match, waiting))
        return waiting.addTimeout(timeout, reactor)

    def messages(self) -> list[str]:
        return [str(record.get("message")) for record in self.records]

    def output_text(self) -> str:
        return "\n".join([json.dumps(r) for r in self.records] + self.other_output)

    def terminate(self, signal: str = "TERM", timeout: float = 30.0) -> Deferred[Exception]:
        if not self.ended.called:
            self.transport.signalProcess(signal)
        return self.ended.addTimeout(timeout, reactor)


def clean_exit(reason: Exception) -> bool:
    """twistd exits 0, or re-raises SIGTERM after a clean stop; both are clean for systemd."""
    if isinstance(reason, ProcessDone):
        return True
    return isinstance(reason, ProcessTerminated) and (reason.exitCode == 0 or reason.signal == 15)


async def poll(
    check: Callable[[], Deferred[bool]], timeout: float = 20.0, every: float = 0.05
) -> None:
    """Ask an external process until ``check`` holds; bounded by ``timeout``."""
    waited = 0.0
    while not await check():
        if waited >= timeout:
            raise TimeoutError(f"condition not met within {timeout}s")
        await deferLater(reactor, every, lambda: None)
        waited += every


async def in_thread(call: Callable[[], Any], timeout: float = 20.0) -> Any:
    """A blocking call (an SDK's) run in a thread, bounded by ``timeout``."""
    return await threads.deferToThread(call).addTimeout(timeout, reactor)
