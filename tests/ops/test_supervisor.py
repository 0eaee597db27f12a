"""SupervisorService on a fake clock with fake processes: spawning, readiness, restarts with
backoff, signal forwarding, the clean stop and SIGKILL of stragglers."""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from tests.helpers import result_of
from twisted_rta.ops.child_readiness import ChildReadiness
from twisted_rta.ops.handover import HandoverSockets
from twisted_rta.ops.notify_receiver import NotifyReceiver
from twisted_rta.ops.supervisor import KILL_WAIT, STOP_MARGIN, SupervisorService
from twisted_rta.ops.systemd import SystemdNotifier
from twisted_rta.store.lifecycle import retry_policy
from twisted_rta.web.listeners import StartupFailed

SHUTDOWN_TIMEOUT = 10.0


class FakeProcess:
    """An IProcessTransport stand-in: records signals; ``end()`` delivers processEnded."""

    def __init__(self, protocol: Any, pid: int, argv: Sequence[str], env: Any, fds: Any) -> None:
        self.protocol = protocol
        self.pid: int | None = pid
        self.argv = list(argv)
        self.env = dict(env)
        self.child_fds = dict(fds)
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def end(self, code: int = 0, sig: int | None = None) -> None:
        self.pid = None
        if code == 0 and sig is None:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(code if sig is None else None, sig))
        self.protocol.processEnded(reason)


class ProcessReactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []
        self._next_pid = 1000

    def spawnProcess(self, protocol: Any, executable: str, args: Any, env: Any = None, **kw: Any):
        self._next_pid += 1
        process = FakeProcess(protocol, self._next_pid, args, env or {}, kw.get("childFDs", {}))
        self.processes.append(process)
        return process


class RecordingNotifier(SystemdNotifier):
    def __init__(self, watchdog_usec: str | None = None) -> None:
        super().__init__("/run/fake-notify", watchdog_usec=watchdog_usec)
        self.sent: list[tuple[str, ...]] = []

    def notify(self, *assignments: str) -> None:
        self.sent.append(assignments)

    def ready_messages(self) -> list[tuple[str, ...]]:
        return [message for message in self.sent if "READY=1" in message]


class Harness:
    def __init__(self, count: int = 2, watchdog_usec: str | None = None) -> None:
        self.reactor = ProcessReactor()
        self.notifier = RecordingNotifier(watchdog_usec)
        self.readiness = ChildReadiness(
            self.notifier, self.reactor, count, monotonic_usec=lambda: 42
        )
        self.receiver = NotifyReceiver(self.reactor, self.readiness.received)
        self.sockets = HandoverSockets(["tcp:0:interface=127.0.0.1"], 16)
        self.stopped_reactor = 0
        self.service = SupervisorService(
            reactor=self.reactor,
            sockets=self.sockets,
            node_ids=[f"node/{i}" for i in range(1, count + 1)],
            command=lambda node_id, listen: ["python", "rta", *listen, "--node-id", node_id],
            environ={"PATH": "/bin", "LISTEN_PID": "1", "LISTEN_FDS": "1", "NOTIFY_SOCKET": "x"},
            readiness=self.readiness,
            receiver=self.receiver,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            restart_delay=retry_policy(1.0, 30.0, jitter=lambda: 0.0),
            stable_after=30.0,
            stop_reactor=self.stop_reactor,
            getpid=lambda: 777,
        )

    def stop_reactor(self) -> None:
        self.stopped_reactor += 1

    def start(self) -> None:
        self.service.privilegedStartService()
        self.service.startService()

    def current(self, slot: int) -> FakeProcess:
        """The newest process of ``slot`` (1-based)."""
        node_id = f"node/{slot}"
        return [p for p in self.reactor.processes if p.argv[-1] == node_id][-1]

    def say(self, slot: int, *lines: str) -> None:
        pid = self.current(slot).pid
        assert pid is not None
        self.readiness.received(pid, dict(line.split("=", 1) for line in lines))

    def all_ready(self) -> None:
        for slot in range(1, self.readiness.count + 1):
            self.say(slot, "READY=1", "STATUS=serving")

    def close(self) -> None:
        self.receiver.close()
        self.sockets.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    made = Harness()
    yield made
    made.close()


