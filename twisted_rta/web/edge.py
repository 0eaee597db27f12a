"""The outermost resource: request ids, CORS, API keys and request rate limits, for every
route, before any route runs."""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from twisted_rta.config import Config
from twisted_rta.web.auth import INGEST, READ, Authenticator, Caller
from twisted_rta.web.dashboard import STREAM_PATH, is_dashboard_path, is_open_dashboard_path
from twisted_rta.web.ratelimit import RequestLimiters, retry_after
from twisted_rta.web.responses import error_payload, json_body

_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
_INGEST_METHODS = b"POST, OPTIONS"
_READ_METHODS = b"GET, HEAD, OPTIONS"
_ALLOWED_HEADERS = b"Content-Type, Authorization, X-API-Key, X-Request-ID"
_EXPOSED_HEADERS = b"X-Request-ID, Retry-After"
_BEARER = re.compile(r"^\s*Bearer\s+(\S+)\s*$", re.IGNORECASE)

OPEN, METRICS = "open", "metrics"  # route classes besides auth.INGEST and auth.READ
_OPEN_PATHS = frozenset({b"/health", b"/ready", b"/openapi.json"})
_INGEST_PATHS = frozenset({b"/api/v1/events", b"/api/v1/events/batch"})


def route_class(path: bytes) -> str:
    """Which policy a path falls under: open, ingest, metrics or read."""
    if path in _OPEN_PATHS or is_open_dashboard_path(path):
        return OPEN
    if path in _INGEST_PATHS:
        return INGEST
    if path == b"/metrics":
        return METRICS
    return READ


def _decodable(path: bytes) -> bool:
    try:
        unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def client_request_id(request: IRequest) -> bytes | None:
    """The client's X-Request-ID if it is 1-128 chars of [A-Za-z0-9._-], else None."""
    value = request.getHeader(b"X-Request-ID")
    if value is not None and _VALID_REQUEST_ID.fullmatch(value):
        return value
    return None


@frozen
class CorsPolicy:
    """Which browser origins may read our responses (``*`` allows any)."""

    allowed_origins: tuple[str, ...]

    def allows(self, origin: str) -> bool:
        return "*" in self.allowed_origins or origin in self.allowed_origins

    def apply(self, request: IRequest) -> bool:
        """Add CORS headers when the request's Origin is allowed; return whether it was."""
        origin = request.getHeader(b"Origin")
        if origin is None or not self.allows(origin.decode("latin-1")):
            return False
        if "*" in self.allowed_origins:
            request.setHeader(b"Access-Control-Allow-Origin", b"*")
        else:
            request.setHeader(b"Access-Control-Allow-Origin", origin)
            request.setHeader(b"Vary", b"Origin")
        request.setHeader(b"Access-Control-Expose-Headers", _EXPOSED_HEADERS)
        return True


