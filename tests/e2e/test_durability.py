"""End to end: kill -9 loses no acknowledged event and counts none twice (issue 12).

Real ``twistd rta`` processes on real files and a real PostgreSQL; SIGKILL at chosen
moments, a torn journal tail, a store outage longer than the journal's bound, two nodes
answering the same numbers. See ``durability_helpers`` for the ledger of what was
acknowledged and the figures every query must answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.threads import deferToThread

from tests.e2e.durability_helpers import (
    FLUSH,
    MARKER,
    TIMEOUT,
    Ledger,
    Request,
    check_counts,
    data,
    future_instant,
    get,
    journal_segments,
    journal_stats,
    kill9,
    last_record,
    make_request,
    no_tracebacks,
    post,
    records_of,
    start_daemon,
    stop,
    wait_all_stored,
    wait_applied,
    wait_checkpoint_after,
    write_config,
)
from tests.e2e.process import clean_exit, poll
from tests.postgres import POSTGRES_ADMIN_URL, admin, postgres_database

pytestmark = pytest.mark.e2e

# Single events and batches: 20 requests, 346 events.
SIZES = [1, 40, 1, 1, 75, 1, 20, 1, 1, 60, 1, 30, 1, 1, 50, 1, 25, 1, 1, 33]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The store section: the default SQLite file in data_dir, or a throwaway PostgreSQL
    database (with the journal still in data_dir)."""
    section: dict[str, Any] = {"data_dir": str(tmp_path / "data"), "node_id": "solo"}
    if request.param == "postgresql":
        section["url"] = request.getfixturevalue("postgres_url")
    return section


def requests_for(now: float, sizes: list[int] = SIZES) -> list[Request]:
    return [make_request(size, now=now) for size in sizes]


def first_of(deferreds: list[Deferred[int]], count: int) -> Deferred[None]:
    """Fires once ``count`` of ``deferreds`` have fired (bounded by the caller)."""
    done: Deferred[None] = Deferred()
    fired = [0]

    def one(result: object) -> object:
        fired[0] += 1
        if fired[0] == count and not done.called:
            done.callback(None)
        return result

    for deferred in deferreds:
        deferred.addBoth(one)
    return done


async def post_then_kill(moment: str, daemon: Any, base: str, ledger: Ledger, now: float) -> None:
    """Post every request, SIGKILL at ``moment``."""
    requests = requests_for(now)
    if moment == "right_after_a_202":
        await ledger.send_all(base, requests)
        await kill9(daemon)
    elif moment == "while_posting":
        half = len(requests) // 2
        await ledger.send_all(base, requests[:half])
        in_flight = ledger.send_concurrently(base, requests[half:])
        # Killed at the first answer: the others are on the wire, being journalled or
        # answered (some are counted without their 202 arriving: resolved by marker).
        await first_of(in_flight, 1).addTimeout(TIMEOUT, reactor)
        await kill9(daemon)
        statuses = await DeferredList(in_flight).addTimeout(TIMEOUT, reactor)
        assert all(ok and status in (202, -1) for ok, status in statuses), statuses
    elif moment == "right_after_a_flush":
        await ledger.send_all(base, requests)
        await wait_applied(base, ledger.acknowledged)
        await wait_checkpoint_after(base, time.time())
        await kill9(daemon)
    else:
        raise AssertionError(moment)


async def recovered(daemon: Any, base: str, ledger: Ledger, to: str) -> None:
    """After a restart: each request counted once (those cut by the kill at most once),
    totals right at once, and every figure of every resolution right once stored."""
    await ledger.resolve(base)
    events = ledger.events()
    assert (await data(base + "/api/v1/stats"))["total_events"] == len(events)
    assert any(m.startswith("recovered node") for m in daemon.messages()), daemon.output_text()
    await check_counts(base, events, to)  # live state, pending windows and stored rows
    await wait_all_stored(base)
    await check_counts(base, events, to)  # everything from the store


