"""Helpers for the kill -9 end-to-end tests: what was acknowledged, how to kill, and what
every query must answer afterwards.

A ``Ledger`` keeps every request the daemon answered 202 (certain) and every request whose
answer was lost to a kill (uncertain). Each request starts with a marker pageview on its own
page, ``/req/<n>``: after a restart the all-time page_views breakdown says, per request,
whether it was counted (all-or-nothing) and that it was counted at most once.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
import time
from collections import Counter
from pathlib import Path
from typing import Any

import treq
import yaml
from attrs import define, field
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from tests.e2e.process import DaemonProcess, poll
from twisted_rta.timefmt import iso_utc

TIMEOUT = 20.0
FLUSH = 0.5  # windows.flush_interval of these tests, in seconds
MARKER = "/req/"
USERS = 80  # distinct users at most: HLL is exact well below 100

# The journal's record header (docs: twisted_rta/journal/framing.py): magic, payload
# length, seq, appended at, crc32; read here from the documented format, not the module.
RECORD_HEADER = struct.Struct("<4sIQqI")
RECORD_MAGIC = b"RJ\x01\n"


# -- configuration and processes ----------------------------------------------------------


def write_config(tmp_path: Path, name: str, **sections: Any) -> Path:
    """A config file: the default resolutions (1m, 1h, 1d), a 500ms flush, 1s grace, no
    access log, plus ``sections`` merged over those."""
    raw: dict[str, Any] = {
        "logging": {"access_log": False},
        "windows": {"flush_interval": f"{int(FLUSH * 1000)}ms", "grace": "1s"},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def start_daemon(
    tmp_path: Path, config: Path, *extra: str, ready: bool = True
) -> tuple[DaemonProcess, str]:
    """``twistd rta`` on a free port; waits for /ready 200, or only for /health when the
    store is expected to be down (``ready=False``)."""
    daemon = DaemonProcess.spawn(
        ["--listen", "tcp:0:interface=127.0.0.1", "-c", str(config), *extra], tmp_path
    )
    listening = await daemon.wait_for(
        lambda r: r.get("logger") == "twisted_rta.web.listeners" and "address" in r,
        timeout=TIMEOUT,
    )
    base = f"http://{listening['address']}"
    path = "/ready" if ready else "/health"

    async def up() -> bool:
        status, _, _ = await get(base + path)
        return status == 200

    await poll(up, timeout=TIMEOUT)
    return daemon, base


async def kill9(daemon: DaemonProcess) -> None:
    """SIGKILL now and wait (bounded) for the process to be gone."""
    reason = await daemon.terminate("KILL", timeout=TIMEOUT)
    assert getattr(reason, "signal", None) == 9, (reason, daemon.output_text())


async def stop(daemon: DaemonProcess) -> None:
    """End a daemon that a failed test left running (SIGKILL: the state is not needed)."""
    if not daemon.ended.called:
        daemon.transport.signalProcess("KILL")
        await daemon.ended.addTimeout(TIMEOUT, reactor)


def no_tracebacks(daemon: DaemonProcess) -> None:
    text = daemon.output_text()
    assert "Traceback" not in text, text


# -- HTTP ---------------------------------------------------------------------------------


async def get(url: str) -> tuple[int, Any, dict[str, str]]:
    response = await treq.get(url).addTimeout(TIMEOUT, reactor)
    body = await treq.content(response).addTimeout(TIMEOUT, reactor)
    return response.code, _decoded(body), _headers(response)


async def post(url: str, payload: Any) -> tuple[int, Any, dict[str, str]]:
    response = await treq.post(url, json=payload).addTimeout(TIMEOUT, reactor)
    body = await treq.content(response).addTimeout(TIMEOUT, reactor)
    return response.code, _decoded(body), _headers(response)


def _decoded(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def _headers(response: Any) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): values[-1].decode("latin-1")
        for name, values in response.headers.getAllRawHeaders()
    }


async def data(url: str) -> Any:
    status, body, _ = await get(url)
    assert status == 200, (url, status, body)
    return body["data"]


async def journal_stats(base: str) -> dict[str, Any]:
    stats = await data(base + "/api/v1/stats")
    journal: dict[str, Any] = stats["journal"]
    assert journal is not None, stats
    return journal


async def wait_all_stored(base: str, timeout: float = TIMEOUT) -> None:
    """Until the journal holds nothing the store does not: two checkpoints stored since."""

    async def stored() -> bool:
        return (await journal_stats(base))["oldest_unstored_seconds"] is None

    await poll(stored, timeout=timeout)


async def wait_checkpoint_after(base: str, instant: float, timeout: float = TIMEOUT) -> None:
    """Until the daemon has taken a checkpoint later than ``instant`` (wall clock; the
    daemon runs on the same host clock)."""

    async def taken() -> bool:
        age = (await journal_stats(base))["checkpoint_age_seconds"]
        return age is not None and time.time() - age > instant

    await poll(taken, timeout=timeout, every=0.01)


async def wait_applied(base: str, total: int, timeout: float = TIMEOUT) -> None:
    """Until this node's aggregator holds ``total`` events (stats reads it directly)."""

    async def applied() -> bool:
        stats = await data(base + "/api/v1/stats")
        assert stats["total_events"] <= total, (stats["total_events"], total)
        return bool(stats["total_events"] == total)

    await poll(applied, timeout=timeout, every=0.01)


