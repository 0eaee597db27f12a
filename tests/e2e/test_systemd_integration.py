"""End to end under systemd's protocols: notify socket, watchdog, socket activation, SIGHUP."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol

from tests.e2e.process import DaemonProcess, clean_exit, poll
from tests.e2e.test_daemon import TIMEOUT, get_json, start

pytestmark = pytest.mark.e2e


class NotifySocket(DatagramProtocol):
    """Plays systemd's side of NOTIFY_SOCKET: records every datagram."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._waiters: list[tuple[Callable[[str], bool], Deferred[str]]] = []

    def datagramReceived(self, datagram: bytes, address: object) -> None:
        message = datagram.decode()
        self.messages.append(message)
        for waiter in list(self._waiters):
            if waiter[0](message):
                self._waiters.remove(waiter)
                waiter[1].callback(message)

    def wait_for(self, match: Callable[[str], bool]) -> Deferred[str]:
        for message in self.messages:
            if match(message):
                return Deferred.fromCoroutine(_value(message))
        waiting: Deferred[str] = Deferred()
        self._waiters.append((match, waiting))
        return waiting.addTimeout(TIMEOUT, reactor)


async def _value(message: str) -> str:
    return message


def lines(message: str) -> list[str]:
    return message.split("\n")


@pytest_twisted.ensureDeferred
async def test_ready_watchdog_status_and_stopping_reach_the_notify_socket(
    tmp_path: Path,
) -> None:
    notify = NotifySocket()
    path = str(tmp_path / "notify.sock")
    port = reactor.listenUNIXDatagram(path, notify)
    try:
        daemon, base = await start(tmp_path, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
        ready = await notify.wait_for(lambda m: "READY=1" in lines(m))
        assert any(line.startswith("STATUS=") and "events/s" in line for line in lines(ready))
        await notify.wait_for(lambda m: m == "WATCHDOG=1")
        pings_before = notify.messages.count("WATCHDOG=1")
        await poll(_more_pings(notify, pings_before), timeout=TIMEOUT)
        reason = await daemon.terminate()
        assert clean_exit(reason), daemon.output_text()
        assert "STOPPING=1" in notify.messages
        assert notify.messages.index("STOPPING=1") > notify.messages.index(ready)
        assert base.startswith("http://127.0.0.1:")
    finally:
        await port.stopListening()


def _more_pings(notify: NotifySocket, before: int) -> Callable[[], Deferred[bool]]:
    def check() -> Deferred[bool]:
        return Deferred.fromCoroutine(_value_bool(notify.messages.count("WATCHDOG=1") > before))

    return check


async def _value_bool(value: bool) -> bool:
    return value


@pytest_twisted.ensureDeferred
async def test_socket_activation_serves_on_the_inherited_socket(tmp_path: Path) -> None:
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    port = listening.getsockname()[1]
    daemon = DaemonProcess.spawn(
        ["--listen", "systemd:domain=INET:name=http"],
        tmp_path,
        env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"},
        inherit_fd=listening.fileno(),
    )
    listening.close()  # the daemon holds its own copy now, as under systemd
    try:
        record = await daemon.wait_for(
            lambda r: r.get("logger") == "twisted_rta.web.listeners" and "address" in r
        )
        assert record["address"] == f"127.0.0.1:{port}"
        status, body = await get_json(f"http://127.0.0.1:{port}/health")
        assert (status, body["status"]) == (200, "healthy")
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()


@pytest_twisted.ensureDeferred
async def test_sighup_reloads_what_it_can_and_keeps_running_on_a_bad_file(
    tmp_path: Path,
) -> None:
    config = tmp_path / "rta.yaml"

    def write(**sections: object) -> None:
        config.write_text(yaml.safe_dump({"store": {"url": "memory:"}, **sections}))

    write(cors={"query": {"allowed_origins": ["https://a.example"]}})
    notify = NotifySocket()
    notify_path = str(tmp_path / "notify.sock")
    notify_port = reactor.listenUNIXDatagram(notify_path, notify)
    daemon, base = await start(tmp_path, "-c", str(config), env={"NOTIFY_SOCKET": notify_path})
    try:

        async def allowed_origin(origin: str) -> str | None:
            import treq

            response = await treq.get(base + "/health", headers={"Origin": origin}).addTimeout(
                TIMEOUT, reactor
            )
            await treq.content(response)
            values = response.headers.getRawHeaders("Access-Control-Allow-Origin")
            return values[0] if values else None

        assert await allowed_origin("https://a.example") == "https://a.example"
        write(cors={"query": {"allowed_origins": ["https://b.example"]}}, windows={"grace": "1m"})
        daemon.transport.signalProcess("HUP")
        reloaded = await daemon.wait_for(
            lambda r: r.get("message", "").startswith("config reloaded")
        )
        assert reloaded["applied"] == "cors.query.allowed_origins"
        assert reloaded["ignored"] == "windows.grace"
        assert await allowed_origin("https://b.example") == "https://b.example"
        assert await allowed_origin("https://a.example") is None
        await notify.wait_for(lambda m: m.startswith("RELOADING=1"))

        config.write_text("processing:\n  worker_count: 0\nlogging:\n  level: loud\n")
        daemon.transport.signalProcess("HUP")
        await daemon.wait_for(lambda r: r.get("message", "").startswith("reload failed"))
        problems = [r["problem"] for r in daemon.records if "problem" in r]
        assert len(problems) == 2
        assert await allowed_origin("https://b.example") == "https://b.example"
        status, _ = await get_json(base + "/ready")
        assert status == 200
    finally:
        reason = await daemon.terminate()
        await notify_port.stopListening()
    assert clean_exit(reason), daemon.output_text()
