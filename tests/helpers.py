"""Shared test helpers: synchronous Deferred results and an in-memory HTTP client."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TypeVar

import attrs
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import IResource

from tests.contract import check as check_contract

T = TypeVar("T")

# 2026-11-27T03:00:00Z: tests pin the clock, they never read the real one.
NOW = 1_795_748_400.0


def result_of(deferred: Deferred[T]) -> T:
    """The result of a Deferred that must already have fired successfully."""
    outcome: list[Any] = []
    deferred.addBoth(outcome.append)
    assert outcome, "Deferred has not fired"
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


def failure_of(deferred: Deferred[Any]) -> Failure:
    outcome: list[Any] = []
    deferred.addBoth(outcome.append)
    assert outcome, "Deferred has not fired"
    assert isinstance(outcome[0], Failure), f"expected a failure, got {outcome[0]!r}"
    return outcome[0]


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


class HttpClient:
    """Drives a resource in memory with StubTreq; every call returns a finished Reply."""

    def __init__(self, resource: IResource, *, contract: bool = True) -> None:
        self._stub = StubTreq(resource)
        # Every reply is checked against docs/openapi.yaml unless a test provokes an
        # undocumented answer on purpose.
        self._contract = contract

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        if body is not None and not isinstance(body, bytes | str):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        response = result_of(
            self._stub.request(
                method,
                "http://rta.test" + path,
                data=body,
                headers={k: [v] for k, v in (headers or {}).items()},
            )
        )
        content = result_of(self._stub.content(response))
        raw = {
            name.decode().lower(): [value.decode() for value in values]
            for name, values in response.headers.getAllRawHeaders()
        }
        reply = Reply(response.code, raw, content)
        if self._contract:
            check_contract(method, path, reply.status, reply.headers, reply.body)
        return reply

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Reply:
        return self.request("POST", path, body, headers=headers)


def advance(clock: Clock, steps: Iterable[float]) -> None:
    for step in steps:
        clock.advance(step)


def site_of(factory: Any) -> Any:
    """The RTASite behind a listener's factory: the factory itself, or the one the fast
    lane (server.fast_lane) shares its limits, counters and access log with."""
    return getattr(factory, "site", factory)


def raw_http(site: IProtocolFactory, data: bytes) -> tuple[bytes, bool]:
    """Feed raw bytes to a real connection of ``site`` (an RTASite, or the fast lane in
    front of one); return (bytes written, closed?).

    Unlike StubTreq this goes through the Site's own Request class, so body limits and
    the access log are exercised exactly as on a socket.
    """
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    return transport.value(), transport.disconnecting
