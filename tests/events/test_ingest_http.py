"""The event rules as the ingest routes answer them, every reply checked against the contract."""

from __future__ import annotations

from tests.conftest import Daemon
from tests.helpers import NOW


def test_a_purchase_with_a_bad_amount_is_400_invalid_amount(daemon: Daemon) -> None:
    for amount in ("19.5", -5, True):
        event = {"type": "purchase", "properties": {"amount": amount}}
        reply = daemon.http.post("/api/v1/events", event)
        assert (reply.status, reply.json["code"], reply.json["field"]) == (
            400,
            "invalid_amount",
            "properties.amount",
        )
    assert daemon.service.queue.depth == 0
    accepted = daemon.http.post("/api/v1/events", {"type": "purchase"})
    assert accepted.status == 202


def test_a_batch_rejects_only_its_purchases_with_bad_amounts(daemon: Daemon) -> None:
    events = [
        {"type": "purchase", "properties": {"amount": 19.5}},
        {"type": "purchase", "properties": {"amount": -5}},
        {"type": "purchase", "properties": {"amount": "3"}},
    ]
    reply = daemon.http.post("/api/v1/events/batch", events)
    assert reply.status == 202
    data = reply.json["data"]
    assert (data["accepted"], data["rejected"]) == (1, 2)
    assert [(e["index"], e["code"]) for e in data["errors"]] == [
        (1, "invalid_amount"),
        (2, "invalid_amount"),
    ]
    none_valid = daemon.http.post("/api/v1/events/batch", events[1:])
    assert (none_valid.status, none_valid.json["code"]) == (400, "no_valid_events")


def test_epoch_seconds_are_answered_with_a_hint(daemon: Daemon) -> None:
    reply = daemon.http.post("/api/v1/events", {"type": "x", "timestamp": int(NOW)})
    assert (reply.status, reply.json["code"]) == (400, "timestamp_too_old")
    assert "numeric timestamps are epoch milliseconds" in reply.json["message"]
    assert f"got {int(NOW)}, which looks like epoch seconds" in reply.json["message"]
