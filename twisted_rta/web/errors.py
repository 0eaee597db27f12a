"""Klein error handlers that turn routing failures and ApiError into the JSON envelope."""

from __future__ import annotations

from typing import Any, cast

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from twisted_rta.web.exchange import Exchange
from twisted_rta.web.responses import ApiError, error_payload, json_body

log = Logger()

# Klein calls these as methods of the app's instance: its protocol names the first
# parameter ``self``, so they take it under that name although they never use it.


def not_found(request: IRequest) -> bytes:
    """The 404 of a path no route takes (the edge's fallback and each app's own)."""
    path = request.path.decode("utf-8", "replace")
    return json_body(request, error_payload("not_found", f"no route for {path}"), 404)


def _not_found(self: Any, request: IRequest, failure: Failure) -> bytes:
    return not_found(request)


def _method_not_allowed(self: Any, request: IRequest, failure: Failure) -> bytes:
    error = cast(MethodNotAllowed, failure.value)
    allowed = sorted(set(error.valid_methods or ()))
    request.setHeader(b"Allow", ", ".join(allowed).encode("ascii"))
    method = request.method.decode("ascii", "replace")
    path = request.path.decode("utf-8", "replace")
    message = f"{method} is not allowed on {path}; allowed: {', '.join(allowed)}"
    return json_body(request, error_payload("method_not_allowed", message, allowed=allowed), 405)


def _routing_http_error(self: Any, request: IRequest, failure: Failure) -> bytes:
    error = cast(HTTPException, failure.value)
    if isinstance(error, RequestRedirect):
        request.setHeader(b"Location", error.new_url.encode("utf-8"))
    code = (error.name or "http_error").lower().replace(" ", "_")
    status = error.code or 500
    return json_body(request, error_payload(code, error.description or error.name), status)


def _api_error(self: Any, request: IRequest, failure: Failure) -> bytes:
    return cast(ApiError, failure.value).render(request)


def internal_error(request: Exchange, failure: Failure) -> bytes:
    """The 500 of an unexpected error, on either lane: the traceback goes to the log, never
    to the client."""
    log.failure(
        "unhandled error in {method} {path}",
        failure,
        method=request.method.decode("ascii", "replace"),
        path=request.path.decode("utf-8", "replace"),
    )
    return json_body(request, error_payload("internal_error", "internal server error"), 500)


def _unexpected(self: Any, request: IRequest, failure: Failure) -> bytes:
    return internal_error(cast(Exchange, request), failure)


def add_json_error_handlers(app: Klein) -> Klein:
    """Install the shared error envelope on one Klein app (each mounted app needs it)."""
    app.handle_errors(NotFound)(_not_found)
    app.handle_errors(MethodNotAllowed)(_method_not_allowed)
    app.handle_errors(HTTPException)(_routing_http_error)
    app.handle_errors(ApiError)(_api_error)
    app.handle_errors(Exception)(_unexpected)
    return app
