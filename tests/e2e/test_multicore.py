"""Several rta processes on one port (SO_REUSEPORT) and one store answer the merged truth."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import pytest_twisted
import treq
import yaml
from twisted.internet import reactor

from tests.e2e.process import DaemonProcess, clean_exit, poll
from tests.e2e.test_daemon import TIMEOUT, get_json

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest_twisted.ensureDeferred
async def test_two_processes_share_the_port_and_the_store(tmp_path: Path) -> None:
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
    listen = f"reuseport:{port}:interface=127.0.0.1"
    nodes = [
        DaemonProcess.spawn(["-c", str(config), "--listen", listen, "--node-id", name], tmp_path)
        for name in ("core-0", "core-1")
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        for node in nodes:
            await node.wait_for(lambda r: r.get("logger") == "twisted_rta.web.listeners")

        async def ready() -> bool:
            status, _ = await get_json(base + "/ready")
            return status == 200

        await poll(ready, timeout=TIMEOUT)
        # New connections are spread over both processes by the kernel (no keep-alive here).
        for index in range(40):
            response = await treq.post(
                base + "/api/v1/events/batch",
                persistent=False,
                json=[{"type": "pageview", "user_id": f"u{index}-{i}"} for i in range(10)],
            ).addTimeout(TIMEOUT, reactor)
            await treq.content(response).addTimeout(TIMEOUT, reactor)
            assert response.code == 202

        async def merged() -> bool:
            _, body = await get_json(base + "/api/v1/metrics/total_events")
            return bool(body.get("data", {}).get("value") == 400)

        await poll(merged, timeout=TIMEOUT)
        for node in nodes:
            opened = [r for r in node.records if r.get("message", "").startswith("store open")]
            assert opened, node.output_text()
        _, stats = await get_json(base + "/api/v1/stats")
        assert 0 < stats["data"]["total_events"] <= 400  # one node's own share
    finally:
        reasons = [await node.terminate() for node in nodes]
    assert all(clean_exit(reason) for reason in reasons)
    served = [
        node
        for node in nodes
        if any(
            r.get("message", "").startswith("window closed") and r.get("events")
            for r in node.records
        )
    ]
    assert len(served) == 2, "the kernel gave every connection to one process"


@pytest_twisted.ensureDeferred
async def test_default_node_ids_differ_and_restarts_keep_every_acknowledged_event(
    tmp_path: Path,
) -> None:
    # Without --node-id both processes derive the same id from host and port: without the
    # lease they overwrote each other's all-time totals, and a restart lost events.
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
    args = ["-c", str(config), "--listen", f"reuseport:{port}:interface=127.0.0.1"]
    base = f"http://127.0.0.1:{port}"

    async def run_both() -> list[DaemonProcess]:
        nodes = []
        for _ in range(2):  # one after the other: the first takes slot 0
            node = DaemonProcess.spawn(args, tmp_path)
            await node.wait_for(lambda r: r.get("message", "").startswith("store open"))
            nodes.append(node)
        return nodes

    async def merged_total() -> int:
        _, body = await get_json(base + "/api/v1/metrics/total_events")
        return int(body.get("data", {}).get("value", 0))

    nodes = await run_both()
    try:
        ids = [
            next(r["node_id"] for r in n.records if r.get("message", "").startswith("store open"))
            for n in nodes
        ]
        assert ids[1] == ids[0] + "/2", ids
        for index in range(40):
            response = await treq.post(
                base + "/api/v1/events/batch",
                persistent=False,
                json=[{"type": "pageview", "user_id": f"u{index}-{i}"} for i in range(10)],
            ).addTimeout(TIMEOUT, reactor)
            await treq.content(response).addTimeout(TIMEOUT, reactor)
            assert response.code == 202
    finally:
        reasons = [await node.terminate() for node in nodes]
    assert all(clean_exit(reason) for reason in reasons)
    nodes = await run_both()
    try:

        async def all_restored() -> bool:
            return await merged_total() == 400

        await poll(all_restored, timeout=TIMEOUT)
    finally:
        reasons = [await node.terminate() for node in nodes]
    assert all(clean_exit(reason) for reason in reasons)
