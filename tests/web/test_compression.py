"""Compressed request bodies: the module on its own (the coding a request names, inflation
bounded by the limit), then every ingest route on both lanes through the real composition
root, with real bytes on a connection, and the counters of what they refused."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Daemon, make_daemon
from tests.contract import check as check_contract
from tests.helpers import raw_http
from twisted_rta.web.compression import (
    GZIP,
    ZLIB,
    content_coding,
    decoded_body,
    inflate,
)
from twisted_rta.web.responses import ApiError

LIMIT = 4096


class Headers:
    """Request headers as the edge reads them (``RawHeaders``)."""

    def __init__(self, *values: bytes) -> None:
        self.values = list(values)

    def getRawHeaders(self, name: bytes) -> list[bytes] | None:
        assert name.lower() == b"content-encoding"
        return self.values or None


def refusal(call: Any, *args: Any) -> ApiError:
    with pytest.raises(ApiError) as raised:
        call(*args)
    return raised.value


# -- which coding ----------------------------------------------------------------------------


def test_no_header_and_identity_mean_the_body_as_sent() -> None:
    assert content_coding(None) is None
    assert content_coding([]) is None
    assert content_coding([b"identity"]) is None
    assert content_coding([b" Identity , "]) is None


def test_gzip_its_alias_and_deflate_are_taken_whatever_their_case() -> None:
    assert content_coding([b"gzip"]) == content_coding([b"X-GZIP"]) == GZIP
    assert content_coding([b" Deflate "]) == ZLIB
    assert content_coding([b"identity, gzip"]) == GZIP  # identity is no layer


@pytest.mark.parametrize("value", [b"br", b"zstd", b"compress", b"gzip;q=1"])
def test_another_coding_is_415_naming_it_with_accept_encoding(value: bytes) -> None:
    error = refusal(content_coding, [value])
    assert (error.status, error.code) == (415, "unsupported_encoding")
    assert f'"{value.decode()}"' in error.message
    assert error.headers == {"Accept-Encoding": "gzip, deflate"}


@pytest.mark.parametrize("values", [[b"gzip, gzip"], [b"gzip", b"deflate"], [b"deflate,gzip"]])
def test_stacked_codings_are_415_in_one_header_or_several(values: list[bytes]) -> None:
    error = refusal(content_coding, values)
    assert (error.status, error.code) == (415, "unsupported_encoding")
    assert "stacked" in error.message


def test_a_long_coding_name_is_cut_in_the_message() -> None:
    error = refusal(content_coding, [b"x" * 5000])
    assert len(error.message) < 200


# -- inflating -------------------------------------------------------------------------------


def test_gzip_and_deflate_bodies_inflate_to_what_was_compressed() -> None:
    body = json.dumps([{"type": "pageview", "user_id": f"u{i}"} for i in range(50)]).encode()
    assert inflate(gzip.compress(body), GZIP, LIMIT) == body
    assert inflate(zlib.compress(body), ZLIB, LIMIT) == body
    assert inflate(gzip.compress(b""), GZIP, LIMIT) == b""


def test_a_body_inflating_to_exactly_the_limit_is_taken() -> None:
    body = b"a" * LIMIT
    assert decoded_body(Headers(b"gzip"), gzip.compress(body), LIMIT) == body


def test_one_byte_over_the_limit_is_413_after_inflating_limit_plus_one_bytes() -> None:
    packed = gzip.compress(b"a" * (LIMIT + 1))
    assert len(inflate(packed, GZIP, LIMIT)) == LIMIT + 1
    error = refusal(decoded_body, Headers(b"gzip"), packed, LIMIT)
    assert (error.status, error.code, error.details) == (413, "body_too_large", {"limit": LIMIT})
    assert "decompressed" in error.message


def test_a_bomb_stops_inflating_one_byte_past_the_limit() -> None:
    bomb = gzip.compress(b"\0" * 10_000_000)  # ~10 KB
    assert len(bomb) < 20_000
    produced = inflate(bomb, GZIP, LIMIT)
    assert produced == b"\0" * (LIMIT + 1)  # not 10 MB: the rest is never inflated
    assert len(inflate(zlib.compress(b"\0" * 10_000_000), ZLIB, LIMIT)) == LIMIT + 1


def test_a_plain_body_sent_as_gzip_is_400_invalid_encoding() -> None:
    error = refusal(inflate, b'{"type":"pageview"}', GZIP, LIMIT)
    assert (error.status, error.code) == (400, "invalid_encoding")
    assert error.message == "the body is not valid gzip (incorrect header check)"


def test_a_corrupt_stream_is_400() -> None:
    packed = bytearray(gzip.compress(json.dumps({"type": "x" * 300}).encode()))
    packed[-6] ^= 0xFF  # in the CRC-32 of the trailer
    error = refusal(inflate, bytes(packed), GZIP, LIMIT)
    assert (error.status, error.code) == (400, "invalid_encoding")
    assert "not valid gzip" in error.message


@pytest.mark.parametrize("cut", [1, 8, 20])
def test_a_truncated_stream_is_400(cut: int) -> None:
    packed = gzip.compress(json.dumps({"type": "pageview"}).encode())
    error = refusal(inflate, packed[:-cut], GZIP, LIMIT)
    assert (error.status, error.code) == (400, "invalid_encoding")
    assert error.message == "the gzip body ends before its stream does"


def test_an_empty_body_sent_as_gzip_is_400() -> None:
    error = refusal(inflate, b"", GZIP, LIMIT)
    assert (error.status, error.code) == (400, "invalid_encoding")


def test_several_gzip_members_are_refused() -> None:
    # Valid gzip (RFC 1952), refused by design: each member costs a fresh inflater.
    two = gzip.compress(b'{"type":') + gzip.compress(b'"pageview"}')
    assert gzip.decompress(two) == b'{"type":"pageview"}'
    error = refusal(inflate, two, GZIP, LIMIT)
    assert (error.status, error.code) == (400, "invalid_encoding")
    assert "another gzip member" in error.message


def test_bytes_after_the_stream_are_refused() -> None:
    for packed, wbits in ((gzip.compress(b"{}"), GZIP), (zlib.compress(b"{}"), ZLIB)):
        error = refusal(inflate, packed + b"\n", wbits, LIMIT)
        assert (error.status, error.code) == (400, "invalid_encoding")
        assert "other data, 1 B" in error.message


def test_raw_deflate_is_not_the_deflate_coding() -> None:
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    packed = raw.compress(b"{}") + raw.flush()
    error = refusal(inflate, packed, ZLIB, LIMIT)
    assert (error.status, error.code) == (400, "invalid_encoding")
    assert "not valid deflate" in error.message


# -- every ingest route, both lanes, real bytes ----------------------------------------------

ONE = json.dumps({"type": "pageview", "user_id": "u1"}).encode()
BATCH = json.dumps([{"type": "pageview", "user_id": "u1"}, {"type": "click"}]).encode()
PLAUSIBLE = json.dumps({"n": "pageview", "u": "https://example.com/a", "d": "example.com"}).encode()
ROUTES = {"/api/v1/events": ONE, "/api/v1/events/batch": BATCH, "/api/event": PLAUSIBLE}
ENDPOINTS = {"/api/v1/events": "single", "/api/v1/events/batch": "batch", "/api/event": "plausible"}
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
BOMB = gzip.compress(b"\0" * 10_000_000)


def lane_daemon(fast_lane: bool) -> Daemon:
    return make_daemon({"server": {"fast_lane": fast_lane}, "limits": {"max_body_bytes": 65536}})


def post(
    daemon: Daemon, path: str, body: bytes, coding: str | None
) -> tuple[int, dict[str, list[str]], bytes]:
    """One request on a fresh connection of the daemon's listener (the fast lane in front
    of twisted.web, or twisted.web alone): status, headers, body; checked against the
    contract."""
    head = [
        f"POST {path} HTTP/1.1",
        "Host: rta.test",
        "Content-Type: text/plain",
        f"User-Agent: {FIREFOX}",
        f"Content-Length: {len(body)}",
    ]
    if coding is not None:
        head.append(f"Content-Encoding: {coding}")
    data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    written, closed = raw_http(daemon.service.listeners[0].factory, data)
    raw_head, _, payload = written.partition(b"\r\n\r\n")
    status_line, *lines = raw_head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines:
        name, value = line.split(": ", 1)
        headers.setdefault(name.lower(), []).append(value)
    status = int(status_line.split()[1])
    check_contract("POST", path, status, headers, payload)
    assert not closed  # every one of these answers keeps the connection
    return status, headers, payload


def rejected(daemon: Daemon) -> dict[tuple[str, str], float]:
    exposition = daemon.http.get("/metrics").body.decode()
    return {
        (sample.labels["endpoint"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "rta_events_rejected_total"
    }


LANES = pytest.mark.parametrize("fast_lane", [True, False], ids=["fast lane", "twisted.web"])
PATHS = pytest.mark.parametrize("path", list(ROUTES))


@LANES
@PATHS
def test_a_gzip_or_deflate_body_is_taken(fast_lane: bool, path: str) -> None:
    daemon = lane_daemon(fast_lane)
    for coding, packed in (
        ("gzip", gzip.compress(ROUTES[path])),
        ("deflate", zlib.compress(ROUTES[path])),
    ):
        status, _, _ = post(daemon, path, packed, coding)
        assert status == 202, coding
    if path == "/api/v1/events/batch":
        status, _, payload = post(daemon, path, gzip.compress(BATCH), "GZIP")
        assert json.loads(payload)["data"]["accepted"] == 2


@LANES
@PATHS
def test_a_bomb_is_413_with_the_limit_and_counted(fast_lane: bool, path: str) -> None:
    daemon = lane_daemon(fast_lane)
    status, _, payload = post(daemon, path, BOMB, "gzip")
    answer = json.loads(payload)
    assert (status, answer["code"], answer["limit"]) == (413, "body_too_large", 65536)
    assert rejected(daemon)[(ENDPOINTS[path], "body_too_large")] == 1


@LANES
@PATHS
def test_a_corrupt_body_is_400_invalid_encoding_and_counted(fast_lane: bool, path: str) -> None:
    daemon = lane_daemon(fast_lane)
    status, _, payload = post(daemon, path, ROUTES[path], "gzip")  # not compressed at all
    assert (status, json.loads(payload)["code"]) == (400, "invalid_encoding")
    status, _, payload = post(daemon, path, gzip.compress(ROUTES[path])[:-4], "gzip")
    assert (status, json.loads(payload)["code"]) == (400, "invalid_encoding")
    assert rejected(daemon)[(ENDPOINTS[path], "invalid_encoding")] == 2


@LANES
@PATHS
def test_an_unknown_or_stacked_coding_is_415_and_counted(fast_lane: bool, path: str) -> None:
    daemon = lane_daemon(fast_lane)
    for coding in ("br", "gzip, gzip"):
        status, headers, payload = post(daemon, path, gzip.compress(ROUTES[path]), coding)
        assert (status, json.loads(payload)["code"]) == (415, "unsupported_encoding")
        assert headers["accept-encoding"] == ["gzip, deflate"]
    assert rejected(daemon)[(ENDPOINTS[path], "unsupported_encoding")] == 2


@LANES
def test_identity_is_the_body_as_sent(fast_lane: bool) -> None:
    daemon = lane_daemon(fast_lane)
    assert post(daemon, "/api/v1/events", ONE, "identity")[0] == 202


@LANES
def test_the_inflated_body_meets_the_per_event_limits(fast_lane: bool) -> None:
    daemon = make_daemon({"server": {"fast_lane": fast_lane}, "limits": {"max_event_bytes": 1024}})
    big = json.dumps({"type": "pageview", "properties": {"pad": "x" * 2000}}).encode()
    status, _, payload = post(daemon, "/api/v1/events", gzip.compress(big), "gzip")
    assert (status, json.loads(payload)["code"]) == (413, "event_too_large")
