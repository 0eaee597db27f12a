"""What the supervised children say over sd_notify, and what the supervisor tells systemd
from it: READY=1 once every child is ready (again after a reload), one STATUS line for all."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_rta.ops.systemd import SystemdNotifier

log = Logger()


@define
class ChildReport:
    """The last word of the child running in one slot."""

    slot: int
    pid: int
    ready: bool = False
    status: str = ""
    last_ping: float = 0.0  # when it last sent WATCHDOG=1 (or started)


@define
class ChildReadiness:
    """Tracks each slot's child by pid; a message from a pid that is no longer a slot's child
    (a child that just ended) is ignored."""

    notifier: SystemdNotifier
    clock: IReactorTime
    count: int
    monotonic_usec: Callable[[], int]
    _children: dict[int, ChildReport] = field(factory=dict, init=False)  # by slot
    _announced: bool = field(default=False, init=False)  # READY=1 sent (since the last reload)
    ever_ready: bool = field(default=False, init=False)  # every child was ready at least once

    def started(self, slot: int, pid: int) -> None:
        self._children[slot] = ChildReport(slot, pid, last_ping=self.clock.seconds())
        self._report()

    def ended(self, slot: int) -> None:
        self._children.pop(slot, None)
        self._report()

    @property
    def ready_count(self) -> int:
        return sum(1 for child in self._children.values() if child.ready)

    @property
    def all_ready(self) -> bool:
        return self.ready_count == self.count

    def received(self, pid: int, message: Mapping[str, str]) -> None:
        child = next((c for c in self._children.values() if c.pid == pid), None)
        if child is None:
            log.debug("notification from pid {pid}, not a current child: ignored", pid=pid)
            return
        if "STATUS" in message:
            child.status = message["STATUS"]
        if message.get("WATCHDOG") == "1":
            child.last_ping = self.clock.seconds()
        if message.get("RELOADING") == "1" or message.get("STOPPING") == "1":
            child.ready = False
        if message.get("READY") == "1" and not child.ready:
            child.ready = True
            child.last_ping = self.clock.seconds()
            log.info("child {slot} (pid {pid}) is ready", slot=child.slot, pid=child.pid)
        self._report()

    def reloading(self) -> None:
        """A reload was forwarded to the children: READY=1 again once each has said it."""
        self.notifier.reloading(self.monotonic_usec())
        self._announced = False
        for child in self._children.values():
            child.ready = False

    def stopping(self) -> None:
        self.notifier.stopping()

    def silent(self, limit: float) -> list[ChildReport]:
        """Ready children that sent no WATCHDOG=1 for more than ``limit`` seconds."""
        now = self.clock.seconds()
        return [c for c in self._children.values() if c.ready and now - c.last_ping > limit]

    def status_line(self) -> str:
        parts = [f"{self.ready_count}/{self.count} processes ready"]
        parts += [
            f"{child.slot}: {child.status}"
            for _, child in sorted(self._children.items())
            if child.status
        ]
        return "; ".join(parts)

    def _report(self) -> None:
        if self.all_ready and not self._announced:
            self._announced = True
            again = " again" if self.ever_ready else ""
            self.ever_ready = True
            log.info("all {count} processes are ready{again}", count=self.count, again=again)
            self.notifier.ready(self.status_line())
        else:
            self.notifier.status(self.status_line())