def test_each_slot_gets_its_node_id_the_sockets_and_the_supervisors_notify_socket(
    harness: Harness,
) -> None:
    harness.start()
    first, second = harness.reactor.processes
    assert first.argv == ["python", "rta", "inherited:fd=3:domain=INET", "--node-id", "node/1"]
    assert second.argv[-1] == "node/2"
    socket_fd = harness.sockets.sockets[0].sock.fileno()
    assert first.child_fds == {0: 0, 1: 1, 2: 2, 3: socket_fd}
    assert first.env["NOTIFY_SOCKET"] == harness.receiver.path
    assert first.env["RTA_SUPERVISOR_PID"] == "777"
    assert "LISTEN_PID" not in first.env and "LISTEN_FDS" not in first.env
    assert first.env["PATH"] == "/bin"
    assert "WATCHDOG_USEC" not in first.env  # the supervisor has no watchdog here


def test_ready_only_once_every_child_is_ready(harness: Harness) -> None:
    harness.start()
    harness.say(1, "READY=1", "STATUS=one")
    assert harness.notifier.ready_messages() == []
    assert ("STATUS=1/2 processes ready; 1: one",) in harness.notifier.sent
    harness.say(2, "READY=1", "STATUS=two")
    assert harness.notifier.ready_messages() == [
        ("READY=1", "STATUS=2/2 processes ready; 1: one; 2: two")
    ]
    harness.say(2, "READY=1")  # a repeated READY=1 is not announced again
    assert len(harness.notifier.ready_messages()) == 1


def test_a_message_from_a_process_that_is_no_longer_a_child_is_ignored(harness: Harness) -> None:
    harness.start()
    harness.readiness.received(4242, {"READY": "1"})
    harness.say(1, "READY=1")
    assert not harness.readiness.all_ready


def test_a_crashed_child_is_restarted_with_a_backoff_that_grows(harness: Harness) -> None:
    harness.start()
    harness.all_ready()
    delays = []
    for _ in range(4):
        crashed = harness.current(2)
        harness.reactor.advance(2.0)  # a quick crash: well within stable_after
        crashed.end(sig=signal.SIGKILL)
        call = harness.service.slots[1].restart
        assert call is not None
        delays.append(call.getTime() - harness.reactor.seconds())
        harness.reactor.advance(delays[-1] - 0.01)
        assert harness.current(2) is crashed  # not yet
        harness.reactor.advance(0.01)
        assert harness.current(2) is not crashed
        assert harness.current(2).argv[-1] == "node/2"  # the same slot, the same node id
    assert delays == [1.0, 2.0, 4.0, 8.0]
    # A child that ran longer than stable_after starts the backoff again.
    harness.reactor.advance(31.0)
    harness.current(2).end(code=1)
    call = harness.service.slots[1].restart
    assert call is not None and call.getTime() - harness.reactor.seconds() == 1.0
    assert harness.current(1).signals == []  # the other child was left alone
    assert harness.stopped_reactor == 0


def test_a_child_that_ends_before_every_child_was_ready_fails_the_start(
    harness: Harness,
) -> None:
    harness.start()
    harness.say(1, "READY=1")
    harness.current(2).end(code=1)
    harness.current(1).end(code=1)
    assert harness.stopped_reactor == 1  # once
    assert harness.service.errors == [
        "child 2 exited with status 1 at start",
        "child 1 exited with status 1 at start",
    ]
    assert len(harness.reactor.processes) == 2  # nothing restarted
    assert harness.service.slots[0].restart is None


def test_reload_forwards_sighup_and_is_ready_again_once_every_child_is(
    harness: Harness,
) -> None:
    harness.start()
    harness.all_ready()
    harness.notifier.sent.clear()
    harness.service.reload()
    assert [harness.current(slot).signals for slot in (1, 2)] == [["HUP"], ["HUP"]]
    assert harness.notifier.sent[0] == ("RELOADING=1", "MONOTONIC_USEC=42")
    harness.say(1, "RELOADING=1", "MONOTONIC_USEC=1")
    harness.say(1, "READY=1")
    assert harness.notifier.ready_messages() == []
    harness.say(2, "READY=1")
    assert len(harness.notifier.ready_messages()) == 1


def test_stop_sends_sigterm_to_every_child_and_waits_for_them(harness: Harness) -> None:
    harness.start()
    harness.all_ready()
    stopping = harness.service.stopService()
    assert ("STOPPING=1",) in harness.notifier.sent
    assert [harness.current(slot).signals for slot in (1, 2)] == [["TERM"], ["TERM"]]
    harness.current(1).end()
    assert not stopping.called
    harness.current(2).end(sig=signal.SIGTERM)  # twistd re-raises SIGTERM after a clean stop
    result_of(stopping)
    assert harness.service.errors == []
    assert len(harness.reactor.processes) == 2  # no restart while stopping
    assert harness.sockets.sockets == () and harness.receiver.path is not None