# -- events and the ledger ----------------------------------------------------------------


_request_numbers = itertools.count(1)


def minute_of(timestamp_ms: int) -> str:
    return iso_utc(math.floor(timestamp_ms / 60_000) * 60)


@define
class Request:
    """One POST: its path, body, and events (the marker first)."""

    number: int
    path: str
    payload: Any
    events: list[dict[str, Any]]


def make_request(
    size: int, *, now: float, spread: float = 570.0, batch: bool | None = None
) -> Request:
    """A request of ``size`` events (>= 1): a marker pageview, then a mix of pageviews,
    clicks and purchases with users u0..u79, amounts in quarters (exact float sums), and
    timestamps over the last ``spread`` seconds (at least 5 s old: the current minute and
    several closed ones)."""
    number = next(_request_numbers)
    events = []
    for i in range(size):
        k = number * 7919 + i * 104_729
        ts = int((now - 5 - (k % 1000) / 1000 * spread) * 1000)
        user = f"u{k % USERS}"
        kind = k % 10
        if i == 0:
            event = {
                "type": "pageview",
                "user_id": user,
                "session_id": f"s{k % 17}",
                "properties": {"page": f"{MARKER}{number}"},
            }
        elif kind < 6:
            event = {
                "type": "pageview",
                "user_id": user,
                "session_id": f"s{k % 17}",
                "properties": {"page": f"/p{k % 9}"},
            }
        elif kind < 8:
            event = {"type": "click", "user_id": user, "properties": {"element": f"e{k % 4}"}}
        else:
            event = {
                "type": "purchase",
                "user_id": user,
                "properties": {"amount": 1 + (k % 40) / 4},
            }
        event["timestamp"] = ts
        events.append(event)
    if batch is None:
        batch = size > 1
    if batch:
        return Request(number, "/api/v1/events/batch", events, events)
    assert size == 1
    return Request(number, "/api/v1/events", events[0], events)


