"""server.metrics_listen on the real daemon: Prometheus scrapes /metrics on a port of its
own, with the main port's key rules, and nothing else is served there."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
import yaml
from twisted.internet import reactor

from tests.e2e.process import clean_exit
from tests.e2e.test_daemon import TIMEOUT, get_json, start

pytestmark = pytest.mark.e2e
READ_KEY = "prometheus-key-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def scrape(url: str, headers: Any = None) -> tuple[int, str]:
    response = await treq.get(url, headers=headers).addTimeout(TIMEOUT, reactor)
    body = await treq.content(response).addTimeout(TIMEOUT, reactor)
    return response.code, body.decode()


@pytest_twisted.ensureDeferred
async def test_metrics_are_scraped_on_their_own_port(tmp_path: Path) -> None:
    port = free_port()
    endpoint = f"tcp:{port}:interface=127.0.0.1"
    config = tmp_path / "rta.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"metrics_listen": [endpoint]},
                "store": {"url": "memory:"},
                "auth": {"keys": [{"name": "prom", "key": READ_KEY, "scopes": ["read"]}]},
            }
        )
    )
    daemon, base = await start(tmp_path, "-c", str(config))
    metrics = f"http://127.0.0.1:{port}"
    key = {"Authorization": f"Bearer {READ_KEY}"}
    try:
        assert not base.endswith(f":{port}")  # the API's port is another one
        listening = [r for r in daemon.records if r.get("endpoint") == endpoint and "address" in r]
        assert listening and listening[0]["address"] == f"127.0.0.1:{port}"

        status, text = await scrape(metrics + "/metrics", key)
        assert status == 200
        assert "rta_queue_depth" in text and "rta_http_connections_aborted_total" in text
        status, _ = await scrape(metrics + "/metrics")
        assert status == 401  # the main port's rule: the read scope
        status, body = await get_json(metrics + "/api/v1/stats")
        assert (status, body["code"]) == (404, "not_found")
        status, _ = await get_json(metrics + "/health")
        assert status == 404
        status, _ = await scrape(base + "/metrics", key)  # still on the main port too
        assert status == 200
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()
    assert f"stopped listening on {endpoint}" in daemon.messages()
