"""sd_notify over a real AF_UNIX datagram socket, and the unit files through systemd-analyze."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogLevel

from tests.environment import require
from twisted_rta.ops import systemd
from twisted_rta.ops.systemd import SystemdNotifier

UNITS = Path(__file__).resolve().parents[2] / "config" / "systemd"
OUR_UNITS = re.compile(r"\brta\.(service|socket)\b")


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    # A local datagram is queued on the receiver before sendto() returns, so a non-blocking
    # recv() sees it at once: no waiting, and a missing message fails instead of hanging.
    sock.setblocking(False)
    return sock


@pytest.fixture
def socket_path(tmp_path: Path) -> str:
    return str(tmp_path / "notify")  # short: AF_UNIX paths are limited to 107 bytes


@pytest.fixture
def receiver(socket_path: str) -> Iterator[socket.socket]:
    sock = _receiver(socket_path)
    yield sock
    sock.close()


@pytest.fixture
def notifier(socket_path: str, receiver: socket.socket) -> Iterator[SystemdNotifier]:
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": socket_path})
    yield notifier
    notifier.close()


def received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode("utf-8"))
        except BlockingIOError:
            return messages


def test_each_message_arrives_as_one_datagram(
    notifier: SystemdNotifier, receiver: socket.socket
) -> None:
    assert notifier.enabled
    notifier.ready()
    notifier.watchdog()
    notifier.stopping()
    assert received(receiver) == ["READY=1", "WATCHDOG=1", "STOPPING=1"]


def test_assignments_are_joined_by_newlines(
    notifier: SystemdNotifier, receiver: socket.socket
) -> None:
    notifier.notify("READY=1", "STATUS=listening on tcp:8080", "MAINPID=42")
    notifier.ready("accepting events")
    notifier.reloading(123_456_789)
    notifier.status("queue 3/10000 — ok")
    assert received(receiver) == [
        "READY=1\nSTATUS=listening on tcp:8080\nMAINPID=42",
        "READY=1\nSTATUS=accepting events",
        "RELOADING=1\nMONOTONIC_USEC=123456789",
        "STATUS=queue 3/10000 — ok",
    ]


def test_a_newline_in_a_status_cannot_inject_an_assignment(
    notifier: SystemdNotifier, receiver: socket.socket
) -> None:
    notifier.status("store down\nREADY=1")
    notifier.ready("ok\r\nSTOPPING=1")
    assert received(receiver) == ["STATUS=store down READY=1", "READY=1\nSTATUS=ok STOPPING=1"]


def test_abstract_socket() -> None:
    name = f"twisted-rta-test-{os.getpid()}-{secrets.token_hex(4)}"
    receiver = _receiver("\0" + name)
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": "@" + name})
    try:
        notifier.ready("up")
        assert received(receiver) == ["READY=1\nSTATUS=up"]
    finally:
        notifier.close()
        receiver.close()


def test_close_releases_the_socket_and_a_later_message_still_arrives(
    notifier: SystemdNotifier, receiver: socket.socket
) -> None:
    notifier.watchdog()
    notifier.close()
    notifier.close()
    notifier.stopping()
    assert received(receiver) == ["WATCHDOG=1", "STOPPING=1"]


@pytest.mark.parametrize(
    "environ",
    [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative/notify"}, {"NOTIFY_SOCKET": "@"}],
    ids=["unset", "empty", "relative", "bare-at"],
)
def test_without_a_usable_notify_socket_every_method_is_a_no_op(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_socket(*args: Any) -> None:
        raise AssertionError("a disabled notifier opened a socket")

    notifier = SystemdNotifier.from_environ(environ)
    monkeypatch.setattr(systemd.socket, "socket", no_socket)
    assert not notifier.enabled
    notifier.ready("up")
    notifier.notify("READY=1")
    notifier.status("x")
    notifier.reloading(1)
    notifier.watchdog()
    notifier.stopping()
    notifier.close()


def test_a_vanished_socket_does_not_raise_and_is_logged_once(
    notifier: SystemdNotifier,
    receiver: socket.socket,
    socket_path: str,
    captured_logs: list[dict[str, Any]],
) -> None:
    receiver.close()
    os.unlink(socket_path)
    notifier.ready()
    notifier.watchdog()
    notifier.stopping()
    warnings = [e for e in captured_logs if e["log_level"] == LogLevel.warn]
    assert len(warnings) == 1
    assert warnings[0]["address"] == socket_path


def test_a_full_receive_queue_does_not_block(
    notifier: SystemdNotifier, receiver: socket.socket, captured_logs: list[dict[str, Any]]
) -> None:
    notifier.watchdog()
    # Checked before filling the queue: a blocking socket would hang the loop below.
    assert notifier._socket is not None and not notifier._socket.getblocking()
    for _ in range(1000):  # far beyond net.unix.max_dgram_qlen (10 by default)
        notifier.watchdog()
    assert received(receiver)[0] == "WATCHDOG=1"
    assert len([e for e in captured_logs if e["log_level"] == LogLevel.warn]) == 1


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000"}, 0.0005),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "pid"}, None),
        ({}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-30000000"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": "3e7"}, None),
        ({"WATCHDOG_USEC": "30_000_000"}, None),
        ({"WATCHDOG_USEC": " 30000000"}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], interval: float | None) -> None:
    # Independent of NOTIFY_SOCKET: with none the pings are no-ops anyway.
    notifier = SystemdNotifier.from_environ(environ, getpid=lambda: 4242)
    assert notifier.watchdog_interval() == interval


def test_watchdog_pid_defaults_to_this_process() -> None:
    environ = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert SystemdNotifier.from_environ(environ).watchdog_interval() == 1.0


# systemd-analyze verify ----------------------------------------------------------------------


@pytest.fixture
def verifiable_units(tmp_path: Path) -> Path:
    """Copies of the units whose ExecStart= names an executable that exists here.

    verify fails a unit whose command is not executable, and /opt/rta is the production
    install, not this checkout. Everything else is kept as shipped, User=rta included (verify
    does not resolve users).
    """
    require(
        shutil.which("systemd-analyze") is not None,
        "systemd-analyze is not installed (Debian: apt-get install systemd)",
    )
    twistd = tmp_path / "twistd"
    twistd.write_text("#!/bin/sh\nexit 0\n")
    twistd.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for name in ("rta.service", "rta.socket"):
        text = (UNITS / name).read_text()
        text = text.replace("/opt/rta/bin/twistd", str(twistd))
        if not os.access("/bin/kill", os.X_OK):
            # procps is on every systemd host, not always in a container image.
            text = text.replace("/bin/kill", "/bin/true")
        (units / name).write_text(text)
    return units


def verify(*units: Path) -> tuple[int, list[str]]:
    result = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        # Default level: warnings and errors only; the debug level is a manager's whole log.
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning", "SYSTEMD_COLORS": "0"},
    )
    return result.returncode, (result.stdout + result.stderr).splitlines()


def problems_of_ours(lines: list[str], units: Path) -> list[str]:
    # Every complaint about a unit names its file ("/path/rta.service:37: Unknown key ...") or
    # the unit ("rta.socket: Unit has no Listen setting"). In this container (systemd 252,
    # Docker, root or not) a clean pair prints nothing at all; any other line would be about
    # the host's own units that ours pull in (network.target, sockets.target, ...), which is
    # the machine's business, not the unit files'.
    return [line for line in lines if str(units) in line or OUR_UNITS.search(line)]


def test_units_pass_systemd_analyze_verify(verifiable_units: Path) -> None:
    units = verifiable_units
    returncode, lines = verify(units / "rta.service", units / "rta.socket")
    assert problems_of_ours(lines, units) == []
    assert returncode == 0, lines


def test_verify_check_catches_a_bad_setting(verifiable_units: Path) -> None:
    # Guards the filter above: a typo only draws a warning and still exits 0.
    service = verifiable_units / "rta.service"
    service.write_text(service.read_text().replace("WatchdogSec=30", "WatchdogSec=thirty"))
    returncode, lines = verify(service)
    assert returncode == 0
    assert [line.split(": ", 1)[1] for line in problems_of_ours(lines, verifiable_units)] == [
        "Failed to parse sec value, ignoring: thirty"
    ]


def test_the_unit_allows_max_connections_file_descriptors() -> None:
    # server.max_connections defaults to 10,000; systemd's default soft limit is 1024.
    settings = dict(
        line.split("=", 1)
        for line in (UNITS / "rta.service").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert int(settings["LimitNOFILE"]) >= 10_000 + 64
