"""The first-party tracker script (static/rta.js), served at ``tracker.script_path`` with the
configured endpoint path written in (routes and policy: web/routes.py)."""

from __future__ import annotations

import hashlib
import json
from importlib import resources

from klein import Klein
from twisted.web.iweb import IRequest

from twisted_rta.web.errors import add_json_error_handlers
from twisted_rta.web.routes import PLAUSIBLE_PATH, SCRIPT_RULE

# In rta.js, the one place that names the endpoint the script posts to by default.
_ENDPOINT_LITERAL = json.dumps(PLAUSIBLE_PATH).encode("ascii")
CONTENT_TYPE = b"application/javascript; charset=utf-8"
# An hour: a new release reaches browsers within it, and the ETag makes the check cheap.
CACHE_CONTROL = b"public, max-age=3600"


def tracker_script(endpoint_path: str) -> bytes:
    """rta.js posting to ``endpoint_path`` on the origin it is served from."""
    source = resources.files("twisted_rta.web").joinpath("static", "rta.js").read_bytes()
    if source.count(_ENDPOINT_LITERAL) != 1:
        raise ValueError("rta.js must name its default endpoint exactly once")
    return source.replace(_ENDPOINT_LITERAL, json.dumps(endpoint_path).encode("ascii"))


def etag_matches(if_none_match: bytes | None, etag: bytes) -> bool:
    """Whether an If-None-Match header names ``etag`` (weakly, as RFC 9110 compares for GET)."""
    if if_none_match is None:
        return False
    for tag in if_none_match.split(b","):
        tag = tag.strip()
        if tag == b"*" or tag.removeprefix(b"W/") == etag:
            return True
    return False


class TrackerApp:
    """The script: built once at start (the endpoint path is restart-only config), then the
    same bytes and ETag for every request."""

    app = add_json_error_handlers(Klein())

    def __init__(self, *, endpoint_path: str) -> None:
        self.script = tracker_script(endpoint_path)
        self.etag = b'"' + hashlib.sha256(self.script).hexdigest()[:32].encode("ascii") + b'"'

    @app.route(SCRIPT_RULE, methods=["GET"])
    def script_file(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE)
        request.setHeader(b"Cache-Control", CACHE_CONTROL)
        request.setHeader(b"ETag", self.etag)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        # Pages that isolate themselves (COEP: require-corp) may still load it.
        request.setHeader(b"Cross-Origin-Resource-Policy", b"cross-origin")
        if etag_matches(request.getHeader(b"If-None-Match"), self.etag):
            request.setResponseCode(304)
            return b""
        return self.script
