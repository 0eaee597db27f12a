"""Segment's own Python SDK (segment-analytics-python) against a real ``twistd rta``: the
one setting changed is the host; its write key is our ingest key. The SDK's calls block,
so they run in a thread, each bounded by ``addTimeout``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_twisted
import treq
import yaml
from segment.analytics import Client
from twisted.internet import reactor

from tests.e2e.process import clean_exit, in_thread, poll
from tests.e2e.test_daemon import TIMEOUT, start

pytestmark = pytest.mark.e2e
WRITE_KEY = "segment-sdk-write-key-0123456789"
READ_KEY = "segment-sdk-read-key-0123456789"


@pytest_twisted.ensureDeferred
async def test_the_segment_sdk_is_counted_through_the_query_api(tmp_path: Path) -> None:
    config = tmp_path / "rta.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "store": {"url": "memory:"},
                "auth": {
                    "keys": [
                        {"name": "app", "key": WRITE_KEY, "scopes": ["ingest"]},
                        {"name": "reader", "key": READ_KEY, "scopes": ["read"]},
                    ]
                },
            }
        )
    )
    daemon, base = await start(tmp_path, "-c", str(config))
    errors: list[Any] = []
    try:
        # sync_mode: every call is its own POST /v1/batch, and an error raises.
        sync = Client(WRITE_KEY, host=base, sync_mode=True, max_retries=0, gzip=True)
        await in_thread(lambda: sync.track("u1", "Signed Up", {"plan": "pro"}))
        await in_thread(lambda: sync.page("u1", "Docs", "Pricing", {"path": "/pricing"}))
        await in_thread(lambda: sync.identify("u1", {"email": "u1@example.com"}))
        await in_thread(lambda: sync.screen("u1", "App", "Home"))
        await in_thread(lambda: sync.group("u1", "g1", {"name": "Acme"}))
        await in_thread(lambda: sync.alias("u1", "a1"))

        # The queue and its consumer thread: one batch of several messages at flush().
        queued = Client(
            WRITE_KEY,
            host=base,
            max_retries=0,
            upload_interval=0.5,  # the consumer gathers a batch for this long
            on_error=lambda error, batch: errors.append(error),
        )
        for i in range(5):
            queued.track(f"u{i}", "Clicked", {"button": "buy"}, anonymous_id=None)
        queued.page(anonymous_id="a2", name="Home", properties={"url": "https://e.com/home"})
        await in_thread(queued.shutdown)
        assert errors == []

        expected = {
            "events_by_type:Signed Up": 1,
            "events_by_type:Clicked": 5,
            "events_by_type:identify": 1,
            "events_by_type:screen": 1,
            "events_by_type:group": 1,
            "events_by_type:alias": 1,
            "pageviews": 2,
            "page_views:/pricing": 1,
            "page_views:/home": 1,
        }

        async def counts() -> dict[str, Any]:
            found = {}
            for name in expected:
                url = f"{base}/api/v1/metrics/{quote(name, safe='')}"
                response = await treq.get(url, headers={"X-API-Key": READ_KEY}).addTimeout(
                    TIMEOUT, reactor
                )
                body = json.loads(await treq.content(response).addTimeout(TIMEOUT, reactor))
                found[name] = body["data"]["value"] if response.code == 200 else None
            return found

        async def all_counted() -> bool:
            return await counts() == expected

        await poll(all_counted, timeout=TIMEOUT)
    finally:
        reason = await daemon.terminate()
    assert clean_exit(reason), daemon.output_text()
