"""Token buckets per client, with bounded memory (pure; time is passed in)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable

from attrs import define, frozen

from twisted_rta.config import RateLimitsConfig


@frozen
class Rate:
    per_second: float
    burst: float


@define
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """One bucket per key, refilled at ``rate.per_second`` up to ``rate.burst``.

    At most ``max_clients`` buckets are kept; the least recently used one is dropped first.
    A dropped bucket would have refilled anyway unless its client is active, so an attacker
    spraying addresses costs bounded memory, not correctness for the others.
    """

    def __init__(self, rate: Rate, *, max_clients: int) -> None:
        self.rate = rate
        self._max_clients = max_clients
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable, amount: float, now: float) -> float:
        """Take ``amount`` tokens; 0.0 when allowed, else the seconds until they would be."""
        rate = self.rate
        if rate.per_second <= 0:  # 0 means no limit
            return 0.0
        amount = min(amount, rate.burst)  # a request larger than the burst waits for a full one
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(rate.burst, now)
            if len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(rate.burst, bucket.tokens + elapsed * rate.per_second)
            bucket.updated = now
        if bucket.tokens >= amount:
            bucket.tokens -= amount
            return 0.0
        return (amount - bucket.tokens) / rate.per_second


def retry_after(wait: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait)))


class RequestLimiters:
    """The daemon's buckets: requests per route class and ingested events, per client."""

    def __init__(self, config: RateLimitsConfig) -> None:
        self.ingest_requests = RateLimiter(Rate(1, 1), max_clients=config.max_clients)
        self.ingest_events = RateLimiter(Rate(1, 1), max_clients=config.max_clients)
        self.read_requests = RateLimiter(Rate(1, 1), max_clients=config.max_clients)
        self.enabled = False
        self.configure(config)

    def configure(self, config: RateLimitsConfig) -> None:
        """Apply (new) rates; buckets keep their state (SIGHUP reload)."""
        self.enabled = config.enabled
        ingest, read = config.ingest, config.read
        self.ingest_requests.rate = Rate(ingest.requests_per_second, ingest.requests_burst)
        self.ingest_events.rate = Rate(ingest.events_per_second, ingest.events_burst)
        self.read_requests.rate = Rate(read.requests_per_second, read.requests_burst)

    def for_route(self, route: str) -> RateLimiter:
        return self.ingest_requests if route == "ingest" else self.read_requests

    def take_events(self, identity: Hashable, count: int, now: float) -> float:
        if not self.enabled:
            return 0.0
        return self.ingest_events.take(identity, count, now)