def test_stop_cancels_a_pending_restart(harness: Harness) -> None:
    harness.start()
    harness.all_ready()
    harness.current(2).end(code=1)
    harness.current(1)  # slot 2 waits for its restart
    stopping = harness.service.stopService()
    harness.current(1).end()
    result_of(stopping)
    harness.reactor.advance(60)
    assert len(harness.reactor.processes) == 2


def test_stragglers_are_killed_after_the_shutdown_timeout(harness: Harness) -> None:
    harness.start()
    harness.all_ready()
    stopping = harness.service.stopService()
    harness.current(1).end()
    harness.reactor.advance(SHUTDOWN_TIMEOUT + STOP_MARGIN - 1.0)
    assert harness.current(2).signals == ["TERM"]
    harness.reactor.advance(1.0)
    assert harness.current(2).signals == ["TERM", "KILL"]
    assert harness.current(1).signals == ["TERM"]
    assert not stopping.called
    harness.current(2).end(sig=signal.SIGKILL)
    result_of(stopping)
    assert harness.service.errors == [
        "child 2 killed after the shutdown timeout",
        "child 2 killed by signal 9 (SIGKILL) while stopping",
    ]


def test_a_child_that_fails_its_stop_is_an_error(harness: Harness) -> None:
    harness.start()
    harness.all_ready()
    stopping = harness.service.stopService()
    harness.current(1).end(code=1)
    harness.current(2).end()
    result_of(stopping)
    assert harness.service.errors == ["child 1 exited with status 1 while stopping"]


def test_a_socket_that_cannot_be_bound_fails_the_start_with_one_line() -> None:
    made = Harness()
    made.start()
    port = made.sockets.sockets[0].sock.getsockname()[1]
    taken = Harness()
    taken.sockets.descriptions = [f"tcp:{port}:interface=127.0.0.1"]
    with pytest.raises(StartupFailed) as caught:
        taken.service.privilegedStartService()
    assert "Address already in use" in str(caught.value) and caught.value.code == 1
    made.close()


def test_the_watchdog_pings_systemd_and_aborts_a_silent_child() -> None:
    made = Harness(watchdog_usec="4000000")  # systemd expects a ping every 4 s
    made.start()
    # The supervisor pings every 2 s and gives each child the whole 4 s to ping it.
    assert made.current(1).env["WATCHDOG_USEC"] == "4000000"
    assert "WATCHDOG_PID" not in made.current(1).env
    made.all_ready()
    assert ("WATCHDOG=1",) in made.notifier.sent
    for _ in range(3):
        made.reactor.advance(2.0)
        made.say(1, "WATCHDOG=1")
    assert made.current(1).signals == []
    assert made.current(2).signals == ["ABRT"]
    assert made.notifier.sent.count(("WATCHDOG=1",)) == 4
    made.close()


def test_the_receiver_names_the_sending_process(tmp_path: Any) -> None:
    import os

    reactor = MemoryReactorClock()
    received: list[tuple[int, dict[str, str]]] = []
    receiver = NotifyReceiver(reactor, lambda pid, message: received.append((pid, message)))
    path = receiver.open()
    try:
        assert receiver in reactor.getReaders()
        assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
        child = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
        child.ready("serving")
        child.watchdog()
        receiver.doRead()  # a local datagram is queued before sendto() returns
        child.close()
    finally:
        receiver.close()
    assert received == [
        (os.getpid(), {"READY": "1", "STATUS": "serving"}),
        (os.getpid(), {"WATCHDOG": "1"}),
    ]
    assert not os.path.exists(path) and receiver not in reactor.getReaders()


def test_a_child_that_is_never_reaped_does_not_hang_the_stop(harness: Harness) -> None:
    harness.start()
    harness.all_ready()
    stopping = harness.service.stopService()
    harness.reactor.advance(SHUTDOWN_TIMEOUT + STOP_MARGIN)
    assert not stopping.called
    harness.reactor.advance(KILL_WAIT)
    result_of(stopping)
    assert harness.service.errors[-1] == "a child could not be reaped after SIGKILL"
    assert harness.sockets.sockets == ()
