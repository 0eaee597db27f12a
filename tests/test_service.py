"""RTAService lifecycle: start order, the ordered stop, drain, final flush, failure exits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed

from tests.conftest import Daemon, make_daemon
from tests.helpers import NOW, result_of
from twisted_rta import wiring
from twisted_rta.aggregation.windows import ClosedWindow
from twisted_rta.store.interface import FlushBatch
from twisted_rta.store.memory import MemoryWindowStore


class RecordingStore(MemoryWindowStore):
    def __init__(self, *, fail_writes: bool = False, hang_writes: bool = False) -> None:
        super().__init__(node_id="node-a")
        self.fail_writes = fail_writes
        self.hang_writes = hang_writes
        self.written: list[ClosedWindow] = []
        self.closed = False

    def write(self, batch: FlushBatch) -> Deferred[int]:
        if self.fail_writes:
            return fail(OSError("disk full"))
        if self.hang_writes:
            return Deferred()
        self.written.extend(window for _, window in batch.windows)
        return super().write(batch)

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)


def messages(logs: list[dict[str, Any]], prefix: str) -> list[str]:
    return [e["log_format"] for e in logs if str(e.get("log_format", "")).startswith(prefix)]


def test_children_start_in_order(daemon: Daemon) -> None:
    names = [type(child).__name__ for child in daemon.service]
    assert names == [
        "StoreService",
        "FlushService",
        "RetentionService",
        "LoadMonitor",
        "ReactorLagMonitor",
        "SaltRotation",
        "LiveFeed",
        "WorkerPool",
        "HTTPListener",
        "NotifyService",
    ]
    assert all(child.running for child in daemon.service)


def test_ordered_stop_drains_queue_and_flushes_every_window(
    captured_logs: list[dict[str, Any]],
) -> None:
    store = RecordingStore()
    daemon = make_daemon(store=store)
    minute = NOW - NOW % 60
    batches = [
        [{"type": "a", "timestamp": (minute - 60) * 1000}] * 300,
        [{"type": "b", "timestamp": minute * 1000}] * 300,
        [{"type": "c", "timestamp": minute * 1000}] * 300,
    ]
    for batch in batches:
        assert daemon.http.post("/api/v1/events/batch", batch).status == 202
    # Two workers hold a batch each (not yet aggregated); the third waits in the queue.
    assert daemon.service.queue.depth == 300

    stopping = daemon.service.stopService()
    for _ in range(20):
        daemon.reactor.advance(0)  # let the busy workers finish their slices
    result_of(stopping)

    assert daemon.service.shutdown_errors == []
    assert daemon.service.queue.depth == 0
    assert store.closed
    counts = {
        window.start: window.events_count for window in store.written if window.resolution == 60
    }
    assert counts == {minute - 60: 300, minute: 600}
    hours = [window for window in store.written if window.resolution == 3600]
    assert sum(window.events_count for window in hours) == 900
    assert not any(window.late for window in store.written)
    assert messages(captured_logs, "shutdown ") == [
        "shutdown 1/5: stop listening",
        "shutdown 2/5: draining {depth} queued events",
        "shutdown 3/5: stop the flush and retention loops",
        "shutdown 4/5: final flush of every window",
        "shutdown 5/5: closing the store",
        "shutdown complete",
    ]
    assert all(not child.running for child in daemon.service)


def test_events_drained_from_queue_are_counted_when_workers_never_ran() -> None:
    store = RecordingStore()
    daemon = make_daemon(store=store, start=False)
    daemon.http.post("/api/v1/events/batch", [{"type": "x"}] * 5)
    daemon.service.privilegedStartService()
    daemon.service.startService()  # the workers take the batch but have not run yet
    result_of(_stop(daemon))
    assert sum(w.events_count for w in store.written if w.resolution == 60) == 5


def _stop(daemon: Daemon) -> Deferred[None]:
    stopping = daemon.service.stopService()
    for _ in range(20):
        daemon.reactor.advance(0)
    return stopping


def test_failed_final_flush_is_recorded(captured_logs: list[dict[str, Any]]) -> None:
    store = RecordingStore(fail_writes=True)
    daemon = make_daemon(store=store)
    daemon.http.post("/api/v1/events", {"type": "x"})
    result_of(_stop(daemon))
    reason = "shutdown step failed: 3 windows and the all-time totals not persisted: disk full"
    assert daemon.service.shutdown_errors == [reason]
    assert any(e.get("reason") == reason for e in captured_logs)


def test_shutdown_timeout_is_recorded() -> None:
    store = RecordingStore(hang_writes=True)
    daemon = make_daemon({"server": {"listen": ["tcp:0"], "shutdown_timeout": "3s"}}, store=store)
    daemon.http.post("/api/v1/events", {"type": "x"})
    stopping = _stop(daemon)
    assert not stopping.called
    daemon.reactor.advance(3.0)
    result_of(stopping)
    assert daemon.service.shutdown_errors == [
        "shutdown did not finish within 3s; 3 windows not written to the store"
    ]


def test_exit_status_one_after_a_failed_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[tuple[Any, ...]] = []
    monkeypatch.setattr(wiring.atexit, "register", lambda *args: registered.append(args))
    daemon = make_daemon()
    daemon.reactor._exitSignal = 15
    wiring.exit_status(daemon.reactor, daemon.service.shutdown_errors)
    assert registered == []  # a clean stop keeps twistd's own exit (0 or the signal)
    assert daemon.reactor._exitSignal == 15

    daemon.service.shutdown_errors.append("shutdown step failed: disk full")
    wiring.exit_status(daemon.reactor, daemon.service.shutdown_errors)
    assert daemon.reactor._exitSignal is None
    assert registered == [(wiring._hard_exit, 1)]


def test_exit_status_trigger_is_registered_after_shutdown() -> None:
    daemon = make_daemon()
    triggers = daemon.reactor.triggers["after"]["shutdown"]
    assert any(trigger[0] is wiring.exit_status for trigger in triggers)


def test_port_in_use_fails_the_start_loudly(tmp_path: Path) -> None:
    from twisted.internet.error import CannotListenError
    from twisted.internet.testing import MemoryReactorClock

    from twisted_rta.config import config_from_mapping
    from twisted_rta.web.listeners import ListenError

    class BusyReactor(MemoryReactorClock):
        def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))

    config = config_from_mapping({"server": {"listen": ["tcp:8080:interface=127.0.0.1"]}})
    service = wiring.build_daemon(
        config, BusyReactor(), log_observer=None, environ={"STATE_DIRECTORY": str(tmp_path)}
    ).service
    with pytest.raises(ListenError, match=r"cannot listen on 'tcp:8080:interface=127\.0\.0\.1'"):
        service.privilegedStartService()


def test_invalid_endpoint_fails_the_start() -> None:
    from twisted_rta.config import ConfigError

    with pytest.raises(ConfigError, match=r"server\.listen\[0\]: invalid endpoint 'bogus:1'"):
        make_daemon({"server": {"listen": ["bogus:1"]}})
