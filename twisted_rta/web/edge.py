"""The outermost resource: request ids, CORS, API keys and request rate limits, for every
request before any route runs, as the route table (web/routes.py) says for its path."""

from __future__ import annotations

import binascii
import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from typing import cast
from urllib.parse import unquote_to_bytes

from attrs import field, frozen
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from twisted_rta.config import Config
from twisted_rta.web.auth import ADMIN, READ, Authenticator, Caller
from twisted_rta.web.errors import not_found
from twisted_rta.web.exchange import Exchange
from twisted_rta.web.ratelimit import RequestLimiters, retry_after
from twisted_rta.web.responses import error_payload, json_body
from twisted_rta.web.routes import INGEST_CORS, Route, RouteTable
from twisted_rta.web.site import RTARequest, new_request_id

_ALLOWED_HEADERS = b"Content-Type, Content-Encoding, Authorization, X-API-Key, X-Request-ID"
_EXPOSED_HEADERS = b"X-Request-ID, Retry-After"
_BEARER = re.compile(r"^\s*Bearer\s+(\S+)\s*$", re.IGNORECASE)
_BASIC = re.compile(r"^\s*Basic\s+([A-Za-z0-9+/=]+)\s*$", re.IGNORECASE)
_WWW_AUTHENTICATE = b'Bearer realm="rta"'


def _decoded(path: bytes) -> bytes | None:
    """The percent-decoded path (routes match what werkzeug will see), None unless UTF-8."""
    decoded = path if b"%" not in path else unquote_to_bytes(path)  # most have no %
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return decoded


