"""Exactly once across a crash at any step: the real composition root, the real journal and
checkpoint files in a temporary directory, a store shared across "processes" (the memory
store's dicts), a clock that only moves forward. A crash abandons the daemon where it stands
(its journal and checkpoint files stay as written) and a new one starts on the same
directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.testing import MemoryReactorClock

from tests.helpers import NOW, HttpClient, site_of
from twisted_rta.config import config_from_mapping
from twisted_rta.service import RTAService
from twisted_rta.store.interface import FlushBatch
from twisted_rta.store.memory import MemoryWindowStore
from twisted_rta.wiring import build_daemon

MINUTE = NOW - NOW % 60
FLUSH = 5.0
FROM, TO = "2026-11-27T02:00:00Z", "2026-11-27T05:00:00Z"  # every window the test touches


def inline(work: Callable[[], Any]) -> Deferred[Any]:
    return maybeDeferred(work)


@attrs.define
class Database:
    """What outlives a process: the shared store, and the test's clock."""

    rows: dict[Any, Any] = attrs.Factory(dict)
    marks: dict[str, int] = attrs.Factory(dict)
    publications: dict[str, Any] = attrs.Factory(dict)
    now: float = NOW
    hold_writes: str | None = None  # "before" or "after" the write is applied


class Store(MemoryWindowStore):
    def __init__(self, database: Database) -> None:
        super().__init__(
            node_id="n",
            rows=database.rows,
            marks=database.marks,
            publications=database.publications,
        )
        self.database = database

    def write(self, batch: FlushBatch) -> Deferred[int]:
        hold = self.database.hold_writes
        if hold == "before":
            return Deferred()  # the transaction is in flight when the process dies
        written = super().write(batch)
        return Deferred() if hold == "after" else written  # committed, never acknowledged


@attrs.define
class Process:
    reactor: MemoryReactorClock
    service: RTAService
    http: HttpClient
    database: Database

    def advance(self, seconds: float) -> None:
        self.reactor.advance(seconds)
        self.database.now = self.reactor.seconds()

    def settle(self) -> None:
        for _ in range(5):
            self.advance(0)

    def crash(self) -> None:
        """kill -9: nothing more runs; the node's directory lock dies with the process."""
        durability = self.service.durability
        assert durability is not None
        durability.node.release()


def boot(tmp_path: Path, database: Database, **journal: Any) -> Process:
    config = config_from_mapping(
        {
            "server": {"listen": ["tcp:0:interface=127.0.0.1"]},
            "store": {"url": "memory:", "node_id": "n", "data_dir": str(tmp_path)},
            "journal": journal,
            "windows": {"flush_interval": FLUSH, "grace": 10},
        }
    )
    reactor = MemoryReactorClock()
    reactor.advance(database.now)
    daemon = build_daemon(
        config, reactor, log_observer=None, store=Store(database), run_in_thread=inline
    )
    service = daemon.service
    service.privilegedStartService()
    service.startService()
    process = Process(
        reactor, service, HttpClient(site_of(service.listeners[0].factory).resource), database
    )
    process.settle()
    return process


def events(step: int) -> list[dict[str, Any]]:
    """A batch of a step: minutes back from now, so windows close as the clock moves."""
    return [
        {
            "type": "purchase" if i % 3 == 0 else "pageview",
            "user_id": f"u{(step * 7 + i) % 40}",
            "timestamp": (MINUTE - 60 * (i % 4) + step + 1) * 1000,
            "properties": {"amount": 2.5} if i % 3 == 0 else {"page": f"/p{i % 5}"},
        }
        for i in range(12)
    ]