@pytest.mark.parametrize("moment", ["right_after_a_202", "while_posting", "right_after_a_flush"])
@pytest_twisted.ensureDeferred
async def test_kill_9_once_loses_nothing_and_doubles_nothing(
    tmp_path: Path, store: dict[str, Any], moment: str
) -> None:
    config = write_config(tmp_path, "rta", store=store)
    now = time.time()
    to = future_instant(now)
    ledger = Ledger()
    daemon, base = await start_daemon(tmp_path, config)
    try:
        await post_then_kill(moment, daemon, base, ledger, now)
        assert ledger.acknowledged > 0
        daemon, base = await start_daemon(tmp_path, config)
        await recovered(daemon, base, ledger, to)
        reason = await daemon.terminate(timeout=TIMEOUT)
        assert clean_exit(reason), daemon.output_text()
        no_tracebacks(daemon)
    finally:
        await stop(daemon)


@pytest_twisted.ensureDeferred
async def test_kill_9_twice_in_a_row(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, "rta", store={"data_dir": str(tmp_path / "data"), "node_id": "solo"}
    )
    now = time.time()
    to = future_instant(now)
    ledger = Ledger()
    daemon, base = await start_daemon(tmp_path, config)
    try:
        await post_then_kill("right_after_a_flush", daemon, base, ledger, now)
        # The second life: recovered windows not yet written, the journal not yet released.
        daemon, base = await start_daemon(tmp_path, config)
        await post_then_kill("while_posting", daemon, base, ledger, time.time())
        daemon, base = await start_daemon(tmp_path, config)
        await recovered(daemon, base, ledger, to)
        # And once more, right after the first 202 of a fresh life.
        await post_then_kill("right_after_a_202", daemon, base, ledger, time.time())
        daemon, base = await start_daemon(tmp_path, config)
        await recovered(daemon, base, ledger, to)
        assert clean_exit(await daemon.terminate(timeout=TIMEOUT)), daemon.output_text()
    finally:
        await stop(daemon)


def cut_last_record(data_dir: Path, expected_page: str, cut: int) -> tuple[int, int]:
    """Cut ``cut`` bytes off the newest journal segment, inside its last record (which
    must be the request with ``expected_page``); returns that record's size in bytes and
    its event count."""
    segments = [path for path in journal_segments(data_dir) if path.stat().st_size]
    assert segments, list(data_dir.rglob("*"))
    newest = segments[-1]
    size, events, page = last_record(newest)
    assert page == expected_page, (page, expected_page, records_of(newest)[-3:])
    assert cut < size
    with newest.open("r+b") as file:
        file.truncate(newest.stat().st_size - cut)
    return size, events


