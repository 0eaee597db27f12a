"""Telemetry: the daemon's own Prometheus metrics, in a registry per daemon (no globals).

Distributions and labelled counts that only the edge sees (HTTP, ingest outcomes, flush
and reactor timings) live here as prometheus_client objects; state the services already
keep (queue depth, windows written, ...) is read at scrape time by the exposition
collector instead of being counted twice.

Resolving a label set costs ~3 us per call; the hot paths go through the methods below,
which resolve each (bounded) label set once and keep the child.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.process_collector import ProcessCollector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Telemetry:
    def __init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        registry = self.registry
        self.events_received = Counter(
            "rta_events_received",
            "Events received, valid or not",
            ["endpoint"],
            registry=registry,
        )
        self.events_accepted = Counter(
            "rta_events_accepted",
            "Events accepted (202) and queued",
            ["endpoint"],
            registry=registry,
        )
        self.events_deduplicated = Counter(
            "rta_events_deduplicated",
            "Events acknowledged but not counted again: their client-given id was already "
            "taken within dedup.horizon",
            ["endpoint"],
            registry=registry,
        )
        self.events_rejected = Counter(
            "rta_events_rejected",
            "Events refused, by reason (error code)",
            ["endpoint", "reason"],
            registry=registry,
        )
        self.http_requests = Counter(
            "rta_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=registry,
        )
        self.http_latency = Histogram(
            "rta_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.flush_duration = Histogram(
            "rta_flush_duration_seconds",
            "Duration of one flush tick (close and write)",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.reactor_lag = Histogram(
            "rta_reactor_lag_seconds",
            "How late a periodic reactor call ran",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.accept_errors = Counter(
            "rta_accept_errors",
            "Failed accept() calls on the listening sockets, by errno (EMFILE: out of file "
            "descriptors; see LimitNOFILE)",
            ["reason"],
            registry=registry,
        )
        ProcessCollector(registry=registry)

    def received(self, endpoint: str) -> Any:
        """The counter of events received by ``endpoint`` (``single`` or ``batch``)."""
        return self._child(self.events_received, endpoint)

    def accepted(self, endpoint: str) -> Any:
        return self._child(self.events_accepted, endpoint)

    def deduplicated(self, endpoint: str) -> Any:
        return self._child(self.events_deduplicated, endpoint)

    def rejected(self, endpoint: str, reason: str) -> Any:
        """The counter of events refused by ``endpoint`` for ``reason`` (an error code)."""
        return self._child(self.events_rejected, endpoint, reason)

    def http_request(self, route: str, status: int, seconds: float) -> None:
        """One finished request of ``route`` (a route table label)."""
        self._child(self.http_requests, route, str(status)).inc()
        self._child(self.http_latency, route).observe(seconds)

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        # Label values must come from bounded sets (endpoints, codes, route labels).
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child
