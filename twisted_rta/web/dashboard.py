"""The built-in dashboard: the page, its static assets and icon, and the Server-Sent Events
stream that pushes the live figures to every open page (routes and policy: web/routes.py)."""

from __future__ import annotations

import html
import re
from importlib import resources

from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from werkzeug.exceptions import NotFound

from twisted_rta.web.errors import add_json_error_handlers
from twisted_rta.web.live import LiveFeed

log = Logger()

_ASSET_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\.(?:js|css|svg|ico|txt)")
_CONTENT_TYPES = {
    "html": b"text/html; charset=utf-8",
    "js": b"text/javascript; charset=utf-8",
    "css": b"text/css; charset=utf-8",
    "svg": b"image/svg+xml",
    "ico": b"image/x-icon",
    "txt": b"text/plain; charset=utf-8",
}
# The page loads only its own assets and talks only to this origin.
_PAGE_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


_ICON_CACHE = b"public, max-age=86400"  # the icon never changes within a release
# Where index.html names the tracker's path (the snippet the page shows): filled in once.
_TRACKER_SCRIPT_SLOT = b"{{tracker_script_path}}"


def _static(name: str) -> bytes:
    return resources.files("twisted_rta.web").joinpath("static", name).read_bytes()


def page_with(tracker_script_path: str) -> bytes:
    """index.html with the tracker's path in its snippet (escaped: it lands in attributes
    and text)."""
    page = _static("index.html")
    if _TRACKER_SCRIPT_SLOT not in page:
        raise ValueError("index.html has no slot for the tracker's script path")
    path = html.escape(tracker_script_path, quote=True).encode("utf-8")
    return page.replace(_TRACKER_SCRIPT_SLOT, path)


class _StreamResource(Resource):
    isLeaf = True

    def __init__(self, feed: LiveFeed) -> None:
        super().__init__()
        self._feed = feed

    def render_GET(self, request: Request) -> int:
        self._feed.subscribe(request)
        return NOT_DONE_YET


class DashboardApp:
    app = add_json_error_handlers(Klein())

    def __init__(self, *, feed: LiveFeed, tracker_script_path: str = "/js/rta.js") -> None:
        self._stream = _StreamResource(feed)
        self._cache: dict[str, bytes] = {}  # the files never change while running
        self._cache["index.html"] = page_with(tracker_script_path)

    @app.route("/", methods=["GET"])
    @app.route("/dashboard", methods=["GET"])
    def page(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Security-Policy", _PAGE_POLICY)
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        return self._file(request, "index.html", cache=b"no-cache")

    @app.route("/dashboard/assets/<file>", methods=["GET"])
    def asset(self, request: IRequest, file: str) -> bytes:
        if not _ASSET_NAME.fullmatch(file):  # no dots beyond the suffix: no way out of static/
            raise NotFound()
        return self._file(request, file, cache=b"no-cache")

    @app.route("/favicon.ico", methods=["GET"])
    def favicon(self, request: IRequest) -> bytes:
        # An SVG under the name browsers ask for by themselves (they go by Content-Type).
        return self._file(request, "favicon.svg", cache=_ICON_CACHE)

    @app.route("/api/v1/stream", methods=["GET"])
    def stream(self, request: IRequest) -> Resource | bytes:
        if request.method == b"HEAD":  # headers only; a HEAD stream would never end
            request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
            request.setHeader(b"Cache-Control", b"no-store")
            return b""
        return self._stream

    def _file(self, request: IRequest, name: str, *, cache: bytes) -> bytes:
        body = self._cache.get(name)
        if body is None:
            try:
                body = _static(name)
            except (FileNotFoundError, IsADirectoryError):
                raise NotFound() from None
            self._cache[name] = body
        request.setHeader(b"Content-Type", _CONTENT_TYPES[name.rsplit(".", 1)[1]])
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Cache-Control", cache)
        return body
