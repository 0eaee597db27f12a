"""Hostile input against a real process: it stays up, answers /health, keeps memory bounded,
and every event accepted before is still counted."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from pathlib import Path

import pytest
import pytest_twisted
import yaml
from twisted.internet.threads import deferToThread

from tests.e2e.test_daemon import get_json, post_json, start

pytestmark = pytest.mark.e2e


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def raw_exchange(port: int, payload: bytes, *, read_timeout: float = 10.0) -> bytes:
    """Send raw bytes, return what the daemon answers until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        # The daemon may answer and close before taking it all (that is the point).
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def post_raw(port: int, body: bytes, path: str = "/api/v1/events") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return raw_exchange(port, head + body)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def slowloris(port: int, connections: int, seconds: float) -> int:
    """Open connections that trickle a request head; count those the daemon closed."""
    socks = []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port), timeout=seconds + 5)
        sock.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\n")
        socks.append(sock)
    closed = 0
    for sock in socks:
        try:
            sock.settimeout(seconds + 5)
            for _ in range(int(seconds * 2) + 4):
                sock.sendall(b"X-Slow: 1\r\n")
                if not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                    break
        except (BlockingIOError, TimeoutError):
            pass
        except (BrokenPipeError, ConnectionResetError):
            closed += 1
            continue
        try:
            sock.settimeout(seconds + 5)
            if sock.recv(1) == b"":
                closed += 1
        except (ConnectionResetError, TimeoutError):
            closed += 1
        finally:
            sock.close()
    return closed


def spray_addresses(port: int, count: int) -> dict[int, int]:
    """``count`` requests, each claiming a different client address via a trusted proxy."""
    statuses: dict[int, int] = {}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for index in range(count):
            fake = f"198.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"
            connection.request("GET", "/api/v1/stats", headers={"X-Forwarded-For": fake})
            response = connection.getresponse()
            response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
    finally:
        connection.close()
    return statuses


@pytest_twisted.ensureDeferred
async def test_hostile_clients_do_not_hurt_the_daemon(tmp_path: Path) -> None:
    config = tmp_path / "rta.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"request_timeout": "1s", "trusted_proxies": ["127.0.0.1"]},
                "store": {"url": "memory:"},
                "logging": {"access_log": False},
                "rate_limits": {"max_clients": 1000},
            }
        )
    )
    daemon, base = await start(tmp_path, "-c", str(config))
    port = int(base.rsplit(":", 1)[1])
    pid = daemon.transport.pid
    try:
        status, body = await post_json(
            base + "/api/v1/events/batch",
            [{"type": "pageview", "user_id": f"u{i}"} for i in range(100)],
        )
        assert status == 202 and body["data"]["accepted"] == 100
        baseline_rss = rss_kib(pid)

        gigantic = (
            b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600"
            b"\r\n\r\n" + b"x" * 65536
        )
        response = await deferToThread(raw_exchange, port, gigantic)
        assert status_of(response) == 413
        assert b'"code":"body_too_large"' in response

        cases = {  # body -> the error code it must get
            b"[" * 200_000 + b"]" * 200_000: b"event_too_large",  # 400 KB of nesting
            b"[" * 30_000 + b"]" * 30_000: b"too_deep",
            b'{"type":"x","user_id":"\xff\xfe"}': b"invalid_json",  # invalid UTF-8
            b'{"type":"x","properties":{"n":1e999999}}': b"invalid_number",
            b'{"type":"x","timestamp":1e300}': b"timestamp_in_future",
            b'{"type":"x","properties":{"n":NaN}}': b"invalid_json",
            b'{"type":"x","properties":{"n":-Infinity}}': b"invalid_json",
            json.dumps(
                {"type": "x", "properties": {f"k{i}": i for i in range(10_000)}}
            ).encode(): b"event_too_large",
            json.dumps(
                {"type": "x", "properties": {f"k{i}": i for i in range(3_000)}}
            ).encode(): b"too_many_properties",
            b'{"type":"x","properties":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}": b"too_deep",
        }
        for body_bytes, code in cases.items():
            response = await deferToThread(post_raw, port, body_bytes)
            assert status_of(response) in (400, 413), response[:300]
            assert b'"code":"' + code + b'"' in response, response[-300:]
            assert b"Traceback" not in response

        flood = (
            b"GET /health HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-Flood-%d: %s\r\n" % (i, b"v" * 100) for i in range(2000))
            + b"\r\n"
        )
        response = await deferToThread(raw_exchange, port, flood)
        assert status_of(response) in (400, 431, 0)  # refused, or the connection dropped

        closed = await deferToThread(slowloris, port, 30, 1.0)
        assert closed == 30  # every trickling client was cut off after request_timeout

        statuses = await deferToThread(spray_addresses, port, 10_000)
        assert sum(statuses.values()) == 10_000
        assert set(statuses) <= {200, 429}

        status, body = await get_json(base + "/health")
        assert status == 200
        status, body = await get_json(base + "/api/v1/metrics/total_events")
        assert body["data"]["value"] == 100  # nothing hostile was counted, nothing lost
        grown_mib = (rss_kib(pid) - baseline_rss) / 1024
        assert grown_mib < 64, f"RSS grew by {grown_mib:.1f} MiB"
    finally:
        await daemon.terminate()