@define
class Ledger:
    """What the daemon acknowledged (certain) and what a kill left unanswered (uncertain)."""

    certain: list[Request] = field(factory=list)
    uncertain: list[Request] = field(factory=list)

    @property
    def acknowledged(self) -> int:
        return sum(len(request.events) for request in self.certain)

    async def send(self, base: str, request: Request) -> int:
        """POST it; a 202 makes it certain. Returns the status."""
        status, body, _ = await post(base + request.path, request.payload)
        if status == 202:
            self.certain.append(request)
        else:
            assert status != 400, body
        return status

    async def send_all(self, base: str, requests: list[Request]) -> None:
        for request in requests:
            status = await self.send(base, request)
            assert status == 202, status

    def send_concurrently(self, base: str, requests: list[Request]) -> list[Deferred[int]]:
        """POST them all at once; each request is uncertain until its 202 arrives (a kill
        may cut any of them). The Deferreds fire with the status, or -1 when cut."""

        async def one(request: Request) -> int:
            try:
                status = await self.send(base, request)
            except AssertionError:
                raise
            except Exception:  # the connection was cut by the kill
                return -1
            if status != 202:
                return status
            self.uncertain.remove(request)
            return status

        self.uncertain.extend(requests)
        return [Deferred.fromCoroutine(one(request)) for request in requests]

    async def resolve(self, base: str) -> list[int]:
        """Ask the daemon which uncertain requests it counted (their markers); move those
        to certain. Asserts every certain request is counted exactly once and every
        uncertain one at most once. Returns the counted uncertain requests' numbers."""
        pages = await page_counts(base)
        for request in self.certain:
            assert pages.get(f"{MARKER}{request.number}") == 1, (request.number, pages)
        counted = []
        for request in self.uncertain:
            seen = pages.get(f"{MARKER}{request.number}", 0)
            assert seen in (0, 1), (request.number, seen)
            if seen:
                counted.append(request.number)
                self.certain.append(request)
        self.uncertain = []
        return counted

    def events(self) -> list[dict[str, Any]]:
        return [event for request in self.certain for event in request.events]


async def page_counts(base: str) -> dict[str, int]:
    found = await data(base + "/api/v1/breakdown/page_views?limit=1000")
    assert found["other"] == 0, found
    return {item["value"]: item["count"] for item in found["items"]}


def expected_figures(events: list[dict[str, Any]]) -> dict[str, Any]:
    purchases = [e for e in events if e["type"] == "purchase"]
    amounts = [e["properties"]["amount"] for e in purchases]
    return {
        "total": len(events),
        "pageviews": sum(1 for e in events if e["type"] == "pageview"),
        "clicks": sum(1 for e in events if e["type"] == "click"),
        "purchases": len(purchases),
        "revenue": sum(amounts),
        "users": len({e["user_id"] for e in events}),
        "per_minute": dict(Counter(minute_of(e["timestamp"]) for e in events)),
        "pages": dict(Counter(e["properties"]["page"] for e in events if e["type"] == "pageview")),
    }


