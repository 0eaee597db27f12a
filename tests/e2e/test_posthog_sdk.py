"""PostHog's own Python SDK (posthog 7) against a real ``twistd rta``: the one setting changed
is the host; its project key is one of our ingest keys. The SDK's calls block, so they run
in a thread, each bounded by ``addTimeout``. What the SDK sent and what the daemon answered
is recorded by wrapping ``posthog.request.post``, the one function every upload goes through
(``batch_post`` for the sync and the queued paths alike): it changes nothing it passes on."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import posthog.request
import pytest
import pytest_twisted
import treq
import yaml
from posthog import Posthog
from twisted.internet import reactor

from tests.e2e.process import clean_exit, in_thread, poll
from tests.e2e.test_daemon import TIMEOUT, start

pytestmark = pytest.mark.e2e
PROJECT_KEY = "posthog-sdk-project-key-0123456789"
ADMIN_KEY = "posthog-sdk-admin-key-0123456789"
READ_KEY = "posthog-sdk-read-key-0123456789"


def recording_uploads(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every upload the SDK makes, as sent and as answered, in order."""
    real_post = posthog.request.post
    sent: list[dict[str, Any]] = []

    def post(*args: Any, **kwargs: Any) -> Any:
        # batch_post calls post(api_key, host, path, gzip, timeout, batch=..., ...).
        batch = kwargs.get("batch", [])
        response = real_post(*args, **kwargs)
        sent.append(
            {
                "path": args[2],
                "gzip": args[3],
                "events": [message.get("event") for message in batch],
                "historical_migration": kwargs.get("historical_migration"),
                "status": response.status_code,
                "answer": response.text,
            }
        )
        return response

    monkeypatch.setattr(posthog.request, "post", post)
    return sent


def client(key: str, base: str, errors: list[Any], **options: Any) -> Posthog:
    """A client that makes no call but uploads: no feature flags (no personal key), no
    exception autocapture, no retries (a refusal is reported at once, through on_error)."""
    return Posthog(
        key,
        host=base,
        max_retries=0,
        timeout=TIMEOUT,
        on_error=lambda error, batch: errors.append(error),
        **options,
    )


