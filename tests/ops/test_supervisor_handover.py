"""The supervisor's sockets: bound once from endpoint strings, refused when not shareable,
and adopted by a child through the inherited: endpoint."""

from __future__ import annotations

import os
import socket

import pytest
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.testing import MemoryReactorClock

from twisted_rta.ops.handover import HandoverError, HandoverSockets, bind_endpoint, refusal


def test_tcp_tcp6_and_reuseport_endpoints_become_listening_sockets() -> None:
    sockets = HandoverSockets(
        ["tcp:0:interface=127.0.0.1", "reuseport:0:interface=127.0.0.1:backlog=5"], 64
    )
    sockets.bind()
    try:
        first, second = sockets.sockets
        assert first.sock.family == socket.AF_INET
        assert first.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert first.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
        assert second.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        assert sockets.child_fds() == {3: first.sock.fileno(), 4: second.sock.fileno()}
        assert sockets.child_endpoints() == [
            "inherited:fd=3:domain=INET",
            "inherited:fd=4:domain=INET",
        ]
        # A client connects before any child runs: it waits in the kernel's queue.
        port = first.sock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert sockets.addresses() == f"127.0.0.1:{port}, {second.address}"
    finally:
        sockets.close()
    assert sockets.sockets == ()


def test_tcp6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        listening = bind_endpoint("tcp6:0:interface=\\:\\:1", 8)
    except HandoverError as error:
        pytest.skip(f"no IPv6 loopback here: {error}")
    try:
        assert listening.sock.family == socket.AF_INET6
        assert listening.child_endpoint(3) == "inherited:fd=3:domain=INET6"
        assert listening.address.startswith("[::1]:")
    finally:
        listening.sock.close()


def test_a_port_in_use_fails_the_bind_and_closes_what_was_bound() -> None:
    taken = bind_endpoint("tcp:0:interface=127.0.0.1", 8)
    port = taken.sock.getsockname()[1]
    sockets = HandoverSockets(["tcp:0:interface=127.0.0.1", f"tcp:{port}:interface=127.0.0.1"], 8)
    with pytest.raises(HandoverError, match=f"cannot listen on 'tcp:{port}:interface=127.0.0.1'"):
        sockets.bind()
    assert sockets.sockets == ()
    taken.sock.close()


def test_a_socket_passed_in_is_checked_for_its_real_family(tmp_path: object) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        unix.bind(str(tmp_path) + "/s")  # type: ignore[operator]
        unix.listen()
        with pytest.raises(HandoverError, match="only TCP sockets"):
            bind_endpoint(f"inherited:fd={os.dup(unix.fileno())}:domain=INET", 8)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        with pytest.raises(HandoverError, match="not the domain= given"):
            bind_endpoint(f"inherited:fd={os.dup(tcp.fileno())}:domain=INET6", 8)
        adopted = bind_endpoint(f"inherited:fd={os.dup(tcp.fileno())}:domain=INET", 8)
        assert adopted.sock.getsockname() == tcp.getsockname()
        adopted.sock.close()


def test_a_systemd_socket_that_was_not_passed_is_one_line() -> None:
    with pytest.raises(HandoverError) as caught:
        bind_endpoint("systemd:domain=INET:name=nope", 8)
    assert str(caught.value) == (
        "listen endpoint 'systemd:domain=INET:name=nope': no such socket was passed by systemd"
    )


@pytest.mark.parametrize("endpoint", ["unix:/tmp/rta.sock", "ssl:8443:privateKey=k.pem"])
def test_endpoints_that_cannot_be_shared_are_refused(endpoint: str) -> None:
    reason = refusal(endpoint, 3)
    assert reason is not None and reason.startswith(f"--processes 3 cannot share {endpoint!r}")


@pytest.mark.parametrize(
    "endpoint",
    ["tcp:8080", "tcp6:8080", "reuseport:8080", "systemd:domain=INET:name=http", "inherited:3"],
)
def test_shareable_endpoints(endpoint: str) -> None:
    assert refusal(endpoint, 2) is None


def test_the_inherited_endpoint_adopts_the_descriptor() -> None:
    endpoint = serverFromString(MemoryReactorClock(), "inherited:fd=7:domain=INET6")
    assert isinstance(endpoint, AdoptedStreamServerEndpoint)
    assert (endpoint.fileno, endpoint.addressFamily) == (7, socket.AF_INET6)
    for bad, message in [
        ("inherited:fd=2", "fd= must be a descriptor number of 3 or more, got '2'"),
        ("inherited:fd=x", "fd= must be a descriptor number"),
        ("inherited:fd=3:domain=UNIX", "domain= must be INET or INET6, got 'UNIX'"),
    ]:
        with pytest.raises(ValueError, match=message):
            serverFromString(MemoryReactorClock(), bad)
