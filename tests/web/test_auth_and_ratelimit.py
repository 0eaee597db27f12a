"""API keys and token buckets (pure parts)."""

from __future__ import annotations

import hashlib

import pytest

from twisted_rta.config import ConfigError, config_from_mapping
from twisted_rta.web.auth import Authenticator
from twisted_rta.web.ratelimit import Rate, RateLimiter, retry_after

SECRET = "correct-horse-battery-staple"


def authenticator() -> Authenticator:
    config = config_from_mapping(
        {
            "auth": {
                "keys": [
                    {"name": "site", "key": SECRET, "scopes": ["ingest"]},
                    {
                        "name": "grafana",
                        "sha256": hashlib.sha256(b"reader-key-0123456789").hexdigest(),
                        "scopes": ["read"],
                    },
                    {"name": "ops", "key": "admin-key-0123456789", "scopes": ["admin"]},
                ]
            }
        }
    )
    return Authenticator.from_config(config.auth.keys)


def test_keys_are_identified_by_key_or_digest() -> None:
    auth = authenticator()
    site = auth.identify(SECRET)
    assert site is not None and site.name == "site"
    assert site.may("ingest") and not site.may("read")
    grafana = auth.identify("reader-key-0123456789")
    assert grafana is not None and grafana.may("read") and not grafana.may("ingest")
    ops = auth.identify("admin-key-0123456789")
    assert ops is not None and ops.may("read") and ops.may("ingest")
    assert auth.identify("wrong") is None
    assert auth.identify(SECRET + " ") is None


def test_config_keeps_only_digests_and_redacts_them_from_the_summary() -> None:
    from twisted_rta.config import summary

    config = config_from_mapping(
        {"auth": {"keys": [{"name": "site", "key": SECRET, "scopes": ["ingest"]}]}}
    )
    assert SECRET not in repr(config)
    assert summary(config)["auth.keys"] == [{"name": "site", "scopes": ("ingest",)}]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([{"name": "a", "scopes": ["read"]}], "auth.keys[0]: give exactly one of key or sha256"),
        (
            [{"name": "a", "key": "short", "scopes": ["read"]}],
            "auth.keys[0].key: must be a string of at least 16 characters",
        ),
        (
            [{"name": "a", "sha256": "xyz", "scopes": ["read"]}],
            "auth.keys[0].sha256: must be 64 hexadecimal characters",
        ),
        (
            [{"name": "a", "key": "k" * 20, "scopes": ["write"]}],
            "auth.keys[0].scopes[0]: must be one of ingest, read, admin, got 'write'",
        ),
        (
            [
                {"name": "a", "key": "k" * 20, "scopes": ["read"]},
                {"name": "a", "key": "j" * 20, "scopes": ["read"]},
            ],
            "auth.keys: key names must be unique; 'a' appears twice",
        ),
    ],
)
def test_bad_keys_are_config_errors(keys: list[object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"auth": {"keys": keys}})
    assert str(caught.value) == message


def test_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    limiter = RateLimiter(Rate(per_second=2.0, burst=4.0), max_clients=10)
    assert [limiter.take("c", 1, 0.0) for _ in range(4)] == [0.0] * 4
    assert limiter.take("c", 1, 0.0) == 0.5
    assert limiter.take("c", 1, 0.5) == 0.0
    assert limiter.take("other", 4, 0.5) == 0.0  # each client has its own bucket
    assert limiter.take("c", 3, 10.0) == 0.0  # refilled, never above the burst
    assert limiter.take("c", 2, 10.0) == 0.5


def test_zero_rate_means_unlimited() -> None:
    limiter = RateLimiter(Rate(per_second=0.0, burst=1.0), max_clients=10)
    assert all(limiter.take("c", 100, 0.0) == 0.0 for _ in range(10))
    assert len(limiter) == 0


def test_buckets_are_bounded_least_recently_used_first() -> None:
    limiter = RateLimiter(Rate(per_second=1.0, burst=1.0), max_clients=3)
    for client in ("a", "b", "c"):
        limiter.take(client, 1, 0.0)
    limiter.take("a", 1, 0.0)  # a is now the most recent
    limiter.take("d", 1, 0.0)  # evicts b
    assert len(limiter) == 3
    assert limiter.take("a", 1, 0.0) > 0  # a kept its (empty) bucket
    assert limiter.take("b", 1, 0.0) == 0.0  # b starts again full
    for index in range(10_000):
        limiter.take(f"spray-{index}", 1, 0.0)
    assert len(limiter) == 3


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after(0.01) == "1"
    assert retry_after(2.2) == "3"