@frozen
class CorsPolicy:
    """Which browser origins may read our responses (``*`` allows any)."""

    allowed_origins: tuple[str, ...]

    def allows(self, origin: str) -> bool:
        return "*" in self.allowed_origins or origin in self.allowed_origins

    def apply(self, request: Exchange) -> bool:
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
    # Each network as (address length in bytes, first, last) integers, parsed once: with
    # ipaddress objects a check cost ~5 us, two per request (the browser benchmark's
    # profile: 14% of a Plausible hit); inet_pton and integer comparisons take ~1.8 us.
    _ranges: tuple[tuple[int, int, int], ...] = field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        ranges = []
        for text in self.trusted_proxies:
            network = ipaddress.ip_network(text, strict=False)
            first, last = int(network.network_address), int(network.broadcast_address)
            ranges.append((4 if network.version == 4 else 16, first, last))
        object.__setattr__(self, "_ranges", tuple(ranges))

    def of(self, request: Exchange) -> str:
        peer = getattr(request.getClientAddress(), "host", None) or "unknown"
        if not self.trusted_proxies or not self._trusted(peer):
            return peer
        forwarded = b",".join(request.requestHeaders.getRawHeaders(b"X-Forwarded-For") or ())
        hops = [hop.strip() for hop in forwarded.decode("latin-1").split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop[:64]
        return hops[0][:64] if hops else peer

    def _trusted(self, address: str) -> bool:
        try:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            packed = socket.inet_pton(family, address)
        except (OSError, ValueError):  # not an address (a name, "unknown", a NUL)
            return False
        value, size = int.from_bytes(packed, "big"), len(packed)
        return any(size == n and first <= value <= last for n, first, last in self._ranges)


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


def presented_key(request: Exchange, *, allow_query: bool) -> str | None:
    """``Authorization: Bearer``, ``Authorization: Basic`` with the key as the user name
    (what Segment's SDKs send: their write key, an empty password), ``X-API-Key``, or
    (ingest only, for browser beacons that cannot set headers) the ``api_key`` query
    parameter."""
    authorization = request.getHeader(b"Authorization")
    if authorization is not None:
        text = authorization.decode("latin-1")
        bearer = _BEARER.match(text)
        if bearer:
            return bearer.group(1)
        basic = _BASIC.match(text)
        if basic:
            user = _basic_user(basic.group(1))
            if user:
                return user
    api_key = request.getHeader(b"X-API-Key")
    if api_key is not None:
        return api_key.decode("latin-1").strip()
    if allow_query:
        values: Sequence[bytes] = request.args.get(b"api_key") or ()
        if values:
            return values[0].decode("utf-8", "replace")
    return None


def _basic_user(credentials: str) -> str | None:
    """The user name of Basic credentials (base64 of ``user:password``), or None."""
    try:
        decoded = binascii.a2b_base64(credentials.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    user, _, _ = decoded.decode("utf-8", "replace").partition(":")
    return user.strip() or None


@frozen
class KeyRefusal:
    """Why a key does not admit a request: the status (401 or 403), code and message."""

    status: int
    code: str
    message: str
    headers: Mapping[str, str]


def key_refusal(
    authenticator: Authenticator, presented: str | None, scope: str
) -> tuple[Caller | None, KeyRefusal | None]:
    """(the caller, None) when ``presented`` may use ``scope``, else (caller or None, the
    refusal): the one wording of the edge's 401 and 403, used for a key found in a body too."""
    caller = authenticator.identify(presented) if presented else None
    if caller is None:
        message = (
            "an API key is required: send Authorization: Bearer <key> or X-API-Key"
            if presented is None
            else "unknown API key"
        )
        headers = {"WWW-Authenticate": _WWW_AUTHENTICATE.decode("ascii")}
        return None, KeyRefusal(401, "unauthorized", message, headers)
    if not caller.may(scope):
        message = f"the key {caller.name!r} lacks the {scope!r} scope"
        return caller, KeyRefusal(403, "forbidden", message, {})
    return caller, None


class EdgeResource(Resource):
    """Runs before any route for every request: request id, CORS, API key, request rate
    limit, all as the route table says for the request's path; then hands the request to
    the Klein app of its route. It mounts the apps itself rather than through a Klein branch
    route: a second Klein dispatch cost ~40% of a single-event request (measured)."""

    isLeaf = True

    def __init__(
        self,
        apps: Mapping[str, IResource],
        policy: AccessPolicy,
        *,
        routes: RouteTable,
        limiters: RequestLimiters | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__()
        missing = routes.apps() - set(apps)
        if missing:
            raise ValueError(f"no resource for the app(s) {sorted(missing)} of the route table")
        self._apps = dict(apps)
        self.routes = routes
        self.policy = policy  # replaced on reload
        self._limiters = limiters
        self._clock = clock

    def render(self, iRequest: IRequest) -> bytes | int:
        # Every request reaching the edge is built by RTASite (tests driving the edge with
        # StubTreq get twisted's plain Request, which takes the same attributes).
        request = cast(RTARequest, iRequest)
        admitted = self.admit(request)
        if isinstance(admitted, bytes):
            return admitted
        return self._dispatch(request, admitted)

    def admit(self, request: Exchange) -> Route | bytes:
        """Everything the edge does before a route's handler, on either lane: the request
        id, CORS, a preflight's answer, the API key and its scope, the request rate limit.
        Returns the route that may serve the request, or the body of the answer already
        given (its status and headers set on ``request``)."""
        request.request_id = request_id = new_request_id(request)
        request.setHeader(b"X-Request-ID", request_id)
        path = _decoded(request.path)
        routes = self.routes
        route = routes.match(path) if path is not None else routes.fallback
        request.route = route
        policy = self.policy
        cors = policy.ingest_cors if route.cors == INGEST_CORS else policy.query_cors
        allowed = cors.apply(request)
        if request.method == b"OPTIONS":
            return self._preflight(request, allowed, route)
        if path is None:
            return json_body(
                request,
                error_payload("invalid_path", "the path must be UTF-8 once percent-decoded"),
                400,
            )
        request.body_key_check = None  # set by _authenticate when the body has the key
        caller, refusal = self._authenticate(request, route, policy)
        if refusal is not None:
            return refusal
        request.client_address = address = policy.addresses.of(request)
        identity = ("key", caller.name) if caller else ("address", address)
        request.rate_identity = identity  # the ingest app takes events from the same bucket
        limiters = self._limiters
        if route.rate_limit is not None and limiters is not None and limiters.enabled:
            limiter = limiters.for_route(route.rate_limit)
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
        return route

    def _dispatch(self, request: RTARequest, route: Route) -> bytes | int:
        """Hand the request to its route's app; the app sees the path below the mount, or
        the path of the rule a renamed route names."""
        if route.app is None:
            return not_found(request)
        if route.rule is not None:
            request.prepath = [*(request.prepath or []), *(request.postpath or [])]
            request.postpath = [segment.encode() for segment in route.rule[1:].split("/")]
        elif route.mount:
            depth = route.mount.count("/")
            postpath = request.postpath or []
            request.prepath = [*(request.prepath or []), *postpath[:depth]]
            request.postpath = postpath[depth:]
        return cast(bytes | int, self._apps[route.app].render(request))

    def _now(self) -> float:
        return self._clock.seconds() if self._clock is not None else 0.0

    @staticmethod
    def _preflight(request: Exchange, allowed: bool, route: Route) -> bytes:
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
        request.setResponseCode(204)
        request.setHeader(b"Allow", route.allow)
        if allowed:
            request.setHeader(b"Access-Control-Allow-Methods", route.allow)
            request.setHeader(b"Access-Control-Allow-Headers", _ALLOWED_HEADERS)
            request.setHeader(b"Access-Control-Max-Age", b"86400")
        return b""

    @staticmethod
    def _authenticate(
        request: Exchange, route: Route, policy: AccessPolicy
    ) -> tuple[Caller | None, bytes | None]:
        """(caller, None) when the request may go on, else (None, the error body)."""
        authenticator = policy.authenticator
        scope = route.scope
        # Without keys every caller may do everything, history imports included.
        request.history_allowed = not authenticator.enabled
        if scope is None or not authenticator.enabled:
            return None, None
        if route.public_option and policy.public_metrics:
            return None, None
        presented = presented_key(request, allow_query=route.key_in_query)
        if presented is None and route.key_in_body:
            # The key may be in the body (Segment's writeKey), which is not read yet: the
            # handler checks it, with this authenticator (SIGHUP may replace the policy).
            request.body_key_check = authenticator
            return None, None
        caller, refused = key_refusal(authenticator, presented, scope)
        if caller is not None:
            request.caller_name = caller.name
            request.history_allowed = caller.may(ADMIN)
        if refused is not None:
            for name, value in refused.headers.items():
                request.setHeader(name.encode("ascii"), value.encode("ascii"))
            body = error_payload(refused.code, refused.message)
            return None, json_body(request, body, refused.status)
        assert caller is not None  # no refusal: a caller
        if caller.sites is not None and scope == READ:
            refusal = _site_refusal(request, route, caller)
            if refusal is not None:
                return None, json_body(request, error_payload("forbidden", refusal), 403)
        return caller, None


def _site_refusal(request: Exchange, route: Route, caller: Caller) -> str | None:
    """Why a key bound to sites may not make this read, or None: only per-site queries
    (``?site=``) of its own sites."""
    sites = ", ".join(sorted(caller.sites or ()))
    if not route.per_site:
        return f"the key {caller.name!r} reads only the figures of its sites ({sites})"
    values = request.args.get(b"site") or ()
    site = values[0].decode("utf-8", "replace") if values else None
    if not caller.may_read_site(site):
        return f"the key {caller.name!r} reads only its sites: add ?site= with one of {sites}"
    return None
