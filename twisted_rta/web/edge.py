"""The outermost resource: request ids, CORS and preflight for every route."""

from __future__ import annotations

import re
import uuid

from attrs import frozen
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
_ALLOWED_METHODS = b"GET, POST, OPTIONS"
_ALLOWED_HEADERS = b"Content-Type, Authorization, X-API-Key, X-Request-ID"
_EXPOSED_HEADERS = b"X-Request-ID, Retry-After"


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


class EdgeResource(Resource):
    """Wraps the routing resource; runs before any route for every request."""

    isLeaf = True

    def __init__(self, inner: IResource, cors: CorsPolicy) -> None:
        super().__init__()
        self._inner = inner
        self.cors = cors  # replaced on reload

    def render(self, request: IRequest) -> bytes | int:
        request_id = client_request_id(request) or str(uuid.uuid4()).encode("ascii")
        request.request_id = request_id  # the access log reads it
        request.setHeader(b"X-Request-ID", request_id)
        allowed = self.cors.apply(request)
        if request.method == b"OPTIONS":
            # Preflight: answered here for every path so browsers can POST beacons.
            request.setResponseCode(204)
            request.setHeader(b"Allow", _ALLOWED_METHODS)
            if allowed:
                request.setHeader(b"Access-Control-Allow-Methods", _ALLOWED_METHODS)
                request.setHeader(b"Access-Control-Allow-Headers", _ALLOWED_HEADERS)
                request.setHeader(b"Access-Control-Max-Age", b"86400")
            return b""
        return self._inner.render(request)
