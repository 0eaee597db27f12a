"""server.write_timeout on the real daemon and real sockets, on both lanes: a client that
sends requests and never reads the answers is aborted once the deadline passes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import pytest_twisted
import yaml

from tests.e2e.process import clean_exit
from tests.e2e.test_daemon import start
from tests.e2e.test_metrics_port import scrape

pytestmark = pytest.mark.e2e
# Pipelined requests for answers (about 100 KiB each) that no socket buffer holds in all.
REQUESTS = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 300


@pytest.mark.parametrize("fast_lane", [True, False], ids=["fast_lane", "twisted_web"])
@pytest_twisted.ensureDeferred
async def test_a_client_that_never_reads_is_aborted(tmp_path: Path, fast_lane: bool) -> None:
    config = tmp_path / "rta.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"fast_lane": fast_lane, "write_timeout": "1s", "idle_timeout": "60s"},
                "store": {"url": "memory:"},
                "logging": {"access_log": False},
            }
        )
    )
    daemon, base = await start(tmp_path, "-c", str(config))
    host, port = base.removeprefix("http://").rsplit(":", 1)
    client = socket.socket()
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect((host, int(port)))
        client.sendall(REQUESTS)  # and never a recv
        aborted = await daemon.wait_for(
            lambda r: "did not read its response" in str(r.get("message")), timeout=15.0
        )
        assert aborted["timeout"] == 1.0
        status, text = await scrape(base + "/metrics")
        assert status == 200
        assert 'rta_http_connections_aborted_total{reason="write_timeout"} 1.0' in text
    finally:
        client.close()
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()
