"""``twistd -n rta --processes 2``: one supervisor, two serving children on one port, one
store; a killed child comes back; SIGTERM stops them all."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
import yaml
from twisted.internet import reactor
from twisted.internet.defer import succeed

from tests.e2e.process import DaemonProcess, Record, clean_exit, poll
from tests.e2e.test_daemon import TIMEOUT
from tests.e2e.test_multicore import free_port

pytestmark = pytest.mark.e2e


async def fresh_get(url: str) -> tuple[int, Any]:
    """A GET on a new connection, so that the kernel picks the child that accepts it."""
    response = await treq.get(url, persistent=False).addTimeout(TIMEOUT, reactor)
    body = await treq.content(response).addTimeout(TIMEOUT, reactor)
    return response.code, json.loads(body)


def started(slot: int, not_pid: int | None = None) -> Any:
    return lambda r: (
        r.get("message", "").startswith("started child")
        and r.get("slot") == slot
        and r.get("pid") != not_pid
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest_twisted.ensureDeferred
async def test_processes_serve_one_port_restart_a_killed_child_and_stop_together(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = tmp_path / "rta.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "store": {"data_dir": str(tmp_path / "data")},
                "windows": {"flush_interval": "200ms"},
                "logging": {"access_log": False},
            }
        )
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.setblocking(False)
    supervisor = DaemonProcess.spawn(
        ["-c", str(config), "--listen", f"tcp:{port}:interface=127.0.0.1", "--processes", "2"],
        tmp_path,
        env={"NOTIFY_SOCKET": str(tmp_path / "notify")},
    )
    base = f"http://127.0.0.1:{port}"
    pids: set[int] = set()
    try:
        first = [await supervisor.wait_for(started(slot)) for slot in (1, 2)]
        pids.update(int(record["pid"]) for record in first)
        await supervisor.wait_for(lambda r: r.get("message") == "all 2 processes are ready")

        # systemd hears READY=1 from the supervisor once both children said it.
        told: list[str] = []

        def ready_told() -> Any:
            while True:
                try:
                    told.append(notify.recv(4096).decode())
                except BlockingIOError:
                    break
            return succeed(any("READY=1" in message for message in told))

        await poll(ready_told, timeout=TIMEOUT)
        ready = next(message for message in told if "READY=1" in message)
        assert "STATUS=2/2 processes ready" in ready

        # Both children accept from the one socket: new connections reach both node ids.
        seen: set[str] = set()

        async def both_serve() -> bool:
            status, body = await fresh_get(base + "/api/v1/stats")
            assert status == 200
            seen.add(body["data"]["node_id"])
            return len(seen) == 2

        await poll(both_serve, timeout=TIMEOUT, every=0.0)
        host_port = f"{socket.gethostname()}:{port}"
        assert seen == {host_port, host_port + "/2"}

        for index in range(40):
            response = await treq.post(
                base + "/api/v1/events/batch",
                persistent=False,
                json=[{"type": "pageview", "user_id": f"u{index}-{i}"} for i in range(10)],
            ).addTimeout(TIMEOUT, reactor)
            await treq.content(response).addTimeout(TIMEOUT, reactor)
            assert response.code == 202

        async def merged(expected: int) -> bool:
            # Any child answers the merged truth: ask over several new connections.
            for _ in range(4):
                _, body = await fresh_get(base + "/api/v1/metrics/total_events")
                if body.get("data", {}).get("value") != expected:
                    return False
            return True

        await poll(lambda: merged(400), timeout=TIMEOUT)

        # kill -9 one child: the supervisor starts slot 2 again, on its own node id.
        killed = int(first[1]["pid"])
        os.kill(killed, signal.SIGKILL)
        ended: Record = await supervisor.wait_for(
            lambda r: "killed by signal 9" in r.get("message", "") and r.get("pid") == killed
        )
        assert ended["slot"] == 2 and "restarting in" in ended["message"]
        again = await supervisor.wait_for(started(2, not_pid=killed), timeout=TIMEOUT)
        pids.add(int(again["pid"]))
        assert again["node_id"] == host_port + "/2"
        await supervisor.wait_for(
            lambda r: r.get("message", "").endswith("is ready") and r.get("pid") == again["pid"]
        )
        seen.clear()
        await poll(both_serve, timeout=TIMEOUT, every=0.0)
        # Its journal came back with it: nothing it had accepted is lost.
        await poll(lambda: merged(400), timeout=TIMEOUT)
    finally:
        reason = await supervisor.terminate()
        notify.close()
    assert clean_exit(reason), supervisor.output_text()
    assert not [pid for pid in pids if alive(pid)]
    messages = supervisor.messages()
    assert "all processes stopped" in messages
    assert sum(message == "shutdown complete" for message in messages) == 2
    assert not [r for r in supervisor.records if r.get("level") in ("error", "critical")], [
        r for r in supervisor.records if r.get("level") in ("error", "critical")
    ]


@pytest_twisted.ensureDeferred
async def test_processes_share_the_metrics_port_too(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    config = tmp_path / "rta.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "store": {"data_dir": str(tmp_path / "data")},
                "server": {"metrics_listen": [f"tcp:{metrics_port}:interface=127.0.0.1"]},
                "logging": {"access_log": False},
            }
        )
    )
    supervisor = DaemonProcess.spawn(
        ["-c", str(config), "--listen", f"tcp:{port}:interface=127.0.0.1", "--processes", "2"],
        tmp_path,
    )
    try:
        # Both children bind nothing themselves: they adopt the supervisor's sockets, the
        # metrics port's too, so the second does not fail on a port in use.
        await supervisor.wait_for(lambda r: r.get("message") == "all 2 processes are ready")
        for _ in range(4):
            response = await treq.get(
                f"http://127.0.0.1:{metrics_port}/metrics", persistent=False
            ).addTimeout(TIMEOUT, reactor)
            text = (await treq.content(response).addTimeout(TIMEOUT, reactor)).decode()
            assert response.code == 200 and "rta_uptime_seconds" in text
    finally:
        reason = await supervisor.terminate()
    assert clean_exit(reason), supervisor.output_text()
