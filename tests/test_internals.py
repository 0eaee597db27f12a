"""Every private Twisted and stdlib internal the daemon uses (``twisted_rta.internals``),
checked against the real objects: an upgrade that removes or changes one fails here."""

from __future__ import annotations

import inspect
import json
import signal
from typing import Any

import pytest
from twisted.application import app
from twisted.internet.base import ReactorBase
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import _ISupportsExitSignalCapturing
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from twisted_rta.internals import (
    channel_handling_request,
    clear_exit_signal,
    count_elements,
    json_scanstring,
    json_value_scanner,
)

# -- json ---------------------------------------------------------------------------------------


def test_scanstring_decodes_a_string_and_returns_the_index_past_it() -> None:
    text = 'x "caf\\u00e9 \\"bar\\"": 1'
    assert json_scanstring(text, 3, True) == ('café "bar"', text.index(":"))


def test_scanstring_raises_json_errors() -> None:
    with pytest.raises(json.JSONDecodeError):
        json_scanstring('"never closed', 1, True)
    with pytest.raises(json.JSONDecodeError):
        json_scanstring('"tab\there"', 1, True)  # strict: no control characters


def refuse(name: str) -> Any:
    raise ValueError(f"refused {name}")


def test_value_scanner_decodes_one_value_at_an_index() -> None:
    scan = json_value_scanner(refuse)
    text = 'junk [1, {"a": 2.5}, "s", null] tail'
    value, end = scan(text, 5)
    assert value == [1, {"a": 2.5}, "s", None]
    assert text[end:] == " tail"
    assert scan("  17", 2) == (17, 4)


def test_value_scanner_signals_a_missing_value_with_stop_iteration() -> None:
    scan = json_value_scanner(refuse)
    with pytest.raises(StopIteration) as caught:
        scan("[1] }", 4)
    assert caught.value.value == 4


def test_value_scanner_calls_parse_constant() -> None:
    scan = json_value_scanner(refuse)
    with pytest.raises(ValueError, match="refused NaN"):
        scan("[NaN]", 0)
    assert scan("[1e999]", 0)[0] == [float("inf")]  # not a constant: a float overflow


# -- collections ---------------------------------------------------------------------------------


def test_count_elements_counts_into_a_plain_dict_in_first_arrival_order() -> None:
    counts: dict[str, int] = {"b": 5}
    count_elements(counts, iter(["a", "b", "c", "a", "a"]))
    assert type(counts) is dict
    assert counts == {"b": 6, "a": 3, "c": 1}
    assert list(counts) == ["b", "a", "c"]


# -- twisted.web ---------------------------------------------------------------------------------


class Held(Resource):
    """Answers nothing until the test finishes the request."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []

    def render_GET(self, request: Request) -> Any:
        self.requests.append(request)
        return NOT_DONE_YET


def test_http_channel_tells_whether_a_request_is_being_handled() -> None:
    resource = Held()
    channel = HTTPChannel()
    channel.site = Site(resource)  # what Site.buildProtocol sets, on the bare channel class
    channel.requestFactory = Request
    transport = StringTransport()
    channel.makeConnection(transport)
    assert channel_handling_request(channel) is False

    channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(resource.requests) == 1
    assert channel_handling_request(channel) is True

    resource.requests[0].finish()
    assert b"200 OK" in transport.value()
    assert channel_handling_request(channel) is False
    channel.connectionLost(Failure(ConnectionDone()))


# -- twisted.internet / twistd -----------------------------------------------------------------


class Reactor(ReactorBase):
    """The base of every reactor twistd runs, without a waker (never run)."""

    def installWaker(self) -> None:
        pass


def test_reactor_records_the_exit_signal_and_it_can_be_cleared() -> None:
    reactor = Reactor()
    assert _ISupportsExitSignalCapturing.providedBy(reactor)
    assert reactor._exitSignal is None
    reactor.sigTerm(signal.SIGTERM)
    assert reactor._exitSignal == signal.SIGTERM
    clear_exit_signal(reactor)
    assert reactor._exitSignal is None


def test_twistd_reads_the_exit_signal_from_the_reactor() -> None:
    # twistd re-raises the signal it finds there after the reactor stops: clearing it only
    # works while twistd reads this very attribute.
    assert "reactor._exitSignal" in inspect.getsource(app.ApplicationRunner.startReactor)