def figures(process: Process) -> dict[str, Any]:
    http = process.http

    def value(path: str) -> Any:
        reply = http.get(path)
        assert reply.status == 200, (path, reply.body)
        return reply.json["data"]

    ranged = f"from={FROM}&to={TO}"
    return {
        "total": value("/api/v1/metrics/total_events")["value"],
        "revenue": value("/api/v1/metrics/revenue")["value"],
        "users": value("/api/v1/metrics/unique_users")["value"],
        "minutes": value(f"/api/v1/metrics/total_events?{ranged}")["value"],
        "hours": sum(
            point["metric"]["value"]
            for point in value(f"/api/v1/metrics/total_events/series?{ranged}&resolution=1h")[
                "points"
            ]
        ),
        "days": sum(
            point["metric"]["value"]
            for point in value(
                "/api/v1/metrics/total_events/series?from=2026-11-26T00:00:00Z"
                f"&to={TO}&resolution=1d"
            )["points"]
        ),
        "revenue_minutes": value(f"/api/v1/metrics/revenue?{ranged}")["value"],
    }


def expected(sent: list[dict[str, Any]]) -> dict[str, Any]:
    revenue = sum(event["properties"].get("amount", 0) for event in sent)
    total = len(sent)
    return {
        "total": total,
        "revenue": revenue,
        "users": len({event["user_id"] for event in sent}),
        "minutes": total,
        "hours": total,
        "days": total,
        "revenue_minutes": revenue,
    }


STEPS = 8  # each step: post a batch, let the workers apply it, one flush tick


def run_steps(process: Process, sent: list[dict[str, Any]], first: int, last: int) -> None:
    for step in range(first, last):
        batch = events(step)
        reply = process.http.post("/api/v1/events/batch", batch)
        assert reply.status == 202, reply.body
        sent.extend(batch)
        process.settle()
        if step % 2:
            process.advance(FLUSH)
            process.settle()


@pytest.mark.parametrize("crash_after", range(STEPS + 1))
def test_a_crash_after_any_step_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, crash_after: int
) -> None:
    database = Database()
    sent: list[dict[str, Any]] = []
    first = boot(tmp_path, database)
    run_steps(first, sent, 0, crash_after)
    first.crash()
    second = boot(tmp_path, database)
    run_steps(second, sent, crash_after, STEPS)
    for _ in range(20):  # every minute window closes and is written
        second.advance(FLUSH)
        second.settle()
    assert figures(second) == expected(sent)


@pytest.mark.parametrize("hold", ["before", "after"])
def test_a_crash_during_the_store_transaction_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, hold: str
) -> None:
    database = Database()
    sent: list[dict[str, Any]] = []
    first = boot(tmp_path, database)
    run_steps(first, sent, 0, 4)
    for _ in range(11):  # to NOW + 65: the tick at NOW + 70 closes the current minute
        first.advance(FLUSH)
        first.settle()
    database.hold_writes = hold  # and that write, with the minute in it, is in flight
    first.advance(FLUSH)
    first.settle()
    first.crash()
    database.hold_writes = None
    second = boot(tmp_path, database)
    # At once, before any flush: the recovered windows the store already took (committed,
    # never acknowledged) are not counted a second time from the pending list.
    assert figures(second) == expected(sent)
    run_steps(second, sent, 4, STEPS)
    for _ in range(20):
        second.advance(FLUSH)
        second.settle()
    assert figures(second) == expected(sent)


def test_two_crashes_in_a_row_and_a_clean_stop(tmp_path: Path) -> None:
    database = Database()
    sent: list[dict[str, Any]] = []
    process = boot(tmp_path, database)
    run_steps(process, sent, 0, 3)
    process.crash()
    process = boot(tmp_path, database)
    run_steps(process, sent, 3, 5)
    process.crash()
    process = boot(tmp_path, database)
    run_steps(process, sent, 5, STEPS)
    stopping = process.service.stopService()
    process.settle()
    assert stopping.called
    process = boot(tmp_path, database)
    process.advance(FLUSH)
    process.settle()
    assert figures(process) == expected(sent)


def test_the_always_policy_answers_after_the_fsync(tmp_path: Path) -> None:
    database = Database()
    process = boot(tmp_path, database, fsync="always")
    reply = process.http.post("/api/v1/events", {"type": "pageview", "user_id": "u"})
    assert reply.status == 202  # the inline "thread" fsyncs at once
    journal = process.service.durability.journal  # type: ignore[union-attr]
    assert journal.synced_seq == journal.last_seq == 1
