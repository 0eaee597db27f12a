"""A connection that never sends a byte is closed by the real daemon at request_timeout,
not left open until idle_timeout."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from tests.e2e.test_daemon import start

pytestmark = pytest.mark.e2e
BOUND = 15.0  # seconds: far below idle_timeout (60 s), far above request_timeout (1 s)


def seconds_until_closed(port: int) -> float:
    """Open a connection, send nothing, return how long until the daemon closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock:
        opened = time.monotonic()
        try:
            data = sock.recv(1)
        except ConnectionResetError:  # aborted rather than closed: closed all the same
            data = b""
        except TimeoutError:
            return float("inf")
        assert data == b"", f"the daemon sent {data!r} to a silent client"
        return time.monotonic() - opened


@pytest_twisted.ensureDeferred
async def test_a_silent_connection_is_closed_at_the_request_timeout(tmp_path: Path) -> None:
    config = tmp_path / "rta.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"request_timeout": "1s", "idle_timeout": "60s"},
                "store": {"url": "memory:"},
                "logging": {"access_log": False},
            }
        )
    )
    daemon, base = await start(tmp_path, "-c", str(config))
    port = int(base.rsplit(":", 1)[1])
    try:
        waited = await deferToThread(seconds_until_closed, port).addTimeout(BOUND + 5, reactor)
        assert 0.5 <= waited < 5.0, f"closed after {waited:.2f}s"
    finally:
        await daemon.terminate()
