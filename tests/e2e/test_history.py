"""End to end: history survives a restart, nodes share one PostgreSQL, a failing store
loses nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import yaml
from twisted.internet.threads import deferToThread

from tests.e2e.process import clean_exit, poll
from tests.e2e.test_daemon import TIMEOUT, get_json, post_json, start
from tests.postgres import admin, postgres_database

pytestmark = pytest.mark.e2e


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from postgres_database()


def write_config(tmp_path: Path, name: str, **sections: Any) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sections))
    return str(path)


def mixed_events(count: int, *, user_offset: int = 0, now: float) -> list[dict[str, Any]]:
    """Pageviews, clicks and purchases over the last two hours (real time: a real process)."""
    events = []
    for i in range(count):
        ts = (now - (i % 7) * 1200 - 30) * 1000  # spread over 7 twenty-minute steps
        user = f"u{user_offset + i % 60}"
        kind = i % 10
        if kind < 7:
            events.append(
                {
                    "type": "pageview",
                    "user_id": user,
                    "session_id": f"s{i % 13}",
                    "timestamp": ts,
                    "properties": {"page": f"/p{i % 9}"},
                }
            )
        elif kind < 9:
            events.append(
                {
                    "type": "click",
                    "user_id": user,
                    "timestamp": ts,
                    "properties": {"element": f"e{i % 4}"},
                }
            )
        else:
            events.append(
                {
                    "type": "purchase",
                    "user_id": user,
                    "timestamp": ts,
                    "properties": {"amount": float(i % 50) + 0.5},
                }
            )
    return events


QUERIES = [
    "/api/v1/metrics",
    "/api/v1/metrics/unique_users?from=-3h",
    "/api/v1/metrics/revenue_histogram?from=-3h",
    "/api/v1/metrics/pageviews/series?from=-3h",
    "/api/v1/metrics/unique_users/series?from=-3h&resolution=1h",
    "/api/v1/breakdown/page_views?limit=5",
    "/api/v1/breakdown/clicks?from=-3h",
]


async def answers(base: str, frozen_to: str) -> dict[str, Any]:
    """Every query's data, with ranges pinned to one instant so both runs ask the same."""
    result = {}
    for path in QUERIES:
        url = base + path + (f"&to={frozen_to}" if "from=" in path else "")
        status, body = await get_json(url)
        assert status == 200, (url, body)
        result[path] = body["data"]
    return result


async def wait_counted(base: str, total: int) -> None:
    async def counted() -> bool:
        _, body = await get_json(base + "/api/v1/metrics/total_events")
        return bool(body.get("data", {}).get("value") == total)

    await poll(counted, timeout=TIMEOUT)


@pytest_twisted.ensureDeferred
async def test_restart_on_the_same_sqlite_file_answers_identically(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, "rta", store={"data_dir": str(tmp_path / "data"), "node_id": "solo"}
    )
    now = time.time()
    frozen_to = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 120))
    daemon, base = await start(tmp_path, "-c", config)
    try:
        events = mixed_events(600, now=now)
        for offset in range(0, len(events), 200):
            status, _ = await post_json(
                base + "/api/v1/events/batch", events[offset : offset + 200]
            )
            assert status == 202
        await wait_counted(base, 600)
        before = await answers(base, frozen_to)
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()
    assert (tmp_path / "data" / "rta.sqlite3").exists()

    daemon, base = await start(tmp_path, "-c", config)
    try:
        after = await answers(base, frozen_to)
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()
    for path in QUERIES:
        assert after[path] == before[path], path
    assert before["/api/v1/metrics"]["total_events"]["value"] == 600


