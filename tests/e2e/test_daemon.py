"""End to end: the real ``twistd -n rta`` process on a free loopback port."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from tests.e2e.process import DaemonProcess, clean_exit, poll

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 20.0


async def start(
    tmp_path: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[DaemonProcess, str]:
    """Start twistd rta on a free port (tcp:0, the bound address read from its log) and
    wait until /ready says ready (the store opens asynchronously)."""
    daemon = DaemonProcess.spawn(
        ["--listen", "tcp:0:interface=127.0.0.1", *extra], tmp_path, env=env
    )
    listening = await daemon.wait_for(
        lambda r: r.get("logger") == "twisted_rta.web.listeners" and "address" in r
    )
    base = f"http://{listening['address']}"

    async def ready() -> bool:
        status, _ = await get_json(base + "/ready")
        return status == 200

    await poll(ready, timeout=TIMEOUT)
    return daemon, base


async def get_json(url: str) -> tuple[int, Any]:
    response = await treq.get(url).addTimeout(TIMEOUT, reactor)
    body = await treq.content(response).addTimeout(TIMEOUT, reactor)
    return response.code, json.loads(body)


async def post_json(url: str, payload: Any) -> tuple[int, Any]:
    response = await treq.post(url, json=payload).addTimeout(TIMEOUT, reactor)
    body = await treq.content(response).addTimeout(TIMEOUT, reactor)
    return response.code, json.loads(body)


@pytest_twisted.ensureDeferred
async def test_starts_answers_health_and_ready_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    daemon, base = await start(tmp_path)
    try:
        status, body = await get_json(base + "/health")
        assert status == 200 and body["status"] == "healthy"
        status, body = await get_json(base + "/ready")
        assert status == 200 and body["status"] == "ready"
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()
    messages = daemon.messages()
    steps = [m for m in messages if m.startswith("shutdown ")]
    assert steps == [
        "shutdown 1/5: stop listening",
        "shutdown 2/5: draining 0 queued events",
        "shutdown 3/5: stop the flush and retention loops",
        "shutdown 4/5: final flush of every window",
        "shutdown 5/5: closing the store",
        "shutdown complete",
    ], daemon.output_text()
    assert not [line for line in daemon.other_output if "Traceback" in line]


@pytest_twisted.ensureDeferred
async def test_documented_config_file_starts(tmp_path: Path) -> None:
    daemon, base = await start(tmp_path, "-c", str(REPO / "config" / "rta.yaml"))
    try:
        status, _ = await get_json(base + "/ready")
        assert status == 200
        started = next(r for r in daemon.records if "config" in r)
        assert started["config"]["windows.resolutions"][0] == {"size": 60.0, "retention": 172800.0}
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()


@pytest_twisted.ensureDeferred
async def test_ingest_query_and_final_flush(tmp_path: Path) -> None:
    daemon, base = await start(tmp_path)
    try:
        batch = (
            [
                {
                    "type": "pageview",
                    "user_id": f"u{i % 40}",
                    "session_id": f"s{i % 25}",
                    "properties": {"page": f"/p{i % 5}"},
                }
                for i in range(700)
            ]
            + [
                {"type": "click", "user_id": f"u{i % 40}", "properties": {"element": "buy"}}
                for i in range(200)
            ]
            + [
                {
                    "type": "purchase",
                    "user_id": f"u{i % 40}",
                    "properties": {"amount": float(i + 1)},
                }
                for i in range(100)
            ]
        )
        status, body = await post_json(base + "/api/v1/events/batch", batch)
        assert status == 202 and body["data"]["accepted"] == 1000
        for page in ("/home", "/home", "/pricing"):
            status, _ = await post_json(
                base + "/api/v1/events",
                {"type": "pageview", "user_id": "solo", "properties": {"page": page}},
            )
            assert status == 202

        async def all_counted() -> bool:
            _, stats = await get_json(base + "/api/v1/stats")
            return bool(stats["data"]["total_events"] == 1003)

        await poll(all_counted, timeout=TIMEOUT)
        _, body = await get_json(base + "/api/v1/metrics")
        metrics = body["data"]
        assert metrics["total_events"]["value"] == 1003
        assert metrics["pageviews"]["value"] == 703
        assert metrics["clicks"]["value"] == 200
        assert metrics["clicks:buy"]["value"] == 200
        assert metrics["purchases"]["value"] == 100
        assert metrics["page_views:/p0"]["value"] == 140
        assert metrics["page_views:/home"]["value"] == 2
        assert metrics["revenue"]["value"] == 5050
        assert metrics["unique_users"]["value"] == 41  # HLL is exact at this size
        assert metrics["unique_sessions"]["value"] == 25
        histogram = metrics["revenue_histogram"]
        assert (histogram["count"], histogram["min"], histogram["max"]) == (100, 1, 100)
        assert abs(histogram["p50"] - 50) <= 2
        assert abs(histogram["p99"] - 99) <= 2
        status, one = await get_json(base + "/api/v1/metrics/page_views%3A%2Fpricing")
        assert status == 200 and one["data"]["value"] == 1
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()
    closed = [r for r in daemon.records if str(r.get("message", "")).startswith("window closed")]
    for resolution in (60, 3600, 86400):
        events = sum(r["events"] for r in closed if r["resolution"] == resolution)
        assert events == 1003, (resolution, daemon.output_text())
    final = next(r for r in daemon.records if r.get("message", "").startswith("final flush"))
    assert final["windows"] == len(closed)


@pytest_twisted.ensureDeferred
async def test_port_in_use_fails_the_start(tmp_path: Path) -> None:
    first, base = await start(tmp_path)
    try:
        port = base.rsplit(":", 1)[1]
        second = DaemonProcess.spawn(["--listen", f"tcp:{port}:interface=127.0.0.1"], tmp_path)
        reason = await second.ended.addTimeout(TIMEOUT, reactor)
        assert reason.exitCode == 1
        about = [m for m in second.messages() if "cannot listen" in m]
        assert len(about) == 1 and about[0].startswith("cannot start: cannot listen on"), (
            second.output_text()
        )
        assert "Traceback" not in second.output_text()
        assert second.other_output == [], second.output_text()
    finally:
        await first.terminate()


@pytest_twisted.ensureDeferred
async def test_bad_config_prints_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("processing:\n  worker_count: 0\n")
    daemon = DaemonProcess.spawn(["-c", str(path)], tmp_path)
    reason = await daemon.ended.addTimeout(TIMEOUT, reactor)
    assert reason.exitCode == 1
    output = "".join(daemon.other_output).strip()
    assert output == (
        "twistd rta: config error: processing.worker_count: must be an integer between 1 and "
        "256, got 0 (see: twistd rta --help)"
    )


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