@frozen
class ClientAddresses:
    """The client's address: the socket peer, or, when that peer is a trusted proxy, the
    nearest X-Forwarded-For hop that is not one."""

    trusted_proxies: tuple[str, ...]

    def of(self, request: IRequest) -> str:
        peer = getattr(request.getClientAddress(), "host", None) or "unknown"
        if not self.trusted_proxies or not self._trusted(peer):
            return peer
        forwarded = b",".join(request.requestHeaders.getRawHeaders(b"X-Forwarded-For", []))
        hops = [hop.strip() for hop in forwarded.decode("latin-1").split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop[:64]
        return hops[0][:64] if hops else peer

    def _trusted(self, address: str) -> bool:
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(parsed in ipaddress.ip_network(net) for net in self.trusted_proxies)


@frozen
class AccessPolicy:
    """What the edge enforces; replaced as a whole on reload."""

    ingest_cors: CorsPolicy
    query_cors: CorsPolicy
    authenticator: Authenticator
    public_metrics: bool
    addresses: ClientAddresses

    @classmethod
    def from_config(cls, config: Config) -> AccessPolicy:
        return cls(
            ingest_cors=CorsPolicy(config.cors.ingest.allowed_origins),
            query_cors=CorsPolicy(config.cors.query.allowed_origins),
            authenticator=Authenticator.from_config(config.auth.keys),
            public_metrics=config.auth.public_metrics,
            addresses=ClientAddresses(config.server.trusted_proxies),
        )


def presented_key(request: IRequest, *, allow_query: bool) -> str | None:
    """``Authorization: Bearer``, ``X-API-Key``, or (ingest only, for browser beacons that
    cannot set headers) the ``api_key`` query parameter."""
    authorization = request.getHeader(b"Authorization")
    if authorization is not None:
        bearer = _BEARER.match(authorization.decode("latin-1"))
        if bearer:
            return bearer.group(1)
    api_key = request.getHeader(b"X-API-Key")
    if api_key is not None:
        return api_key.decode("latin-1").strip()
    if allow_query:
        values: Sequence[bytes] = request.args.get(b"api_key") or ()
        if values:
            return values[0].decode("utf-8", "replace")
    return None


class EdgeResource(Resource):
    """Runs before any route for every request, then hands the request to the app for its
    path. It mounts the API app at /api/v1 itself rather than through a Klein branch route:
    a second Klein dispatch cost ~40% of a single-event request (measured)."""

    isLeaf = True

    def __init__(
        self,
        ops: IResource,
        api: IResource,
        policy: AccessPolicy,
        *,
        limiters: RequestLimiters | None = None,
        clock: IReactorTime | None = None,
        dashboard: IResource | None = None,
    ) -> None:
        super().__init__()
        self._ops = ops
        self._api = api
        self._dashboard = dashboard
        self.policy = policy  # replaced on reload
        self._limiters = limiters
        self._clock = clock

    def render(self, request: IRequest) -> bytes | int:
        request_id = client_request_id(request) or str(uuid.uuid4()).encode("ascii")
        request.request_id = request_id  # the access log reads it
        request.caller_name = "-"
        request.setHeader(b"X-Request-ID", request_id)
        policy = self.policy
        route = route_class(request.path)
        cors = policy.ingest_cors if route == INGEST else policy.query_cors
        allowed = cors.apply(request)
        if request.method == b"OPTIONS":
            return self._preflight(request, allowed, route)
        if not _decodable(request.path):
            return json_body(
                request,
                error_payload("invalid_path", "the path must be UTF-8 once percent-decoded"),
                400,
            )
        caller, refusal = self._authenticate(request, route, policy)
        if refusal is not None:
            return refusal
        request.caller_name = caller.name if caller is not None else "-"
        identity = ("key", caller.name) if caller else ("address", policy.addresses.of(request))
        request.rate_identity = identity  # the ingest route takes events from the same client
        limiters = self._limiters
        if route != OPEN and limiters is not None and limiters.enabled:
            limiter = limiters.for_route(route)
            wait = limiter.take(identity, 1, self._now())
            if wait:
                request.setHeader(b"Retry-After", retry_after(wait).encode("ascii"))
                return json_body(
                    request,
                    error_payload(
                        "rate_limited",
                        f"too many requests; at most {limiter.rate.per_second:g} per second "
                        f"(burst {limiter.rate.burst:g}) for this client",
                    ),
                    429,
                )
        return self._route(request)

    def _route(self, request: IRequest) -> bytes | int:
        """/api/v1/... goes to the API app (which sees the rest of the path), the dashboard's
        page, assets and stream to the dashboard app, all else to ops."""
        if self._dashboard is not None and is_dashboard_path(request.path):
            return self._dashboard.render(request)
        postpath = request.postpath
        if len(postpath) > 2 and postpath[0] == b"api" and postpath[1] == b"v1":
            request.prepath = [*request.prepath, b"api", b"v1"]
            request.postpath = postpath[2:]
            return self._api.render(request)
        return self._ops.render(request)

    def _now(self) -> float:
        return self._clock.seconds() if self._clock is not None else 0.0

    @staticmethod
    def _preflight(request: IRequest, allowed: bool, route: str) -> bytes:
        if request.getHeader(b"Origin") is not None and not allowed:
            # Preflights are answered only for the origins the policy allows.
            return json_body(
                request,
                error_payload(
                    "origin_not_allowed",
                    "this origin may not call this route from a browser",
                ),
                403,
            )
        methods = _INGEST_METHODS if route == INGEST else _READ_METHODS
        request.setResponseCode(204)
        request.setHeader(b"Allow", methods)
        if allowed:
            request.setHeader(b"Access-Control-Allow-Methods", methods)
            request.setHeader(b"Access-Control-Allow-Headers", _ALLOWED_HEADERS)
            request.setHeader(b"Access-Control-Max-Age", b"86400")
        return b""

    @staticmethod
    def _authenticate(
        request: IRequest, route: str, policy: AccessPolicy
    ) -> tuple[Caller | None, bytes | None]:
        """(caller, None) when the request may go on, else (None, the error body)."""
        authenticator = policy.authenticator
        if route == OPEN or not authenticator.enabled:
            return None, None
        if route == METRICS and policy.public_metrics:
            return None, None
        # EventSource cannot send headers: the stream also takes the key as api_key.
        allow_query = route == INGEST or request.path == STREAM_PATH
        presented = presented_key(request, allow_query=allow_query)
        caller = authenticator.identify(presented) if presented else None
        if caller is None:
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="rta"')
            message = (
                "an API key is required: send Authorization: Bearer <key> or X-API-Key"
                if presented is None
                else "unknown API key"
            )
            return None, json_body(request, error_payload("unauthorized", message), 401)
        scope = INGEST if route == INGEST else READ
        if not caller.may(scope):
            request.caller_name = caller.name
            return None, json_body(
                request,
                error_payload(
                    "forbidden",
                    f"the key {caller.name!r} lacks the {scope!r} scope",
                ),
                403,
            )
        return caller, None