@pytest_twisted.ensureDeferred
async def test_a_torn_journal_tail_is_cut_and_everything_before_it_counted(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    config = write_config(tmp_path, "rta", store={"data_dir": str(data_dir), "node_id": "solo"})
    now = time.time()
    to = future_instant(now)
    ledger = Ledger()
    daemon, base = await start_daemon(tmp_path, config)
    try:
        await post_then_kill("right_after_a_202", daemon, base, ledger, now)
        last = ledger.certain[-1]
        size, events = cut_last_record(data_dir, f"{MARKER}{last.number}", cut=5)
        assert events == len(last.events)
        # The torn record was acknowledged, but a torn tail is what power loss leaves: it
        # counts unless a checkpoint taken before the kill already held it.
        ledger.certain.remove(last)
        ledger.uncertain.append(last)

        daemon, base = await start_daemon(tmp_path, config)
        cuts = [m for m in daemon.messages() if "bytes of a torn tail" in m]
        # What is left of the record is cut: its size less the 5 bytes already gone.
        assert len(cuts) == 1 and cuts[0].startswith(f"journal: cut {size - 5} bytes"), cuts
        await recovered(daemon, base, ledger, to)
        total = ledger.acknowledged
        assert total in (
            sum(SIZES),
            sum(SIZES) - len(last.events),
        ), total
        assert clean_exit(await daemon.terminate(timeout=TIMEOUT)), daemon.output_text()
    finally:
        await stop(daemon)


@pytest_twisted.ensureDeferred
async def test_events_after_a_torn_tail_that_a_checkpoint_holds_survive_the_next_kill(
    tmp_path: Path,
) -> None:
    """Power loss can leave the newest checkpoint (fsynced) holding a record the journal
    lost (fsync every 200ms): the torn tail is cut below the checkpoint's position. The next
    records must still be replayed after the next kill."""
    data_dir = tmp_path / "data"
    config = write_config(
        tmp_path,
        "rta",
        store={"data_dir": str(data_dir), "node_id": "solo"},
        # Two seconds between checkpoints: room to kill after one and before the next,
        # which would release the record from the journal.
        windows={"flush_interval": "2s"},
    )
    now = time.time()
    to = future_instant(now)
    ledger = Ledger()
    daemon, base = await start_daemon(tmp_path, config)
    try:
        await ledger.send_all(base, requests_for(now))
        await wait_applied(base, ledger.acknowledged)
        await wait_checkpoint_after(base, time.time())  # it holds every record
        await kill9(daemon)
        last = ledger.certain[-1]
        cut_last_record(data_dir, f"{MARKER}{last.number}", cut=5)

        daemon, base = await start_daemon(tmp_path, config)
        assert [m for m in daemon.messages() if "bytes of a torn tail" in m], daemon.messages()
        # The checkpoint held the torn record: it is counted, once.
        assert (await data(base + "/api/v1/stats"))["total_events"] == ledger.acknowledged
        fresh = make_request(12, now=time.time())
        await ledger.send_all(base, [fresh])
        await kill9(daemon)

        daemon, base = await start_daemon(tmp_path, config)
        pages = await data(base + "/api/v1/breakdown/page_views?limit=1000")
        counted = {item["value"]: item["count"] for item in pages["items"]}
        assert counted.get(f"{MARKER}{fresh.number}") == 1, (
            "an event answered 202 after the restart was lost by the next kill -9",
            [m for m in daemon.messages() if "journal" in m or "recovered" in m],
        )
        await recovered(daemon, base, ledger, to)
        assert clean_exit(await daemon.terminate(timeout=TIMEOUT)), daemon.output_text()
    finally:
        await stop(daemon)


def _terminate_backends(database: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as connection:
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )


async def outage(database: str, *, on: bool) -> None:
    allow = "false" if on else "true"
    await deferToThread(admin, f"ALTER DATABASE {{}} WITH ALLOW_CONNECTIONS {allow}", database)
    if on:
        await deferToThread(_terminate_backends, database)


@pytest_twisted.ensureDeferred
async def test_an_outage_longer_than_the_journal_bound_refuses_then_loses_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    config = write_config(
        tmp_path,
        "rta",
        store={
            "url": postgres_url,
            "data_dir": str(tmp_path / "data"),
            "node_id": "solo",
            "retry_initial": "100ms",
            "retry_max": "500ms",
        },
        journal={"max_bytes": "1MiB", "segment_bytes": "64KiB"},
    )
    now = time.time()
    to = future_instant(now)
    ledger = Ledger()
    daemon, base = await start_daemon(tmp_path, config)
    in_outage = False
    try:
        await ledger.send_all(base, requests_for(now, [1, 30, 1, 20]))
        await outage(database, on=True)
        in_outage = True
        # Fill the journal: batches of 1000 events until one is refused, then smaller ones,
        # down to single events (a smaller record may still fit).
        refused: tuple[int, Any, dict[str, str]] | None = None
        for size in (1000, 100, 10, 1):
            for _ in range(2000):
                request = make_request(size, now=now)
                status, body, headers = await post(base + request.path, request.payload)
                if status != 202:
                    refused = (status, body, headers)
                    break
                ledger.certain.append(request)
            assert refused is not None, f"the journal never refused a request of {size} events"
            status, body, headers = refused
            assert status == 503 and body["code"] == "journal_full", refused
            assert int(headers["retry-after"]) > 0, headers
        single = make_request(1, now=now)

        journal = await journal_stats(base)
        assert journal["max_bytes"] == 1 << 20
        assert journal["bytes"] > 0.9 * journal["max_bytes"], journal
        assert journal["oldest_unstored_seconds"] > 0, journal
        status, ready, _ = await get(base + "/ready")
        assert status == 503, ready
        assert ready["checks"]["journal"]["status"] == "failing", ready["checks"]
        status, exposition, _ = await get(base + "/metrics")
        assert status == 200 and "rta_journal_bytes" in exposition

        await kill9(daemon)
        # Restarted while the store still refuses: recovered from the checkpoint and the
        # journal alone, still full.
        daemon, base = await start_daemon(tmp_path, config, ready=False)
        assert (await data(base + "/api/v1/stats"))["total_events"] == ledger.acknowledged
        status, body, _ = await post(base + single.path, single.payload)
        assert status == 503 and body["code"] == "journal_full", body

        await outage(database, on=False)
        in_outage = False

        async def ready() -> bool:
            return (await get(base + "/ready"))[0] == 200

        await poll(ready, timeout=TIMEOUT)
        await recovered(daemon, base, ledger, to)
        # Room again: new events are taken and counted.
        await ledger.send_all(base, requests_for(time.time(), [1, 40]))
        await wait_applied(base, ledger.acknowledged)
        await recovered(daemon, base, ledger, to)
        assert clean_exit(await daemon.terminate(timeout=TIMEOUT)), daemon.output_text()
    finally:
        if in_outage:
            await outage(database, on=False)
        await stop(daemon)


@pytest_twisted.ensureDeferred
async def test_two_nodes_on_one_postgresql_answer_the_same_open_windows(
    tmp_path: Path, postgres_url: str
) -> None:
    def node(name: str) -> Path:
        return write_config(
            tmp_path, name, store={"url": postgres_url, "data_dir": str(tmp_path / name)}
        )

    now = time.time()
    to = future_instant(now)
    ledger = Ledger()
    a, base_a = await start_daemon(tmp_path, node("a"), "--node-id", "a")
    b, base_b = await start_daemon(tmp_path, node("b"), "--node-id", "b")
    try:
        # Current time: the events stay in the open windows of every resolution.
        for index, request in enumerate(
            make_request(size, now=now, spread=3.0) for size in SIZES[:10]
        ):
            await ledger.send_all(base_a if index % 2 else base_b, [request])
        sent = time.time()
        for base in (base_a, base_b):
            await wait_checkpoint_after(base, sent + 2 * FLUSH)

        questions = [
            "/api/v1/metrics",
            f"/api/v1/metrics/total_events?from=-10m&to={to}",
            f"/api/v1/metrics/total_events/series?from=-10m&to={to}&resolution=1m",
            f"/api/v1/metrics/unique_users?from=-10m&to={to}",
            f"/api/v1/metrics/revenue_histogram?from=-10m&to={to}",
            f"/api/v1/breakdown/page_views?from=-10m&to={to}&limit=1000",
        ]
        answers = []
        for base in (base_a, base_b):
            answers.append([await data(base + question) for question in questions])
        for node_answers in answers:
            metrics, over_range, series, users, histogram, pages = node_answers
            want = ledger.events()
            assert metrics["total_events"]["value"] == len(want)
            assert over_range["value"] == len(want)
            assert sum(p["metric"]["value"] for p in series["points"]) == len(want)
            assert users["value"] == len({e["user_id"] for e in want})
            purchases = [e for e in want if e["type"] == "purchase"]
            assert histogram["count"] == len(purchases)
            assert pages["total"] == sum(1 for e in want if e["type"] == "pageview")
        # The same numbers from both (updated_at and quantile sketches aside).
        assert _numbers(answers[0]) == _numbers(answers[1])
        await check_counts(base_a, ledger.events(), to)
        await check_counts(base_b, ledger.events(), to)
        reasons = [await a.terminate(timeout=TIMEOUT), await b.terminate(timeout=TIMEOUT)]
        assert all(clean_exit(reason) for reason in reasons), a.output_text() + b.output_text()
    finally:
        await stop(a)
        await stop(b)


def _numbers(value: Any) -> Any:
    """``value`` without the fields that legitimately differ between nodes' views."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items() if k not in ("updated_at",)}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value
