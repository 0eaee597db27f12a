"""End to end: Plausible's /api/event in the real ``twistd rta``, and what it keeps.

A distinctive client address (through a trusted proxy) and User-Agent post pageviews; the
visitors are counted, and then a search of the whole state directory (journal, checkpoints,
SQLite store) and of the daemon's log output finds neither the address nor the User-Agent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_twisted
import treq
import yaml
from twisted.internet import reactor

from tests.e2e.process import clean_exit, poll
from tests.e2e.test_daemon import TIMEOUT, get_json, start

pytestmark = pytest.mark.e2e

ADDRESS = "203.0.113.201"
AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0 PrivacyProbe/7"
OTHER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0 Other/1"


async def send(base: str, agent: str, page: str) -> int:
    body = json.dumps({"n": "pageview", "u": f"https://example.com{page}", "d": "example.com"})
    response = await treq.post(
        base + "/api/event",
        data=body.encode(),
        headers={
            "Content-Type": "text/plain",
            "User-Agent": agent,
            "X-Forwarded-For": ADDRESS,
        },
    ).addTimeout(TIMEOUT, reactor)
    await treq.content(response).addTimeout(TIMEOUT, reactor)
    return int(response.code)


@pytest_twisted.ensureDeferred
async def test_visitors_are_counted_and_neither_address_nor_agent_is_kept(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "rta.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"trusted_proxies": ["127.0.0.1"]},
                "store": {"data_dir": str(data), "node_id": "solo"},
                "windows": {"flush_interval": "200ms", "grace": "0s"},
                "logging": {"level": "debug", "access_log": True},
            }
        )
    )
    daemon, base = await start(tmp_path, "-c", str(config))
    try:
        for page in ("/", "/pricing", "/docs"):
            assert await send(base, AGENT, page) == 202
        assert await send(base, OTHER_AGENT, "/") == 202

        async def counted() -> bool:
            _, body = await get_json(base + "/api/v1/stats")
            return bool(body["data"]["total_events"] == 4)

        await poll(counted, timeout=TIMEOUT)
        _, users = await get_json(base + "/api/v1/metrics/unique_users")
        assert users["data"]["value"] == 2  # one address, two User-Agents
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()
    files = [path for path in data.rglob("*") if path.is_file()]
    assert any(path.suffix == ".sqlite3" for path in files), files
    for path in files:
        content = path.read_bytes()
        for secret in (ADDRESS, AGENT, "PrivacyProbe"):
            assert secret.encode() not in content, f"{secret} found in {path}"
    log = daemon.output_text()
    assert "/api/event" in log  # the access log did log the requests
    for secret in (ADDRESS, "PrivacyProbe"):
        assert secret not in log
