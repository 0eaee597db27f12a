"""End to end: ``twistd rta -c config.yaml`` on the Go service's own upstream config file,
with only its ports and PostgreSQL credentials set to this machine's: it starts, logs
exactly the no-effect lines, serves the API and /metrics on the second port, writes its
history to PostgreSQL, and lists 1m and 5m windows with the figures the file asks for."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
import yaml
from twisted.internet import reactor

from tests.config.test_go_vocabulary import UPSTREAM
from tests.e2e.process import DaemonProcess, clean_exit, poll
from tests.e2e.test_daemon import TIMEOUT, get_json, post_json
from tests.e2e.test_multicore import free_port
from tests.postgres import postgres_database

pytestmark = pytest.mark.e2e

NO_EFFECT = [
    "server.mode: no effect (a setting of Gin, the Go web framework)",
    "storage.redis: no effect (twisted-rta needs no Redis: its state is in memory, the "
    "journal and the window store)",
]


@pytest.fixture
def database() -> Iterator[str]:
    yield from postgres_database()


async def get_text(url: str) -> tuple[int, str]:
    response = await treq.get(url).addTimeout(TIMEOUT, reactor)
    body = await treq.content(response).addTimeout(TIMEOUT, reactor)
    return response.code, body.decode()


def rows(url: str, query: str) -> int:
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as connection:
        found = connection.execute(query).fetchone()
    assert found is not None
    return int(found[0])


@pytest_twisted.ensureDeferred
async def test_the_go_services_config_file_runs_the_daemon(tmp_path: Path, database: str) -> None:
    api_port, metrics_port = free_port(), free_port()
    name = database.rsplit("/", 1)[1]
    config = tmp_path / "config.yaml"
    # The upstream file verbatim, but for the ports, the API's interface (loopback only) and
    # the PostgreSQL credentials.
    text = (
        UPSTREAM.replace('host: "0.0.0.0", port: 8080', f'host: "127.0.0.1", port: {api_port}')
        .replace("port: 9090", f"port: {metrics_port}")
        .replace('host: "localhost", port: 5432', 'host: "127.0.0.1", port: 5432')
        .replace('database: "analytics", user: "youruser"', f'database: "{name}", user: "postgres"')
        .replace('password: "yourpassword"', 'password: ""')
    )
    config.write_text(text)
    changed = yaml.safe_load(text)
    assert changed["server"]["port"] == api_port
    assert changed["monitoring"]["prometheus"]["port"] == metrics_port
    assert changed["storage"]["postgres"]["database"] == name
    daemon = DaemonProcess.spawn(["-c", str(config)], tmp_path)
    base = f"http://127.0.0.1:{api_port}"
    try:

        async def ready() -> bool:
            try:
                status, _ = await get_json(base + "/ready")
            except Exception:  # not listening yet
                return False
            return status == 200

        await poll(ready, timeout=TIMEOUT)
        # Exactly the keys without an effect, one line each.
        no_effect = [m for m in daemon.messages() if "no effect" in m]
        assert no_effect == NO_EFFECT, daemon.output_text()

        events = [
            {"type": "purchase", "user_id": f"u{i}", "properties": {"amount": 10.0 * (i + 1)}}
            for i in range(4)
        ] + [{"type": "pageview", "user_id": "u9", "properties": {"page": "/"}}]
        status, _ = await post_json(base + "/api/v1/events/batch", events)
        assert status == 202

        # /metrics on the second port (and only /metrics there).
        status, text = await get_text(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200 and "rta_events_accepted_total" in text
        status, _ = await get_text(f"http://127.0.0.1:{metrics_port}/api/v1/stats")
        assert status == 404

        # 1m and 5m windows with the figures the file lists, and the Go names of their
        # metrics equal to ours.
        async def windows_counted() -> bool:
            status, body = await get_json(base + "/api/v1/windows")
            listed = body["data"]["windows"] if status == 200 else []
            return any(w.get("figures", {}).get("count") == 5 for w in listed)

        await poll(windows_counted, timeout=TIMEOUT)
        _, body = await get_json(base + "/api/v1/windows")
        data = body["data"]
        by_size: dict[int, dict[str, Any]] = {}
        for window in data["windows"]:
            by_size.setdefault(int(window["resolution_seconds"]), window)
        assert sorted(by_size) == [60, 300], json.dumps(data)
        minute, five = by_size[60], by_size[300]
        assert minute["figures"] == {"count": 5, "sum": 100.0, "avg": 25.0}
        assert set(five["figures"]) == {"count", "p95", "p99"} and five["figures"]["count"] == 5
        for window in (minute, five):
            metrics = window["metrics"]
            assert metrics["events"]["value"] == metrics["total_events"]["value"] == 5
            assert metrics["events:purchase"]["value"] == 4
            assert metrics["active_users"]["value"] == metrics["unique_users"]["value"] == 5
        [sliding] = data["sliding"]
        assert (sliding["size_seconds"], sliding["step_seconds"]) == (300, 60)
        assert set(sliding["figures"]) == {"rate", "unique"}

        # History in PostgreSQL: every flush (5 s) writes this node's mark and totals.
        async def stored() -> bool:
            return rows(database, "SELECT count(*) FROM rta_node_marks") > 0

        await poll(stored, timeout=TIMEOUT)
        assert rows(database, "SELECT count(*) FROM rta_metric_windows") > 0
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()
