"""Klein error handlers that turn routing failures and ApiError into the JSON envelope."""

from __future__ import annotations

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from twisted_rta.web.responses import ApiError, error_payload, json_body

log = Logger()


def _not_found(instance: object, request: IRequest, failure: Failure) -> bytes:
    path = request.path.decode("utf-8", "replace")
    return json_body(request, error_payload("not_found", f"no route for {path}"), 404)


def _method_not_allowed(instance: object, request: IRequest, failure: Failure) -> bytes:
    allowed = sorted(set(failure.value.valid_methods or ()))
    request.setHeader(b"Allow", ", ".join(allowed).encode("ascii"))
    method = request.method.decode("ascii", "replace")
    path = request.path.decode("utf-8", "replace")
    message = f"{method} is not allowed on {path}; allowed: {', '.join(allowed)}"
    return json_body(request, error_payload("method_not_allowed", message, allowed=allowed), 405)


def _routing_http_error(instance: object, request: IRequest, failure: Failure) -> bytes:
    error = failure.value
    if isinstance(error, RequestRedirect):
        request.setHeader(b"Location", error.new_url.encode("utf-8"))
    code = (error.name or "http_error").lower().replace(" ", "_")
    return json_body(request, error_payload(code, error.description or error.name), error.code)


def _api_error(instance: object, request: IRequest, failure: Failure) -> bytes:
    return failure.value.render(request)


def _unexpected(instance: object, request: IRequest, failure: Failure) -> bytes:
    # The traceback goes to the log, never to the client.
    log.failure(
        "unhandled error in {method} {path}",
        failure,
        method=request.method.decode("ascii", "replace"),
        path=request.path.decode("utf-8", "replace"),
    )
    return json_body(request, error_payload("internal_error", "internal server error"), 500)


def add_json_error_handlers(app: Klein) -> Klein:
    """Install the shared error envelope on one Klein app (each mounted app needs it)."""
    app.handle_errors(NotFound)(_not_found)
    app.handle_errors(MethodNotAllowed)(_method_not_allowed)
    app.handle_errors(HTTPException)(_routing_http_error)
    app.handle_errors(ApiError)(_api_error)
    app.handle_errors(Exception)(_unexpected)
    return app
