"""JSON bodies and the one error envelope shared by every route."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twisted_rta.web.exchange import ResponseHead

JSON_CONTENT_TYPE = b"application/json; charset=utf-8"


def encode_json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_body(request: ResponseHead, payload: Any, status: int = 200) -> bytes:
    """Set status and JSON headers on ``request``; return the encoded body.

    The length is known, so it is declared: twisted.web would otherwise send a one-piece
    body chunked, and both lanes of the edge frame their answers alike."""
    return encoded_json_body(request, encode_json(payload), status)


def encoded_json_body(request: ResponseHead, body: bytes, status: int = 200) -> bytes:
    """``json_body`` for a body already encoded (built in pieces by the caller)."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", JSON_CONTENT_TYPE)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


def plain_body(request: ResponseHead, body: bytes, status: int = 200) -> bytes:
    """A short ``text/plain`` answer (Plausible's ``ok``)."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


def error_payload(code: str, message: str, **details: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"error": True, "code": code, "message": message}
    payload.update((key, value) for key, value in details.items() if value is not None)
    return payload


class ApiError(Exception):
    """Raised by handlers; rendered as the error envelope with ``status``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.details = details

    def render(self, request: ResponseHead) -> bytes:
        for name, value in self.headers.items():
            request.setHeader(name.encode("ascii"), value.encode("ascii"))
        return json_body(
            request, error_payload(self.code, self.message, **self.details), self.status
        )