def future_instant(now: float) -> str:
    """A fixed ``to`` two minutes ahead, so every question asks about the same range."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 120))


async def check_counts(base: str, events: list[dict[str, Any]], to: str) -> None:
    """Every figure, all time and over ranges of each resolution, equals what was sent."""
    want = expected_figures(events)
    metrics = await data(base + "/api/v1/metrics")
    got_all_time = {
        "total": metrics["total_events"]["value"],
        "pageviews": metrics["pageviews"]["value"],
        "clicks": metrics["clicks"]["value"],
        "purchases": metrics["purchases"]["value"],
        "revenue": metrics["revenue"]["value"],
        "users": metrics["unique_users"]["value"],
        "histogram": (
            metrics["revenue_histogram"]["count"],
            metrics["revenue_histogram"]["sum"],
        ),
    }
    want_all_time = {
        key: want[key] for key in ("total", "pageviews", "clicks", "purchases", "revenue", "users")
    }
    want_all_time["histogram"] = (want["purchases"], want["revenue"])
    assert got_all_time == want_all_time, "all-time figures"

    async def ranged(name: str, query: str, resolution: int) -> dict[str, Any]:
        found = await data(f"{base}/api/v1/metrics/{name}?{query}&to={to}")
        assert found["range"]["resolution_seconds"] == resolution, found
        return found  # type: ignore[no-any-return]

    async def series(name: str, query: str) -> dict[str, Any]:
        found = await data(f"{base}/api/v1/metrics/{name}/series?{query}&to={to}")
        return {point["start"]: point["metric"] for point in found["points"]}

    # 1m: the whole last hour, and window by window.
    assert (await ranged("total_events", "from=-1h", 60))["value"] == want["total"], "1m range"
    assert (await ranged("unique_users", "from=-1h", 60))["value"] == want["users"], "1m users"
    histogram = await ranged("revenue_histogram", "from=-1h", 60)
    assert (histogram["count"], histogram["sum"]) == (want["purchases"], want["revenue"])
    assert (await ranged("revenue", "from=-1h", 60))["value"] == want["revenue"], "1m revenue"
    minutes = await series("total_events", "from=-1h&resolution=1m")
    assert {start: m["value"] for start, m in minutes.items()} == want["per_minute"], "1m series"
    # 1h: the series over the last three hours, summed.
    hours = await series("total_events", "from=-3h&resolution=1h")
    assert sum(m["value"] for m in hours.values()) == want["total"], "1h series"
    hours = await series("purchases", "from=-3h&resolution=1h")
    assert sum(m["value"] for m in hours.values()) == want["purchases"], "1h purchases"
    hours = await series("unique_users", "from=-3h&resolution=1h")
    assert max(m["value"] for m in hours.values()) <= want["users"]
    # The last two days: the range (the daemon picks 1h for it) and the 1d series.
    two_days = await data(f"{base}/api/v1/metrics/total_events?from=-2d&to={to}")
    assert two_days["value"] == want["total"], "2d range"
    days = await series("total_events", "from=-2d&resolution=1d")
    assert sum(m["value"] for m in days.values()) == want["total"], "1d series"
    days = await series("revenue_histogram", "from=-2d&resolution=1d")
    assert sum(m["count"] for m in days.values()) == want["purchases"], "1d histogram"
    assert sum(m["sum"] for m in days.values()) == want["revenue"], "1d histogram sum"
    day_users = await data(f"{base}/api/v1/metrics/unique_users?from=-2d&to={to}")
    assert day_users["value"] == want["users"], "2d users"
    # Pages over the last hour (1m windows): each request's marker once.
    pages = await data(f"{base}/api/v1/breakdown/page_views?from=-1h&to={to}&limit=1000")
    assert {item["value"]: item["count"] for item in pages["items"]} == want["pages"]


# -- the journal's files ------------------------------------------------------------------


def journal_segments(data_dir: Path) -> list[Path]:
    return sorted(data_dir.glob("nodes/*/journal/*.journal"))


def records_of(segment: Path) -> list[tuple[int, int, int]]:
    """``(offset, seq, total length)`` of each whole record in ``segment``."""
    raw = segment.read_bytes()
    found = []
    offset = 0
    while offset + RECORD_HEADER.size <= len(raw):
        magic, length, seq, _, _ = RECORD_HEADER.unpack_from(raw, offset)
        assert magic == RECORD_MAGIC, (segment, offset)
        size = RECORD_HEADER.size + length
        if offset + size > len(raw):
            break
        found.append((offset, seq, size))
        offset += size
    return found


def last_record(segment: Path) -> tuple[int, int, str | None]:
    """``(total length, events, the first event's page)`` of the last whole record of
    ``segment``: its payload is a MessagePack array of rows ``[id, type, timestamp,
    user_id, session_id, properties]`` (twisted_rta/journal/records.py)."""
    import msgspec

    offset, _, size = records_of(segment)[-1]
    payload = segment.read_bytes()[offset + RECORD_HEADER.size : offset + size]
    rows = msgspec.msgpack.decode(payload)
    page = rows[0][5].get("page") if isinstance(rows[0][5], dict) else None
    return size, len(rows), page
