"""End to end: a resent event (the same client-given id) is counted once (issue 16).

A real ``twistd rta`` with the journal on and the SQLite store in a temp data dir. Native
events with ``id`` and Segment messages with ``messageId``, resent in one life, after a
kill -9 (the ids back from the journal alone: the flush interval is long, so no checkpoint
was taken) and after a clean SIGTERM (back from the final checkpoint, the journal records
it covers skipped); and with ``dedup.enabled: false``, a resend counted again.

Counts are read once a sentinel event sent after the resends is counted: the intake queue
is in order, so a resend that had slipped through would be counted by then.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from tests.e2e.durability_helpers import (
    TIMEOUT,
    data,
    get,
    kill9,
    no_tracebacks,
    post,
    start_daemon,
    stop,
    write_config,
)
from tests.e2e.process import DaemonProcess, clean_exit, poll
from twisted_rta.ingest.dedup import SLICES

pytestmark = pytest.mark.e2e

# No flush (so no checkpoint) within a test: only a clean stop takes one.
LONG_FLUSH = "60s"
SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def config_for(tmp_path: Path, **dedup: Any) -> Path:
    return write_config(
        tmp_path,
        "rta",
        store={"data_dir": str(tmp_path / "data"), "node_id": "solo"},
        windows={"flush_interval": LONG_FLUSH},
        dedup=dedup,
    )


def native(event_id: str, kind: str = "signup") -> dict[str, Any]:
    return {"id": event_id, "type": kind, "user_id": "u1", "properties": {"plan": "pro"}}


def segment_track(message_id: str) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "userId": "u2",
        "event": "Order Completed",
        "properties": {"total": 30},
    }


async def accepted(base: str, path: str, payload: Any) -> Any:
    """POST ``payload``; it must be acknowledged (a resend is acknowledged like the rest)."""
    status, body, _ = await post(base + path, payload)
    assert status in (200, 202), (path, status, body)
    return body


async def metric(base: str, name: str) -> int:
    found = await data(f"{base}/api/v1/metrics/{quote(name, safe='')}")
    return int(found["value"])


class Reader:
    """Reads the query API's figures of one data dir, across the daemon's lives."""

    def __init__(self, types: list[str]) -> None:
        self.types = types
        self.sentinels = 0

    async def counted(self, base: str) -> dict[str, int]:
        """total_events and events_by_type:<type> once a new sentinel event (sent last,
        with a drawn id) is counted; the sentinels left out of the total."""
        self.sentinels += 1
        sentinel = f"sentinel-{self.sentinels}"
        await accepted(base, "/api/v1/events", {"type": sentinel})

        async def in_() -> bool:
            return await metric(base, f"events_by_type:{sentinel}") == 1

        await poll(lambda: Deferred.fromCoroutine(in_()), timeout=TIMEOUT)
        total = await metric(base, "total_events")
        stats = await data(base + "/api/v1/stats")
        assert stats["total_events"] == total, stats  # the aggregator itself agrees
        figures = {"total": total - self.sentinels}
        for kind in self.types:
            figures[kind] = await metric(base, f"events_by_type:{kind}")
        return figures


async def exposition(base: str) -> dict[tuple[str, str], float]:
    """/metrics as ``{(name, labels): value}``."""
    status, body, _ = await get(base + "/metrics")
    assert status == 200, (status, body)
    assert isinstance(body, str), body
    samples = {}
    for line in body.splitlines():
        found = SAMPLE.match(line)
        if found:
            samples[(found["name"], found["labels"] or "")] = float(found["value"])
    return samples


def deduplicated(samples: dict[tuple[str, str], float]) -> dict[str, float]:
    """rta_events_deduplicated_total per endpoint (the endpoints with any)."""
    found = {}
    for (name, labels), value in samples.items():
        if name == "rta_events_deduplicated_total" and value:
            endpoint = re.search(r'endpoint="([^"]*)"', labels)
            assert endpoint, labels
            found[endpoint[1]] = value
    return found


def recovered(daemon: DaemonProcess) -> dict[str, Any]:
    records = [r for r in daemon.records if str(r.get("message", "")).startswith("recovered")]
    assert len(records) == 1, daemon.output_text()
    return records[0]


@pytest_twisted.ensureDeferred
async def test_a_resent_id_is_counted_once_in_one_life_after_kill_9_and_after_sigterm(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path)
    reader = Reader(["signup", "Order Completed"])
    daemon, base = await start_daemon(tmp_path, config)
    try:
        # -- One life: native single, native batch, Segment.
        await accepted(base, "/api/v1/events", native("n-1"))
        answer = await accepted(base, "/api/v1/events", native("n-1"))
        assert answer["data"]["event_id"] == "n-1"  # acknowledged as if taken
        # A batch: n-1 again, n-2 twice within it, n-3 new; and drawn ids never checked.
        await accepted(
            base,
            "/api/v1/events/batch",
            [native("n-1"), native("n-2"), native("n-2"), native("n-3"), {"type": "signup"}],
        )
        await accepted(base, "/api/v1/events/batch", [{"type": "signup"}])
        await accepted(base, "/v1/track", segment_track("m-1"))
        await accepted(base, "/v1/track", segment_track("m-1"))
        # n-1, n-2, n-3, two drawn; m-1 once.
        assert await reader.counted(base) == {"total": 6, "signup": 5, "Order Completed": 1}
        samples = await exposition(base)
        assert deduplicated(samples) == {"single": 1, "batch": 2, "segment_track": 1}
        assert samples[("rta_dedup_ids", "")] == 4  # n-1, n-2, n-3, m-1
        assert samples[("rta_dedup_evicted_ids_total", "")] == 0

        # -- kill -9 right after the 202 of a new id (no flush, no checkpoint since start).
        await accepted(base, "/api/v1/events", native("k-1"))
        await kill9(daemon)
        daemon, base = await start_daemon(tmp_path, config)
        found = recovered(daemon)
        assert found["source"] == "no checkpoint" and found["records"] > 0, found
        for path, payload in [
            ("/api/v1/events", native("k-1")),
            ("/api/v1/events", native("n-1")),
            ("/api/v1/events/batch", [native("n-3"), native("k-1")]),
            ("/v1/track", segment_track("m-1")),
        ]:
            await accepted(base, path, payload)
        assert await reader.counted(base) == {"total": 7, "signup": 6, "Order Completed": 1}
        samples = await exposition(base)
        assert deduplicated(samples) == {"single": 2, "batch": 2, "segment_track": 1}
        assert samples[("rta_dedup_ids", "")] == 5

        # -- A clean stop: the final checkpoint holds the ids; the journal is not replayed.
        assert clean_exit(await daemon.terminate(timeout=TIMEOUT)), daemon.output_text()
        no_tracebacks(daemon)
        daemon, base = await start_daemon(tmp_path, config)
        found = recovered(daemon)
        assert found["source"].startswith("checkpoint") and found["records"] == 0, found
        await accepted(base, "/api/v1/events/batch", [native("n-2"), native("k-1")])
        await accepted(base, "/v1/track", segment_track("m-1"))
        await accepted(base, "/v1/track", segment_track("m-2"))  # new: counted
        assert await reader.counted(base) == {"total": 8, "signup": 6, "Order Completed": 2}
        samples = await exposition(base)
        assert deduplicated(samples) == {"batch": 2, "segment_track": 1}
        assert samples[("rta_dedup_ids", "")] == 6
        # The oldest slice's start: up to a slice (an hour of the default 24h) before the id.
        assert 0 < samples[("rta_dedup_oldest_id_seconds", "")] < 86_400 / SLICES + TIMEOUT
        assert clean_exit(await daemon.terminate(timeout=TIMEOUT)), daemon.output_text()
        no_tracebacks(daemon)
    finally:
        await stop(daemon)


@pytest_twisted.ensureDeferred
async def test_with_dedup_disabled_a_resend_is_counted_again(tmp_path: Path) -> None:
    config = config_for(tmp_path, enabled=False)
    daemon, base = await start_daemon(tmp_path, config)
    try:
        await accepted(base, "/api/v1/events", native("n-1"))
        await accepted(base, "/api/v1/events", native("n-1"))
        await accepted(base, "/api/v1/events/batch", [native("n-1"), native("n-1")])
        await accepted(base, "/v1/track", segment_track("m-1"))
        await accepted(base, "/v1/track", segment_track("m-1"))
        figures = await Reader(["signup", "Order Completed"]).counted(base)
        assert figures == {"total": 6, "signup": 4, "Order Completed": 2}
        samples = await exposition(base)
        assert deduplicated(samples) == {}
        assert not any(name.startswith("rta_dedup_") for name, _ in samples), samples
        assert clean_exit(await daemon.terminate(timeout=TIMEOUT)), daemon.output_text()
        no_tracebacks(daemon)
    finally:
        await stop(daemon)
