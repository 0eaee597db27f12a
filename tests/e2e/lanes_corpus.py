"""The corpus of the lanes differential test (test_lanes_differential.py): raw HTTP/1.x
exchanges, a blocking raw-socket client that records every byte of the answers, and the
normalisation that makes two daemons' answers comparable.

Each case opens a fresh connection (pipelining and keep-alive cases send several requests on
it), runs its steps (send bytes; read N responses, 1xx interim ones included), optionally
waits for the daemon to close, then half-closes and reads to the end: whatever else the daemon
sends is recorded too. Every socket operation is bounded by ``TIMEOUT``.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import re
import socket
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

TIMEOUT = 10.0
ORIGIN = "https://app.example"
OTHER_ORIGIN = "https://evil.example"
MAX_BODY = 65536
# The events bucket of every key holds EVENTS_BURST events and refills at one per 1000 s;
# the request bucket holds REQUESTS_BURST ingest requests and refills as slowly. The corpus
# keeps its own keys well inside both; the dedicated LIMITED keys exhaust them on purpose.
EVENTS_BURST = 100
REQUESTS_BURST = 200
KEYS = {
    "ingest": ("ingest-key-0123456789abcdef", ["ingest"]),
    "query": ("query-key-0123456789abcdef", ["read"]),
    "events_limited": ("events-limited-0123456789", ["ingest"]),
    "requests_limited": ("requests-limited-0123456789", ["ingest"]),
    "segment": ("segment-write-key-0123456789", ["ingest"]),  # the Segment cases' own budget
    "posthog": ("phc_posthog-project-key-0123456789", ["ingest"]),  # the PostHog cases' own
}
INGEST_KEY = KEYS["ingest"][0]
QUERY_KEY = KEYS["query"][0]
VALID_REQUEST_ID = "client-req.42_abc"

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def daemon_config(*, fast_lane: bool) -> dict[str, Any]:
    """The config of both daemons; only ``server.fast_lane`` differs."""
    return {
        "server": {"fast_lane": fast_lane, "request_timeout": "10s"},
        "store": {"url": "memory:"},
        "journal": {"enabled": False},
        "limits": {"max_body_bytes": MAX_BODY},
        "cors": {"ingest": {"allowed_origins": [ORIGIN]}},
        "auth": {
            "keys": [
                {"name": name, "key": key, "scopes": scopes} for name, (key, scopes) in KEYS.items()
            ]
        },
        "rate_limits": {
            "ingest": {
                "requests_per_second": 0.001,
                "requests_burst": REQUESTS_BURST,
                "events_per_second": 0.001,
                "events_burst": EVENTS_BURST,
            }
        },
    }


# -- the corpus ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    """Read ``count`` responses (an interim 1xx counts as one); ``head``: answers to HEAD."""

    count: int = 1
    head: bool = False


Step = bytes | Read


@dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[Step, ...]
    # The statuses the reference lane must answer, in order (a check that the case tests
    # what it says; the differential part compares the lanes whatever they answer); empty
    # where twisted answers nothing and drops the connection.
    expect: tuple[int, ...]
    closes: bool = False  # the daemon must close the connection after the answers


def request(
    method: str,
    target: str,
    body: bytes | None = None,
    *,
    key: str | None = INGEST_KEY,
    headers: Sequence[tuple[str, str]] = (),
    version: str = "HTTP/1.1",
    length: bool = True,
    host: bool = True,
) -> bytes:
    """One request head (+ body); ``length``: send a Content-Length for ``body``."""
    lines = [f"{method} {target} {version}"]
    if host:
        lines.append("Host: rta.test")
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None and length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def post(target: str, body: bytes, **options: Any) -> bytes:
    headers = [("Content-Type", "application/json"), *options.pop("headers", ())]
    return request("POST", target, body, headers=headers, **options)


def chunked(body: bytes, size: int) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def event(index: int = 0, **extra: Any) -> dict[str, Any]:
    return {"type": "pageview", "user_id": f"u{index}", "properties": {"page": "/x"}, **extra}


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def padded_batch(size: int) -> bytes:
    """A valid batch of exactly ``size`` bytes (JSON whitespace pads it)."""
    core = encode([event(i) for i in range(3)])
    return core[:-1] + b" " * (size - len(core)) + b"]"


ONE = encode(event())
BATCH = encode([event(1), event(2), {"type": "click", "properties": {"element": "buy"}}])
PARTIAL = encode([event(3), {"type": ""}, {"user_id": "no type"}, event(4), 17])
ALL_INVALID = encode([{"type": ""}, {"nope": 1}, "x"])
EVENTS = "/api/v1/events"
BATCH_PATH = "/api/v1/events/batch"
JSON_TYPE = ("Content-Type", "application/json")
TEXT_TYPE = ("Content-Type", "text/plain")
BROWSER = ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0")
CRAWLER = ("User-Agent", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
PLAUSIBLE = encode(
    {"n": "pageview", "u": "https://example.com/pricing?x=1", "d": "example.com", "r": None}
)


def corpus() -> list[Case]:
    chunked_head = [JSON_TYPE, ("Transfer-Encoding", "chunked")]
    over = padded_batch(MAX_BODY + 1)
    cases = [
        Case("single event", (post(EVENTS, ONE), Read()), (202,)),
        Case(
            "plausible pageview, text/plain, no key",
            (request("POST", "/api/event", PLAUSIBLE, headers=[TEXT_TYPE, BROWSER]), Read()),
            (202,),
        ),
        Case(
            "plausible event from a crawler (answered, not counted)",
            (request("POST", "/api/event", PLAUSIBLE, headers=[TEXT_TYPE, CRAWLER]), Read()),
            (202,),
        ),
        Case(
            "plausible body without url",
            (
                request(
                    "POST",
                    "/api/event",
                    encode({"n": "pageview", "d": "example.com"}),
                    headers=[TEXT_TYPE, BROWSER],
                ),
                Read(),
            ),
            (400,),
        ),
        Case(
            "plausible preflight from an allowed origin",
            (
                request(
                    "OPTIONS",
                    "/api/event",
                    headers=[("Origin", ORIGIN), ("Access-Control-Request-Method", "POST")],
                ),
                Read(),
            ),
            (204,),
        ),
        Case("batch", (post(BATCH_PATH, BATCH), Read()), (202,)),
        Case("batch, some invalid (partial accept)", (post(BATCH_PATH, PARTIAL), Read()), (202,)),
        Case("batch, all invalid", (post(BATCH_PATH, ALL_INVALID), Read()), (400,)),
        Case("batch, empty array", (post(BATCH_PATH, b"[]"), Read()), (400,)),
        Case("batch of an object", (post(BATCH_PATH, ONE), Read()), (400,)),
        Case("single of an array", (post(EVENTS, BATCH), Read()), (400,)),
        Case("single, invalid event", (post(EVENTS, b'{"type": ""}'), Read()), (400,)),
        Case("malformed JSON, single", (post(EVENTS, b'{"type": "x",'), Read()), (400,)),
        Case("malformed JSON, batch", (post(BATCH_PATH, b"[{]"), Read()), (400,)),
        Case("invalid UTF-8", (post(EVENTS, b'{"type":"\xff"}'), Read()), (400,)),
        Case(
            "text/plain (a sendBeacon body)",
            (request("POST", EVENTS, ONE, headers=[("Content-Type", "text/plain")]), Read()),
            (202,),
        ),
        Case(
            "form content type",
            (
                request(
                    "POST",
                    EVENTS,
                    ONE,
                    headers=[("Content-Type", "application/x-www-form-urlencoded")],
                ),
                Read(),
            ),
            (202,),
        ),
        Case("no content type", (request("POST", EVENTS, ONE), Read()), (202,)),
        Case("empty body, Content-Length: 0", (post(EVENTS, b""), Read()), (400,)),
        Case("empty batch body", (post(BATCH_PATH, b""), Read()), (400,)),
        Case(
            "no body, no Content-Length",
            (request("POST", EVENTS, None, headers=[JSON_TYPE]), Read()),
            (400,),
        ),
        Case(
            "body exactly at the limit",
            (post(BATCH_PATH, padded_batch(MAX_BODY)), Read()),
            (202,),
        ),
        Case(
            "Content-Length over the limit (head only)",
            (
                request("POST", EVENTS, None, headers=[JSON_TYPE, ("Content-Length", "10000000")]),
                Read(),
            ),
            (413,),
            closes=True,
        ),
        Case(
            "Content-Length one over the limit, with the body",
            (post(BATCH_PATH, over), Read()),
            (413,),
            closes=True,
        ),
        Case(
            "chunked over the limit",
            (
                request("POST", BATCH_PATH, None, headers=chunked_head)
                + chunked(over, 8192)[: -len(b"0\r\n\r\n")],
                Read(),
            ),
            (413,),
            closes=True,
        ),
        Case(
            "chunked valid body",
            (request("POST", BATCH_PATH, None, headers=chunked_head) + chunked(BATCH, 7), Read()),
            (202,),
        ),
        Case(
            "chunked with a trailer",
            (
                request("POST", EVENTS, None, headers=chunked_head)
                + chunked(ONE, 10)[:-2]
                + b"X-Trailer: 1\r\n\r\n",
                Read(),
            ),
            (202,),
        ),
        Case(
            "chunked, bad chunk size",
            (
                request("POST", EVENTS, None, headers=chunked_head) + b"zz\r\n{}\r\n0\r\n\r\n",
                Read(),
            ),
            (400,),
            closes=True,
        ),
        Case(
            "Content-Length and Transfer-Encoding both",
            (
                request(
                    "POST",
                    EVENTS,
                    None,
                    headers=[*chunked_head, ("Content-Length", str(len(ONE)))],
                )
                + chunked(ONE, 64),
                Read(),
            ),
            (400,),
            closes=True,
        ),
        Case(
            "conflicting Content-Lengths",
            (
                request(
                    "POST",
                    EVENTS,
                    None,
                    headers=[
                        JSON_TYPE,
                        ("Content-Length", str(len(ONE))),
                        ("Content-Length", str(len(ONE) + 1)),
                    ],
                )
                + ONE,
                Read(),
            ),
            (400,),
            closes=True,
        ),
        Case(
            "Expect: 100-continue",
            (
                request(
                    "POST",
                    EVENTS,
                    None,
                    headers=[
                        JSON_TYPE,
                        ("Expect", "100-continue"),
                        ("Content-Length", str(len(ONE))),
                    ],
                ),
                Read(),  # the interim 100 Continue
                ONE,
                Read(),
            ),
            (100, 202),
        ),
        Case(
            "HTTP/1.0 (closes after)",
            (post(EVENTS, ONE, version="HTTP/1.0"), Read()),
            (202,),
            closes=True,
        ),
        Case(
            "HTTP/1.0 asking for keep-alive (twisted closes anyway)",
            (
                post(BATCH_PATH, BATCH, version="HTTP/1.0", headers=[("Connection", "keep-alive")]),
                Read(),
            ),
            (202,),
            closes=True,
        ),
        Case(
            "Connection: close",
            (post(EVENTS, ONE, headers=[("Connection", "close")]), Read()),
            (202,),
            closes=True,
        ),
        Case(
            "no Host header",
            (post(EVENTS, ONE, host=False), Read()),
            (202,),
        ),
        Case(
            "pipelined: ingest, then GET /health",
            (post(EVENTS, ONE) + request("GET", "/health", key=None), Read(2)),
            (202, 200),
        ),
        Case(
            "pipelined: GET /health, then ingest",
            (request("GET", "/health", key=None) + post(EVENTS, ONE), Read(2)),
            (200, 202),
        ),
        Case(
            "pipelined: invalid, batch, metric query, single",
            (
                post(EVENTS, b"{")
                + post(BATCH_PATH, BATCH)
                + request("GET", "/api/v1/metrics/nope", key=QUERY_KEY)
                + post(EVENTS, ONE),
                Read(4),
            ),
            (400, 202, 404, 202),
        ),
        Case(
            "pipelined: ingest, then one over the limit",
            (post(EVENTS, ONE) + post(BATCH_PATH, over), Read(2)),
            (202, 413),
            closes=True,
        ),
        Case(
            "keep-alive: ingest, read, ingest again",
            (post(EVENTS, ONE), Read(), post(BATCH_PATH, PARTIAL), Read()),
            (202, 202),
        ),
        Case("missing key", (post(EVENTS, ONE, key=None), Read()), (401,)),
        Case("unknown key", (post(EVENTS, ONE, key="not-a-key-0123456789"), Read()), (401,)),
        Case("query-scope key on ingest", (post(EVENTS, ONE, key=QUERY_KEY), Read()), (403,)),
        Case("query-scope key on batch", (post(BATCH_PATH, BATCH, key=QUERY_KEY), Read()), (403,)),
        Case(
            "X-API-Key header",
            (post(EVENTS, ONE, key=None, headers=[("X-API-Key", INGEST_KEY)]), Read()),
            (202,),
        ),
        Case(
            "api_key in the query",
            (post(f"{EVENTS}?api_key={INGEST_KEY}", ONE, key=None), Read()),
            (202,),
        ),
        Case(
            "wrong api_key in the query",
            (post(f"{BATCH_PATH}?api_key=nope", BATCH, key=None), Read()),
            (401,),
        ),
        Case(
            "beacon: text/plain, key in the query, allowed Origin",
            (
                request(
                    "POST",
                    f"{EVENTS}?api_key={INGEST_KEY}",
                    ONE,
                    key=None,
                    headers=[("Content-Type", "text/plain;charset=UTF-8"), ("Origin", ORIGIN)],
                ),
                Read(),
            ),
            (202,),
        ),
        Case(
            "preflight, allowed origin",
            (
                request(
                    "OPTIONS",
                    EVENTS,
                    key=None,
                    headers=[
                        ("Origin", ORIGIN),
                        ("Access-Control-Request-Method", "POST"),
                        ("Access-Control-Request-Headers", "content-type"),
                    ],
                ),
                Read(),
            ),
            (204,),
        ),
        Case(
            "preflight, disallowed origin",
            (
                request(
                    "OPTIONS",
                    BATCH_PATH,
                    key=None,
                    headers=[("Origin", OTHER_ORIGIN), ("Access-Control-Request-Method", "POST")],
                ),
                Read(),
            ),
            (403,),
        ),
        Case("OPTIONS without Origin", (request("OPTIONS", EVENTS, key=None), Read()), (204,)),
        Case(
            "POST with the allowed Origin",
            (post(EVENTS, ONE, headers=[("Origin", ORIGIN)]), Read()),
            (202,),
        ),
        Case(
            "POST with a disallowed Origin",
            (post(BATCH_PATH, BATCH, headers=[("Origin", OTHER_ORIGIN)]), Read()),
            (202,),
        ),
        Case(
            "allowed Origin, missing key",
            (post(EVENTS, ONE, key=None, headers=[("Origin", ORIGIN)]), Read()),
            (401,),
        ),
        Case("GET /api/v1/events", (request("GET", EVENTS), Read()), (405,)),
        Case("HEAD /api/v1/events", (request("HEAD", EVENTS), Read(head=True)), (405,)),
        Case("PUT /api/v1/events/batch", (request("PUT", BATCH_PATH, ONE), Read()), (405,)),
        Case(
            "GET /api/v1/events without a key", (request("GET", EVENTS, key=None), Read()), (401,)
        ),
        Case("trailing slash", (post(EVENTS + "/", ONE), Read()), (403,)),
        Case("trailing slash, query key", (post(EVENTS + "/", ONE, key=QUERY_KEY), Read()), (404,)),
        Case("batch, trailing slash", (post(BATCH_PATH + "/", BATCH), Read()), (403,)),
        Case("query string", (post(EVENTS + "?x=1", ONE), Read()), (202,)),
        Case("batch, query string", (post(BATCH_PATH + "?x=1&y", BATCH), Read()), (202,)),
        Case("percent-encoded path", (post("/api/v1/%65vents", ONE), Read()), (202,)),
        Case("double slash", (post("/api/v1//events", ONE), Read()), (403,)),
        Case(
            "absolute-form target",
            (post("http://rta.test/api/v1/events", ONE), Read()),
            (403,),  # twisted takes the whole target as the path: an unknown route
        ),
        Case(
            "X-Request-ID echoed",
            (post(EVENTS, ONE, headers=[("X-Request-ID", VALID_REQUEST_ID)]), Read()),
            (202,),
        ),
        Case(
            "X-Request-ID echoed on an error",
            (post(BATCH_PATH, b"[", headers=[("X-Request-ID", VALID_REQUEST_ID)]), Read()),
            (400,),
        ),
        Case(
            "invalid X-Request-ID replaced",
            (post(EVENTS, ONE, headers=[("X-Request-ID", "bad id with spaces")]), Read()),
            (202,),
        ),
        Case(
            "too long X-Request-ID replaced",
            (post(BATCH_PATH, BATCH, headers=[("X-Request-ID", "a" * 129)]), Read()),
            (202,),
        ),
        Case(
            "X-Request-ID on a 413",
            (
                request(
                    "POST",
                    EVENTS,
                    None,
                    headers=[("X-Request-ID", VALID_REQUEST_ID), ("Content-Length", "70000")],
                ),
                Read(),
            ),
            (413,),
            closes=True,
        ),
        Case(
            "too many headers",
            (post(EVENTS, ONE, headers=[(f"X-Many-{i}", "v") for i in range(150)]), Read()),
            (400,),  # twisted.web's bare 400, no body, then it closes
            closes=True,
        ),
        Case(
            "headers over 16 KiB in all",
            (post(EVENTS, ONE, headers=[(f"X-Big-{i}", "b" * 200) for i in range(90)]), Read()),
            (400,),
            closes=True,
        ),
        # A line over twisted's 16 KiB line limit: it drops the connection without an answer.
        Case(
            "one huge header", (post(EVENTS, ONE, headers=[("X-Huge", "h" * 20_000)]), Read()), ()
        ),
        Case("huge request target", (post(EVENTS + "?pad=" + "p" * 20_000, ONE), Read()), ()),
        Case(
            "malformed request line", (b"POST /api/v1/events\r\n\r\n", Read()), (400,), closes=True
        ),
        Case("unknown path, ingest key", (post("/api/v1/nothing", ONE), Read()), (403,)),
        Case(
            "unknown path, query key",
            (request("GET", "/nothing/here", key=QUERY_KEY), Read()),
            (404,),
        ),
        Case("unknown path, no key", (request("GET", "/nothing", key=None), Read()), (401,)),
        Case("GET /health", (request("GET", "/health", key=None), Read()), (200,)),
    ]
    cases += compressed_cases()
    cases += segment_cases()
    cases += posthog_cases()
    cases += rate_limit_cases()
    return cases


def segment_cases() -> list[Case]:
    """Segment's HTTP Tracking API: the write key as Basic auth user or in the body, the
    calls, batches and their aliases, its errors and limits, gzip."""
    key = KEYS["segment"][0]
    basic = ("Authorization", "Basic " + base64.b64encode(f"{key}:".encode()).decode())

    def segment(path: str, body: bytes, *extra: tuple[str, str]) -> bytes:
        return request("POST", f"/v1/{path}", body, key=None, headers=[JSON_TYPE, *extra])

    track = encode({"event": "Signed Up", "userId": "u1", "messageId": "m-1"})
    batch = encode(
        {
            "batch": [
                {"type": "track", "event": "Clicked", "anonymousId": "a1"},
                {"type": "page", "userId": "u1", "properties": {"path": "/p"}},
            ]
        }
    )
    partial = encode({"batch": [{"type": "screen", "userId": "u", "name": "S"}, {"type": "x"}]})
    big = encode({"event": "big", "userId": "u", "properties": {"s": "x" * 40_000}})
    bomb = gzip.compress(b"\0" * 10_000_000)
    gzipped = ("Content-Encoding", "gzip")
    return [
        Case("segment track, Basic auth", (segment("track", track, basic), Read()), (200,)),
        Case(
            "segment page, writeKey in the body",
            (segment("page", encode({"userId": "u", "name": "P", "writeKey": key})), Read()),
            (200,),
        ),
        Case(
            "segment identify, unknown writeKey",
            (segment("identify", encode({"userId": "u", "writeKey": "nope"})), Read()),
            (401,),
        ),
        Case(
            "segment track, a read key",
            (segment("track", track, ("X-API-Key", QUERY_KEY)), Read()),
            (403,),
        ),
        Case(
            "segment track without event",
            (segment("track", encode({"userId": "u"}), basic), Read()),
            (400,),
        ),
        Case("segment batch", (segment("batch", batch, basic), Read()), (200,)),
        Case("segment import", (segment("import", batch, basic), Read()), (200,)),
        Case("segment b, some invalid", (segment("b", partial, basic), Read()), (200,)),
        Case("segment t (analytics-next)", (segment("t", track, basic), Read()), (200,)),
        Case(
            "segment batch, none valid",
            (segment("batch", encode({"batch": [{"type": "x"}]}), basic), Read()),
            (400,),
        ),
        Case("segment call over 32 KB", (segment("track", big, basic), Read()), (413,)),
        Case(
            "gzip segment track",
            (segment("track", gzip.compress(track), basic, gzipped), Read()),
            (200,),
        ),
        Case("gzip bomb, segment batch", (segment("batch", bomb, basic, gzipped), Read()), (413,)),
        Case(
            "segment preflight from an allowed origin",
            (
                request(
                    "OPTIONS",
                    "/v1/batch",
                    key=None,
                    headers=[("Origin", ORIGIN), ("Access-Control-Request-Method", "POST")],
                ),
                Read(),
            ),
            (204,),
        ),
    ]


def posthog_cases() -> list[Case]:
    """PostHog's capture routes: the key in the body or a header, the body shapes, gzip-js,
    a resent uuid, its errors and limits."""
    key = KEYS["posthog"][0]

    def capture(path: str, body: bytes, *extra: tuple[str, str]) -> bytes:
        return request("POST", path, body, key=None, headers=[JSON_TYPE, *extra])

    one = encode(
        {
            "api_key": key,
            "event": "$pageview",
            "distinct_id": "d1",
            "uuid": "ph-1",
            "properties": {"$current_url": "https://e.example/a", "$session_id": "s"},
        }
    )
    batch = encode({"api_key": key, "batch": [{"event": "x", "distinct_id": "d"}] * 2})
    array = encode([{"event": "y", "properties": {"token": key, "distinct_id": "d"}}])
    partial = encode({"api_key": key, "batch": [{"event": "x"}, {"event": "z", "distinct_id": 7}]})
    return [
        Case("posthog capture", (capture("/capture/", one), Read()), (200,)),
        Case("posthog capture, the same uuid again", (capture("/capture", one), Read()), (200,)),
        Case("posthog batch", (capture("/batch/", batch), Read()), (200,)),
        Case("posthog e, an array", (capture("/e/", array), Read()), (200,)),
        Case(
            "posthog i/v0/e, gzip-js",
            (capture("/i/v0/e/?compression=gzip-js&_=1", gzip.compress(array)), Read()),
            (200,),
        ),
        Case(
            "posthog e, gzip said only by its bytes",
            (capture("/e/", gzip.compress(array)), Read()),
            (200,),
        ),
        Case("posthog batch, some invalid", (capture("/batch", partial), Read()), (200,)),
        Case(
            "posthog batch, none valid",
            (capture("/batch", encode({"api_key": key, "batch": [{"event": "x"}]})), Read()),
            (400,),
        ),
        Case(
            "posthog capture, an unknown key",
            (capture("/capture", encode({"api_key": "nope", "event": "x"})), Read()),
            (401,),
        ),
        Case(
            "posthog capture, a read key header",
            (capture("/e", array, ("X-API-Key", QUERY_KEY)), Read()),
            (403,),
        ),
        Case("posthog, unreadable and no key", (capture("/e/", b"{nope"), Read()), (401,)),
        Case(
            "posthog, gzip-js that is not gzip",
            (capture("/e/?compression=gzip-js", array), Read()),
            (400,),
        ),
    ]


def compressed_cases() -> list[Case]:
    """Content-Encoding on the ingest routes: what is taken, the bomb (10 MB of zeros in
    ~10 KB: within the limit as sent, 413 once inflated past it, the connection kept), a
    corrupt stream, codings refused."""
    bomb = gzip.compress(b"\0" * 10_000_000)
    assert len(bomb) < MAX_BODY
    gzip_head = [JSON_TYPE, ("Content-Encoding", "gzip")]
    plausible_gzip = [TEXT_TYPE, BROWSER, ("Content-Encoding", "gzip")]
    return [
        Case(
            "gzip batch",
            (request("POST", BATCH_PATH, gzip.compress(BATCH), headers=gzip_head), Read()),
            (202,),
        ),
        Case(
            "deflate single event",
            (
                request(
                    "POST",
                    EVENTS,
                    zlib.compress(ONE),
                    headers=[JSON_TYPE, ("Content-Encoding", "Deflate")],
                ),
                Read(),
            ),
            (202,),
        ),
        Case(
            "gzip plausible pageview",
            (
                request("POST", "/api/event", gzip.compress(PLAUSIBLE), headers=plausible_gzip),
                Read(),
            ),
            (202,),
        ),
        Case(
            "gzip bomb, then a good request on the same connection",
            (
                request("POST", BATCH_PATH, bomb, headers=gzip_head),
                Read(),
                post(EVENTS, ONE),
                Read(),
            ),
            (413, 202),
        ),
        Case(
            "gzip bomb, single event",
            (request("POST", EVENTS, bomb, headers=gzip_head), Read()),
            (413,),
        ),
        Case(
            "gzip bomb, plausible",
            (request("POST", "/api/event", bomb, headers=plausible_gzip), Read()),
            (413,),
        ),
        Case(
            "gzip, chunked, inflating to exactly the limit",
            (
                request(
                    "POST",
                    BATCH_PATH,
                    None,
                    headers=[*gzip_head, ("Transfer-Encoding", "chunked")],
                )
                + chunked(gzip.compress(padded_batch(MAX_BODY)), 1000),
                Read(),
            ),
            (202,),
        ),
        Case(
            "gzip header on a plain body",
            (request("POST", EVENTS, ONE, headers=gzip_head), Read()),
            (400,),
        ),
        Case(
            "truncated gzip batch",
            (request("POST", BATCH_PATH, gzip.compress(BATCH)[:-5], headers=gzip_head), Read()),
            (400,),
        ),
        Case(
            "two gzip members",
            (
                request(
                    "POST",
                    EVENTS,
                    gzip.compress(ONE[:5]) + gzip.compress(ONE[5:]),
                    headers=gzip_head,
                ),
                Read(),
            ),
            (400,),
        ),
        Case(
            "unknown content coding",
            (
                request("POST", BATCH_PATH, BATCH, headers=[JSON_TYPE, ("Content-Encoding", "br")]),
                Read(),
            ),
            (415,),
        ),
        Case(
            "stacked content codings",
            (
                request(
                    "POST",
                    EVENTS,
                    gzip.compress(gzip.compress(ONE)),
                    headers=[*gzip_head, ("Content-Encoding", "gzip")],
                ),
                Read(),
            ),
            (415,),
        ),
        Case(
            "Content-Encoding: identity",
            (
                request("POST", EVENTS, ONE, headers=[JSON_TYPE, ("Content-Encoding", "identity")]),
                Read(),
            ),
            (202,),
        ),
    ]


# twisted.web's HTTPChannel sends its automatic "100 Continue" after the Request's gotLength
# ran, even when gotLength already answered 413 and is closing: a stray interim response after
# the final one, unless RTAChannel drops the Expect header first (web/site.py). Its own test
# in test_lanes_differential checks that on both lanes, not only that they agree.
EXPECT_OVER_LIMIT = Case(
    "Expect: 100-continue over the limit",
    (
        request(
            "POST",
            BATCH_PATH,
            None,
            headers=[JSON_TYPE, ("Expect", "100-continue"), ("Content-Length", "70000")],
        ),
        Read(),
    ),
    (413,),
    closes=True,
)


def rate_limit_cases() -> list[Case]:
    """The dedicated keys trip 429: the events bucket (the ingest handler's refusal) and the
    request bucket (the edge's), both with Retry-After."""
    events_key = KEYS["events_limited"][0]
    requests_key = KEYS["requests_limited"][0]
    full = encode([event(i) for i in range(EVENTS_BURST)])
    spend = b"".join(post(EVENTS, b"{", key=requests_key) for _ in range(REQUESTS_BURST))
    return [
        Case(
            "events bucket emptied, then 429",
            (
                post(BATCH_PATH, full, key=events_key),
                Read(),
                post(EVENTS, ONE, key=events_key),
                Read(),
                post(BATCH_PATH, BATCH, key=events_key),
                Read(),
            ),
            (202, 429, 429),
        ),
        Case(
            "request bucket emptied, then 429",
            (
                spend,
                Read(REQUESTS_BURST),
                post(EVENTS, ONE, key=requests_key),
                Read(),
                post(BATCH_PATH, BATCH, key=requests_key, headers=[("Origin", ORIGIN)]),
                Read(),
            ),
            (*[400] * REQUESTS_BURST, 429, 429),
        ),
    ]


# -- the raw client ------------------------------------------------------------------------


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)


@dataclass
class Outcome:
    """What a daemon answered to one case."""

    responses: list[Response] = field(default_factory=list)
    # Why reading stopped early ("eof", "timeout", "reset"), None when every Read got one.
    cut: str | None = None
    closed: bool | None = None  # for ``closes`` cases: whether the daemon closed in time
    trailing: bytes = b""  # bytes after the last whole response (none expected)


class _Closed(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise _Closed("timeout") from None
        except ConnectionResetError:
            raise _Closed("reset") from None
        if not data:
            raise _Closed("eof")
        self.buffer += data

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def response(self, head: bool = False) -> Response:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        headers = [(n.strip(), v.strip()) for n, _, v in (line.partition(":") for line in lines)]
        response = Response(version, int(code), reason, headers, b"")
        if head or response.status < 200 or response.status in (204, 304):
            return response
        if (response.header("Transfer-Encoding") or "").lower() == "chunked":
            response.body = self._chunked()
        elif response.header("Content-Length") is not None:
            response.body = self._take(int(response.header("Content-Length") or 0))
        else:  # delimited by the close
            with contextlib.suppress(_Closed):
                while True:
                    self._fill()
            response.body, self.buffer = self.buffer, b""
        return response

    def _chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self._line().split(b";")[0], 16)
            if size == 0:
                while self._line():  # trailers, up to the blank line
                    pass
                return body
            body += self._take(size)
            self._take(2)

    def drain(self) -> str:
        """Read to the end; why it ended."""
        try:
            while True:
                self._fill()
        except _Closed as closed:
            return closed.why


def exchange(port: int, case: Case) -> Outcome:
    """Run ``case`` against the daemon on ``port`` (blocking, every wait bounded)."""
    outcome = Outcome()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        reader = _Reader(sock)
        try:
            for step in case.steps:
                if isinstance(step, Read):
                    for _ in range(step.count):
                        outcome.responses.append(reader.response(step.head))
                else:
                    # The daemon may answer and close before taking it all (a 413).
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        sock.sendall(step)
        except _Closed as closed:
            outcome.cut = closed.why
        if case.closes and outcome.cut is None:
            outcome.closed = reader.drain() in ("eof", "reset")
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        reader.drain()
        outcome.trailing = reader.buffer
    return outcome


# -- comparison ----------------------------------------------------------------------------

# Differ between any two answers by nature: the date, and a generated request id (checked
# to be a UUID4 before it is masked); Retry-After counts down from when the bucket emptied.
_MASKED_HEADERS: dict[str, Callable[[str], str | None]] = {
    "date": lambda value: "<date>",
    "x-request-id": lambda value: "<uuid4>" if _UUID.fullmatch(value) else None,
    "retry-after": lambda value: "<seconds>" if value.isdigit() and int(value) >= 1 else None,
}


def _normal_json(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _normal_json(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal_json(item, key) for item in value]
    if isinstance(value, str):
        if key in ("event_id", "event_ids", "id") and _UUID.fullmatch(value):
            return "<uuid4>"
        if _ISO_TIME.fullmatch(value):
            return "<time>"
    return value


def normal_body(response: Response) -> Any:
    content_type = response.header("Content-Type") or ""
    if content_type.startswith("application/json") and response.body:
        try:
            return _normal_json(json.loads(response.body))
        except ValueError:
            pass
    return response.body.decode("latin-1")


def normal_response(response: Response) -> dict[str, Any]:
    headers = []
    for name, value in response.headers:
        mask = _MASKED_HEADERS.get(name.lower())
        masked = mask(value) if mask is not None else None
        headers.append((name.lower(), value if masked is None else masked))
    return {
        "status": f"{response.version} {response.status} {response.reason}",
        "headers": sorted(headers),
        "body": normal_body(response),
    }


def normal_outcome(outcome: Outcome) -> dict[str, Any]:
    return {
        "responses": [normal_response(response) for response in outcome.responses],
        "cut": outcome.cut,
        "closed": outcome.closed,
        "trailing": outcome.trailing.decode("latin-1"),
    }


def render(outcome: Outcome, limit: int | None = None) -> list[str]:
    """The normal form of an outcome as lines (for a diff, or a failure message); with
    ``limit``, at most that many responses are shown (the first and the last ones)."""
    normal = normal_outcome(outcome)
    responses: list[Any] = list(enumerate(normal["responses"], 1))
    if limit is not None and len(responses) > limit:
        skipped = len(responses) - limit
        responses = [*responses[: limit // 2], (None, skipped), *responses[-(limit - limit // 2) :]]
    lines = []
    for number, response in responses:
        if number is None:
            lines.append(f"... {response} more responses ...")
            continue
        lines.append(f"response {number}: {response['status']}")
        lines += [f"  {name}: {value}" for name, value in response["headers"]]
        body = response["body"]
        shown = json.dumps(body, ensure_ascii=False, sort_keys=True) if body != "" else "(empty)"
        lines.append(f"  body: {shown}")
    lines.append(f"cut: {normal['cut']}  closed: {normal['closed']}")
    lines.append(f"trailing: {normal['trailing']!r}")
    return lines


def describe(outcome: Outcome, limit: int = 6) -> Iterator[str]:
    """A readable (shortened) account of an outcome for a failure message."""
    for line in render(outcome, limit):
        yield line if len(line) <= 1500 else line[:1500] + "..."
