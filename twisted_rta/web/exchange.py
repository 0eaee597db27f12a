"""What the edge's policy and the ingest logic read and write of one HTTP exchange.

Both lanes of the edge run the same rules (request id, CORS, API keys, rate limits, the
ingest handler) on an object of this shape: twisted.web's ``RTARequest`` on the Klein lane,
the fast lane's ``LeanRequest`` (web/fastlane.py) on the other. Writing the rules against
this protocol rather than ``IRequest`` is what keeps one copy of each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from twisted.internet.interfaces import IAddress

from twisted_rta.web.auth import Authenticator
from twisted_rta.web.routes import Route


class ResponseHead(Protocol):
    """Where a handler puts its status and headers."""

    def setResponseCode(self, code: int, message: bytes | None = None) -> None: ...

    def setHeader(self, name: bytes, value: bytes) -> None: ...


class RawHeaders(Protocol):
    def getRawHeaders(self, name: bytes) -> Sequence[bytes] | None: ...


class Exchange(ResponseHead, Protocol):
    """A request as the edge's policy sees it, and the state it keeps for the rest of the
    request (the route, the caller, the rate-limit identity; the access log reads them)."""

    method: bytes
    path: bytes  # without the query
    args: dict[bytes, list[bytes]]
    request_id: bytes
    route: Route
    caller_name: str
    rate_identity: tuple[str, str] | None
    client_address: str  # the client, behind trusted proxies (visitor ids; never logged)
    # Set by the edge when the key must come from the body (Segment's writeKey): the
    # authenticator of the moment (SIGHUP may replace it) for the handler to check it with.
    body_key_check: Authenticator | None
    # Set by the edge: the caller may import history (events older than limits.max_event_age,
    # for Segment's /v1/import and PostHog's historical_migration): an admin key, or no
    # keys configured.
    history_allowed: bool

    @property
    def requestHeaders(self) -> RawHeaders: ...

    def getHeader(self, key: bytes) -> bytes | None: ...

    def getClientAddress(self) -> IAddress: ...