@pytest_twisted.ensureDeferred
async def test_the_posthog_sdk_is_counted_through_the_query_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "rta.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "store": {"url": "memory:"},
                "auth": {
                    "keys": [
                        {"name": "app", "key": PROJECT_KEY, "scopes": ["ingest"]},
                        {"name": "importer", "key": ADMIN_KEY, "scopes": ["admin"]},
                        {"name": "reader", "key": READ_KEY, "scopes": ["read"]},
                    ]
                },
            }
        )
    )
    uploads = recording_uploads(monkeypatch)
    daemon, base = await start(tmp_path, "-c", str(config))
    errors: list[Any] = []
    refused: list[Any] = []
    try:
        # sync_mode: every call is its own POST /batch/ of one event (gzip here).
        sync = client(PROJECT_KEY, base, errors, sync_mode=True, gzip=True)
        await in_thread(
            lambda: sync.capture("signed_up", distinct_id="u1", properties={"plan": "pro"})
        )
        pageview = {"$current_url": "https://shop.example/pricing?ref=ad", "$session_id": "s1"}
        await in_thread(lambda: sync.capture("$pageview", distinct_id="u1", properties=pageview))
        # posthog 7 has no identify(): set() is its "$set" event; alias, group_identify.
        await in_thread(lambda: sync.set(distinct_id="u1", properties={"email": "u1@e.com"}))
        await in_thread(lambda: sync.alias(previous_id="anonymous-1", distinct_id="u1"))
        await in_thread(lambda: sync.group_identify("company", "acme", {"name": "Acme"}))
        # A retry: the same uuid sent twice is acknowledged twice and counted once.
        paid = str(uuid.uuid4())
        for _ in range(2):
            await in_thread(lambda: sync.capture("paid", distinct_id="u1", uuid=paid))
        await in_thread(sync.shutdown)

        # The queue and its consumer thread: nothing is sent before flush() (flush_at and
        # flush_interval are out of reach), then one POST /batch/ of all seven.
        queued = client(PROJECT_KEY, base, errors, flush_at=100, flush_interval=300)
        for i in range(5):
            queued.capture("clicked", distinct_id=f"u{i}", properties={"button": "buy"})
        home = {"$current_url": "https://shop.example/home"}
        for user in ("u1", "u2"):
            queued.capture("$pageview", distinct_id=user, properties=home)
        await in_thread(queued.flush)
        await in_thread(queued.shutdown)

        # historical_migration with a key that may import history (admin): an event ten
        # days old, past limits.max_event_age (7d) but within the windows kept, is taken.
        # With a plain ingest key the same flag buys nothing: the SDK reports the 400.
        old = datetime.now(UTC) - timedelta(days=10)
        importer = client(ADMIN_KEY, base, errors, historical_migration=True)
        importer.capture("imported", distinct_id="u7", timestamp=old)
        await in_thread(importer.shutdown)
        not_allowed = client(PROJECT_KEY, base, refused, historical_migration=True)
        not_allowed.capture("imported", distinct_id="u8", timestamp=old)
        await in_thread(not_allowed.shutdown)

        expected = {
            "events_by_type:signed_up": 1,
            "events_by_type:$set": 1,
            "events_by_type:$create_alias": 1,
            "events_by_type:$groupidentify": 1,
            "events_by_type:paid": 1,
            "events_by_type:clicked": 5,
            "events_by_type:pageview": 3,
            "events_by_type:imported": 1,
            "pageviews": 3,
            "page_views:/pricing": 1,
            "page_views:/home": 2,
            "total_events": 14,
        }

        async def read(name: str, query: str = "") -> Any:
            url = f"{base}/api/v1/metrics/{quote(name, safe='')}{query}"
            response = await treq.get(url, headers={"X-API-Key": READ_KEY}).addTimeout(
                TIMEOUT, reactor
            )
            body = json.loads(await treq.content(response).addTimeout(TIMEOUT, reactor))
            return body["data"]["value"] if response.code == 200 else None

        async def counts() -> dict[str, Any]:
            return {name: await read(name) for name in expected}

        async def all_counted() -> bool:
            return await counts() == expected

        try:
            await poll(all_counted, timeout=TIMEOUT)
        except TimeoutError:
            assert await counts() == expected  # shows what differs
        # The imported event is counted at its own time, ten days ago, not at its arrival.
        then = (old - timedelta(hours=2)).isoformat()
        to = (old + timedelta(hours=2)).isoformat()
        window = f"?from={quote(then)}&to={quote(to)}"
        assert await read("events_by_type:imported", window) == 1
        assert await read("events_by_type:imported", "?from=-1d") == 0
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()

    assert errors == []
    # The refused import: a 400 for its timestamp, reported through on_error.
    assert len(refused) == 1, refused
    assert isinstance(refused[0], posthog.request.APIError)
    assert refused[0].status == 400 and "timestamp_too_old" in refused[0].message
    # Every upload went to /batch/, answered as PostHog answers, the refused one aside.
    assert {upload["path"] for upload in uploads} == {"/batch/"}
    answered = [(upload["status"], json.loads(upload["answer"])) for upload in uploads]
    assert answered[:-1] == [(200, {"status": 1})] * (len(uploads) - 1), answered
    assert answered[-1][0] == 400
    assert [upload["events"] for upload in uploads] == [
        ["signed_up"],
        ["$pageview"],
        ["$set"],
        ["$create_alias"],
        ["$groupidentify"],
        ["paid"],
        ["paid"],
        ["clicked"] * 5 + ["$pageview"] * 2,  # one batch
        ["imported"],
        ["imported"],
    ]
    assert [upload["gzip"] for upload in uploads] == [True] * 7 + [False] * 3
    assert [upload["historical_migration"] for upload in uploads[-2:]] == [True, True]