@pytest_twisted.ensureDeferred
async def test_two_nodes_on_one_postgresql_answer_the_merged_truth(
    tmp_path: Path, postgres_url: str
) -> None:
    def node_config(name: str) -> str:
        return write_config(
            tmp_path,
            name,
            store={"url": postgres_url, "node_id": name},
            windows={"flush_interval": "200ms"},
        )

    now = time.time()
    a, base_a = await start(tmp_path, "-c", node_config("a"))
    b, base_b = await start(tmp_path, "-c", node_config("b"))
    try:
        # Users u0..u59 reach node a, u30..u89 node b: 90 distinct users in all.
        await post_json(base_a + "/api/v1/events/batch", mixed_events(300, now=now))
        await post_json(base_b + "/api/v1/events/batch", mixed_events(200, user_offset=30, now=now))
        for base in (base_a, base_b):
            await wait_counted(base, 500)
        for base in (base_a, base_b):
            _, body = await get_json(base + "/api/v1/metrics")
            metrics = body["data"]
            assert metrics["pageviews"]["value"] == 210 + 140
            assert metrics["purchases"]["value"] == 30 + 20
            assert abs(metrics["unique_users"]["value"] - 90) <= 2  # HLL; seen twice, once
            _, body = await get_json(base + "/api/v1/breakdown/clicks")
            assert body["data"]["total"] == 60 + 40
    finally:
        reasons = [await a.terminate(), await b.terminate()]
    assert all(clean_exit(reason) for reason in reasons), a.output_text() + b.output_text()

    # Both final flushes wrote their windows: a third node sees the merged history.
    c, base_c = await start(tmp_path, "-c", node_config("c"))
    try:
        _, body = await get_json(base_c + "/api/v1/metrics/total_events?from=-3h")
        assert body["data"]["value"] == 500
        _, body = await get_json(base_c + "/api/v1/metrics/unique_users?from=-3h")
        assert abs(body["data"]["value"] - 90) <= 2
    finally:
        assert clean_exit(await c.terminate())


@pytest_twisted.ensureDeferred
async def test_store_outage_loses_nothing_and_ready_recovers(
    tmp_path: Path, postgres_url: str
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    config = write_config(
        tmp_path,
        "rta",
        store={"url": postgres_url, "node_id": "n", "retry_initial": "100ms", "retry_max": "500ms"},
        windows={
            "flush_interval": "100ms",
            "grace": "0s",
            "resolutions": [{"size": "1s", "retention": "1d"}, {"size": "1m", "retention": "2d"}],
        },
    )
    daemon, base = await start(tmp_path, "-c", config)
    try:
        await deferToThread(admin, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", database)
        await deferToThread(_terminate, database)  # the daemon's connections die now

        async def not_ready() -> bool:
            status, _ = await get_json(base + "/ready")
            return status == 503

        sent = 0
        while not await not_ready():
            status, body = await post_json(
                base + "/api/v1/events",
                {"type": "pageview", "user_id": f"u{sent}", "properties": {"page": "/outage"}},
            )
            assert status == 202, body
            sent += 1
            if sent > 2000:
                pytest.fail("the daemon never noticed the store outage")
        for i in range(50):  # keep ingesting while the store is down
            status, _ = await post_json(
                base + "/api/v1/events",
                {"type": "pageview", "user_id": f"w{i}", "properties": {"page": "/outage"}},
            )
            assert status == 202
            sent += 1
        _, ready = await get_json(base + "/ready")
        assert ready["checks"]["store"] != "ok"

        await deferToThread(admin, "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", database)

        async def ready_again() -> bool:
            status, _ = await get_json(base + "/ready")
            return status == 200

        await poll(ready_again, timeout=TIMEOUT)
        await wait_counted(base, sent)

        async def history_complete() -> bool:
            _, body = await get_json(base + "/api/v1/metrics/pageviews?from=-10m")
            return bool(body.get("data", {}).get("value") == sent)

        await poll(history_complete, timeout=TIMEOUT)
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()
    messages = daemon.messages()
    assert any(m.startswith("store write failed") for m in messages)
    assert any(m.startswith("store writes recovered") for m in messages)
    rows = await deferToThread(_sum_rows, postgres_url, "pageviews", 1)
    assert rows == sent  # every accepted event written exactly once at the 1s resolution


def _terminate(database: str) -> None:
    import psycopg

    from tests.postgres import POSTGRES_ADMIN_URL

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )


def _sum_rows(url: str, metric: str, resolution: int) -> int:
    import psycopg

    from twisted_rta.aggregation.metrics import metric_from_bytes

    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT kind, state FROM rta_metric_windows WHERE metric = %s AND resolution = %s",
            (metric, resolution),
        ).fetchall()
    return sum(metric_from_bytes(kind, bytes(state)).count for kind, state in rows)
