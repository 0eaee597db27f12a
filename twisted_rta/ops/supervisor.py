"""SupervisorService: runs one daemon process per slot on the handed-over sockets, restarts
a child that ends, forwards reloads and stops them all.

Slot ``i`` (1..N) always runs with the same node id, so a restarted child reclaims its own
journal and store rows. A child that ends while the supervisor runs is restarted after a
backoff that doubles with each quick failure (a child that ran ``stable_after`` seconds
starts again from the shortest wait); a child that ends before every child was ready once
fails the whole start (a config or lease problem would only repeat). Stop: SIGTERM to each
child, wait for all of them (their own ordered shutdown, bounded by
``server.shutdown_timeout``) plus a margin, then SIGKILL the stragglers.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from attrs import define
from twisted.application.service import IServiceCollection, Service
from twisted.internet.defer import Deferred, TimeoutError, ensureDeferred
from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from twisted_rta.ops.child_main import SUPERVISOR_PID
from twisted_rta.ops.child_readiness import ChildReadiness
from twisted_rta.ops.handover import HandoverError, HandoverSockets
from twisted_rta.ops.notify_receiver import NotifyReceiver
from twisted_rta.periodic import Periodic
from twisted_rta.web.listeners import StartupFailed

log = Logger()

RESTART_INITIAL = 1.0  # seconds before the first restart of a child that ended
RESTART_MAX = 30.0  # the longest wait, for a child that keeps ending quickly
STABLE_AFTER = 30.0  # a child that ran this long starts the backoff again from the shortest wait
STOP_MARGIN = 5.0  # seconds past server.shutdown_timeout before stragglers get SIGKILL
KILL_WAIT = 5.0  # seconds to wait for a SIGKILLed child to be reaped
# Removed from the children's environment: what systemd gave the supervisor is not theirs.
_NOT_INHERITED = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET")
_WATCHDOG = ("WATCHDOG_USEC", "WATCHDOG_PID")


def exit_description(reason: Failure) -> str:
    """``exited with status 1`` or ``killed by signal 9 (SIGKILL)``."""
    value = reason.value
    if isinstance(value, ProcessTerminated) and value.signal is not None:
        try:
            name = signal.Signals(value.signal).name
        except ValueError:
            name = "unknown"
        return f"killed by signal {value.signal} ({name})"
    code = getattr(value, "exitCode", 0)
    return f"exited with status {code}"


def clean_stop(reason: Failure) -> bool:
    """Exit status 0, or death by the SIGTERM it was sent (twistd re-raises it after a clean
    stop, as it does for SIGINT)."""
    value = reason.value
    if not isinstance(value, ProcessTerminated):
        return True
    return value.exitCode == 0 or value.signal in (signal.SIGTERM, signal.SIGINT)


@define
class Slot:
    """One supervised child: the slot number, its node id and the process running it."""

    number: int
    node_id: str
    process: IProcessTransport | None = None
    pid: int | None = None
    started_at: float = 0.0
    quick_failures: int = 0  # consecutive ends within ``stable_after``: the backoff exponent
    restart: IDelayedCall | None = None


class _ChildProtocol(ProcessProtocol):
    """Output is not piped (the child writes to the supervisor's stdout and stderr)."""

    def __init__(self, ended: Callable[[Failure], None]) -> None:
        self._ended = ended

    def processEnded(self, reason: Failure) -> None:
        self._ended(reason)


class SupervisorService(Service):
    """``command(node_id, listen)`` is a child's argv; ``environ`` the environment it is
    given (with NOTIFY_SOCKET pointing at the supervisor); ``stop_reactor`` ends the
    supervisor when a child fails the start."""

    name = "supervisor"

    def __init__(
        self,
        *,
        reactor: Any,
        sockets: HandoverSockets,
        node_ids: Sequence[str],
        command: Callable[[str, Sequence[str]], list[str]],
        environ: Mapping[str, str],
        readiness: ChildReadiness,
        receiver: NotifyReceiver,
        shutdown_timeout: float,
        restart_delay: Callable[[int], float],
        stable_after: float,
        stop_reactor: Callable[[], None],
        getpid: Callable[[], int] = os.getpid,
        log_observer: ILogObserver | None = None,
        errors: list[str] | None = None,
    ) -> None:
        self._reactor = reactor
        self.sockets = sockets
        self.slots = [Slot(number, node_id) for number, node_id in enumerate(node_ids, 1)]
        self._command = command
        self._environ = environ
        self.readiness = readiness
        self._receiver = receiver
        self._shutdown_timeout = shutdown_timeout
        self._restart_delay = restart_delay
        self._stable_after = stable_after
        self._stop_reactor = stop_reactor
        self._getpid = getpid
        self.log_observer = log_observer
        # Shared with the composition root, which turns any entry into exit status 1.
        self.errors = errors if errors is not None else []
        self._stopping = False
        self._start_failed = False
        self._awaited: list[Slot] = []
        self._all_exited: Deferred[None] | None = None
        watchdog = readiness.notifier.watchdog_interval()
        # The children ping the supervisor as the supervisor pings systemd, at half the limit.
        self._child_watchdog = 2 * watchdog if watchdog is not None else None
        self._watchdog = Periodic(
            "supervisor watchdog", self._watch, clock=reactor, interval=watchdog or 1.0
        )

    def setServiceParent(self, parent: IServiceCollection) -> None:
        super().setServiceParent(parent)
        # As RTAService: the hook through which twistd takes the daemon's log format.
        if self.log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.log_observer)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.sockets.sockets:
            return
        try:
            self.sockets.bind()
        except HandoverError as error:
            log.critical("cannot start: {reason}", reason=str(error))
            raise StartupFailed(str(error)) from None

    def startService(self) -> None:
        super().startService()
        if not self.sockets.sockets:
            self.sockets.bind()
        notify_socket = self._receiver.open()
        self._child_environ = self._environment(notify_socket)
        log.info(
            "supervising {count} processes on {addresses}",
            count=len(self.slots),
            addresses=self.sockets.addresses(),
        )
        for slot in self.slots:
            self._spawn(slot)
        if self._child_watchdog is not None:
            self._watchdog.start(now=True)

    def reload(self) -> None:
        """SIGHUP: forwarded to every running child; READY=1 again once all are ready."""
        if not self.running or self._stopping:
            return
        running = [slot for slot in self.slots if slot.process is not None]
        log.info("reload: forwarding SIGHUP to {count} processes", count=len(running))
        self.readiness.reloading()
        for slot in running:
            self._signal(slot, "HUP")

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        self._stopping = True
        self._watchdog.stop()
        self.readiness.stopping()
        for slot in self.slots:
            if slot.restart is not None and slot.restart.active():
                slot.restart.cancel()
            slot.restart = None
        return ensureDeferred(self._stop_children())

    async def _stop_children(self) -> None:
        running = [slot for slot in self.slots if slot.process is not None]
        log.info("stopping {count} processes (SIGTERM)", count=len(running))
        for slot in running:
            self._signal(slot, "TERM")
        try:
            await self._exits(running, self._shutdown_timeout + STOP_MARGIN)
        except TimeoutError:
            stragglers = [slot for slot in running if slot.process is not None]
            for slot in stragglers:
                log.error(
                    "child {slot} (pid {pid}) did not stop within {seconds}s: SIGKILL",
                    slot=slot.number,
                    pid=slot.pid,
                    seconds=self._shutdown_timeout + STOP_MARGIN,
                )
                self.errors.append(f"child {slot.number} killed after the shutdown timeout")
                self._signal(slot, "KILL")
            try:
                await self._exits(stragglers, KILL_WAIT)
            except TimeoutError:
                self.errors.append("a child could not be reaped after SIGKILL")
        finally:
            self._receiver.close()
            self.sockets.close()
        log.info("all processes stopped")

    def _exits(self, slots: Sequence[Slot], timeout: float) -> Deferred[None]:
        """Fires once every one of ``slots`` has ended; TimeoutError after ``timeout``."""
        self._awaited = list(slots)
        self._all_exited = Deferred()
        self._check_exited()
        return self._all_exited.addTimeout(timeout, self._reactor)

    def _check_exited(self) -> None:
        waiting = self._all_exited
        ended = all(slot.process is None for slot in self._awaited)
        if waiting is not None and not waiting.called and ended:
            waiting.callback(None)

    def _environment(self, notify_socket: str) -> dict[str, str]:
        skipped = _NOT_INHERITED + _WATCHDOG
        environ = {key: value for key, value in self._environ.items() if key not in skipped}
        environ["NOTIFY_SOCKET"] = notify_socket
        environ[SUPERVISOR_PID] = str(self._getpid())
        if self._child_watchdog is not None:
            # Without WATCHDOG_PID every child takes the watchdog as its own.
            environ["WATCHDOG_USEC"] = str(int(self._child_watchdog * 1_000_000))
        return environ

    def _spawn(self, slot: Slot) -> None:
        slot.restart = None
        argv = self._command(slot.node_id, self.sockets.child_endpoints())
        child_fds: dict[int, int | str] = {0: 0, 1: 1, 2: 2, **self.sockets.child_fds()}
        protocol = _ChildProtocol(lambda reason: self._ended(slot, reason))
        slot.process = self._reactor.spawnProcess(
            protocol, argv[0], argv, env=self._child_environ, childFDs=child_fds
        )
        slot.started_at = self._reactor.seconds()
        slot.pid = pid = slot.process.pid
        self.readiness.started(slot.number, pid)
        log.info(
            "started child {slot} (pid {pid}, node {node_id})",
            slot=slot.number,
            pid=pid,
            node_id=slot.node_id,
        )

    def _ended(self, slot: Slot, reason: Failure) -> None:
        pid = slot.pid
        ran = self._reactor.seconds() - slot.started_at
        slot.process = slot.pid = None
        self.readiness.ended(slot.number)
        how = exit_description(reason)
        if self._stopping:
            log.info("child {slot} (pid {pid}) {how}", slot=slot.number, pid=pid, how=how)
            if not clean_stop(reason):
                self.errors.append(f"child {slot.number} {how} while stopping")
            self._check_exited()
            return
        if not self.readiness.ever_ready:
            log.critical(
                "cannot start: child {slot} (pid {pid}) {how} before every process was ready",
                slot=slot.number,
                pid=pid,
                how=how,
            )
            self.errors.append(f"child {slot.number} {how} at start")
            if not self._start_failed:  # once: the reactor is already stopping
                self._start_failed = True
                self._stop_reactor()
            return
        slot.quick_failures = 0 if ran >= self._stable_after else slot.quick_failures + 1
        delay = self._restart_delay(max(slot.quick_failures - 1, 0))
        log.warn(
            "child {slot} (pid {pid}) {how} after {ran:.1f}s; restarting in {delay:.1f}s",
            slot=slot.number,
            pid=pid,
            how=how,
            ran=ran,
            delay=delay,
        )
        slot.restart = self._reactor.callLater(delay, self._spawn, slot)

    def _signal(self, slot: Slot, name: str) -> None:
        if slot.process is None:
            return
        try:
            slot.process.signalProcess(name)
        except (OSError, ProcessExitedAlready) as error:
            log.warn("cannot signal child {slot}: {error}", slot=slot.number, error=error)

    def _watch(self) -> None:
        """Ping systemd while the supervisor's reactor turns; a ready child silent for longer
        than its watchdog limit is aborted (SIGABRT, as systemd would) and restarted."""
        self.readiness.notifier.watchdog()
        if self._child_watchdog is None:
            return
        for child in self.readiness.silent(self._child_watchdog):
            slot = self.slots[child.slot - 1]
            log.error(
                "child {slot} (pid {pid}) sent no watchdog ping for {seconds}s: SIGABRT",
                slot=child.slot,
                pid=child.pid,
                seconds=self._child_watchdog,
            )
            self._signal(slot, "ABRT")
