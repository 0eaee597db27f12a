"""Compressed request bodies: the one content coding a request's ``Content-Encoding`` names,
and the body inflated from it without ever inflating more than the body limit plus one byte.

``gzip`` (``x-gzip``, its RFC 9110 alias) and ``deflate`` (the zlib format, RFC 1950, as
RFC 9110 defines it; raw deflate is refused as invalid) are taken; ``identity`` means none.
A gzip body must be one member: RFC 1952 allows several in a row, but clients compress a
body as one stream and each member costs a fresh inflater, so they are refused like any
bytes after the stream. Answers: 415 ``unsupported_encoding`` for another coding or codings
stacked, 400 ``invalid_encoding`` for a corrupt or truncated stream or bytes after it, 413
``body_too_large`` once the inflated bytes pass the limit.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from twisted_rta.web.exchange import RawHeaders
from twisted_rta.web.responses import ApiError

GZIP = 16 + zlib.MAX_WBITS  # zlib's wbits for a gzip header and trailer
ZLIB = zlib.MAX_WBITS  # and for the zlib wrapper
_WBITS = {b"gzip": GZIP, b"x-gzip": GZIP, b"deflate": ZLIB}
_NAMES = {GZIP: "gzip", ZLIB: "deflate"}
_GZIP_MAGIC = b"\x1f\x8b"
# What a 415 names as taken (RFC 7694: Accept-Encoding on a response lists the codings the
# resource accepts in requests).
ACCEPTED_CODINGS = "gzip, deflate"
_SHOWN = 64  # coding names are echoed in a message, cut to this many characters


def content_coding(values: Sequence[bytes] | None) -> int | None:
    """The zlib ``wbits`` of the one content coding ``values`` (every Content-Encoding
    header of the request) name, or None for a body sent as is (no header, ``identity``).
    Names are case-insensitive; a list is codings applied in order (RFC 9110 8.4)."""
    if not values:
        return None
    names = [
        name
        for value in values
        for name in (part.strip().lower() for part in value.split(b","))
        if name and name != b"identity"
    ]
    if not names:
        return None
    for name in names:
        if name not in _WBITS:
            raise _unsupported(f'the content coding "{_shown(name)}" is not supported')
    if len(names) > 1:
        # Each layer would multiply the inflation work, and one is all a body needs.
        listed = _shown(b", ".join(names))
        raise _unsupported(f"stacked content codings ({listed}) are not supported")
    return _WBITS[names[0]]


def inflate(body: bytes, wbits: int, limit: int) -> bytes:
    """``body`` inflated, or its first ``limit + 1`` inflated bytes when it holds more: no
    more is inflated then, so a decompression bomb costs at most the limit's work and
    memory. A corrupt or truncated stream, or bytes after it (another gzip member too),
    raise 400 ``invalid_encoding``."""
    inflater = zlib.decompressobj(wbits)
    pieces: list[bytes] = []
    produced = 0
    data = body
    while not inflater.eof:
        try:
            # max_length bounds this call's output (0 would mean unbounded; room is >= 1).
            piece = inflater.decompress(data, limit + 1 - produced)
        except zlib.error as error:
            reason = str(error).rpartition(": ")[2]  # "Error -3 while ...: <reason>"
            raise _invalid(f"the body is not valid {_NAMES[wbits]} ({reason})") from None
        pieces.append(piece)
        produced += len(piece)
        if produced > limit:
            return b"".join(pieces)
        tail = inflater.unconsumed_tail
        if not piece and len(tail) == len(data) and not inflater.eof:
            raise _invalid(f"the {_NAMES[wbits]} body ends before its stream does")
        data = tail
    extra = inflater.unused_data
    if extra:
        # Several gzip members are valid gzip (RFC 1952 2.2) but refused: each costs a
        # fresh inflater (~15 us), so a 1 MiB body of empty members held the reactor ~0.8 s.
        what = "another gzip member" if extra.startswith(_GZIP_MAGIC) else "other data"
        raise _invalid(
            f"the body goes on after its {_NAMES[wbits]} stream ({what}, "
            f"{len(extra)} B); send one stream"
        )
    return b"".join(pieces)


def decoded_body(
    headers: RawHeaders, body: bytes, limit: int, *, gzip_without_header: bool = False
) -> bytes:
    """The body as its ``Content-Encoding`` says to read it, within ``limit`` bytes once
    inflated (the same limit as the bytes on the wire: what the decoder is handed is bounded
    alike whichever way it came). ``gzip_without_header``: a body sent without the header
    is gzip (PostHog's ``?compression=gzip-js``: posthog-js names it in the query)."""
    wbits = content_coding(headers.getRawHeaders(b"Content-Encoding"))
    if wbits is None and gzip_without_header:
        wbits = GZIP
    if wbits is None:
        return body
    inflated = inflate(body, wbits, limit)
    if len(inflated) > limit:
        raise ApiError(
            413,
            "body_too_large",
            f"the request body exceeds the limit of {limit} bytes once decompressed",
            limit=limit,
        )
    return inflated


def _shown(names: bytes) -> str:
    text = names.decode("latin-1")
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _unsupported(message: str) -> ApiError:
    return ApiError(
        415,
        "unsupported_encoding",
        f"{message}; send the body as is, or compressed once with gzip or deflate",
        headers={"Accept-Encoding": ACCEPTED_CODINGS},
    )


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_encoding", message)
