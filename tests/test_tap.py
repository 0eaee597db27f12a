"""The twistd plugin and the composition root."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins

from twisted_rta import tap, wiring
from twisted_rta.service import RTAService

REPO = Path(__file__).resolve().parent.parent


def parse(*args: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(args))
    return options


def test_plugin_is_found_through_getplugins() -> None:
    from twisted import plugins

    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker, plugins)}
    assert "rta" in makers
    assert makers["rta"].options is tap.Options
    assert makers["rta"].makeService is tap.makeService


def test_plugin_module_imports_nothing_of_ours() -> None:
    source = (REPO / "twisted" / "plugins" / "rta_plugin.py").read_text()
    assert "twisted_rta" not in source.replace('"twisted_rta.tap"', "")
    assert not (REPO / "twisted" / "__init__.py").exists()
    assert not (REPO / "twisted" / "plugins" / "__init__.py").exists()


def test_defaults_without_config() -> None:
    options = parse()
    assert options.config.server.listen == ("tcp:8080:interface=0.0.0.0",)


def test_config_file_and_overrides() -> None:
    options = parse(
        "-c",
        str(REPO / "config" / "rta.yaml"),
        "--listen",
        "tcp:9001:interface=127.0.0.1",
        "--listen",
        "unix:/tmp/rta.sock",
        "--log-level",
        "debug",
        "--log-format",
        "json",
    )
    assert options.config.server.listen == ("tcp:9001:interface=127.0.0.1", "unix:/tmp/rta.sock")
    assert options.config.logging.level == "debug"
    assert options.config.logging.format == "json"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--log-level", "loud"],
            "twistd rta: config error: --log-level: must be one of debug, info, warn, error, "
            "got 'loud' (see: twistd rta --help)",
        ),
        (
            ["--log-format", "xml"],
            "twistd rta: config error: --log-format: must be one of console, json, got 'xml' "
            "(see: twistd rta --help)",
        ),
        (["--nope"], "twistd rta: option --nope not recognized (see: twistd rta --help)"),
        (
            ["-c", "/does/not/exist.yaml"],
            "twistd rta: config error: cannot read config file '/does/not/exist.yaml': "
            "No such file or directory (see: twistd rta --help)",
        ),
    ],
)
def test_bad_options_exit_with_one_clear_line(args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as caught:
        parse(*args)
    assert str(caught.value.code) == message


def test_bad_config_value_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "rta.yaml"
    path.write_text("processing:\n  worker_count: 0\n")
    with pytest.raises(SystemExit) as caught:
        parse("-c", str(path))
    assert "processing.worker_count: must be an integer between 1 and 256, got 0" in str(
        caught.value.code
    )


def test_build_service_on_a_memory_reactor() -> None:
    reactor = MemoryReactorClock()
    options = parse("--listen", "tcp:8123:interface=127.0.0.1")
    service = wiring.build_daemon(options.config, reactor, log_observer=None).service
    assert isinstance(service, RTAService)
    service.privilegedStartService()
    service.startService()
    port, factory, _backlog, interface = reactor.tcpServers[0]
    assert (port, interface) == (8123, "127.0.0.1")
    assert factory is service.listeners[0].factory
    assert service.workers.running and service.flush.alive


def test_make_service_registers_the_log_observer_on_twistds_application(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from twisted.application.service import Application
    from twisted.logger import ILogObserver, LogLevel

    stream = io.StringIO()
    monkeypatch.setattr(tap, "_log_stream", lambda options: stream)
    options = parse("--listen", "tcp:0:interface=127.0.0.1", "--log-format", "json")
    service = tap.makeService(options)
    application = Application("rta")
    service.setServiceParent(application)
    observer = application.getComponent(ILogObserver)
    assert observer is not None
    observer(
        {
            "log_format": "hello {who}",
            "who": "ops",
            "log_level": LogLevel.info,
            "log_namespace": "t",
            "log_time": 0.0,
        }
    )
    assert '"message":"hello ops"' in stream.getvalue()


def test_log_stream_follows_twistd_options(tmp_path: Path) -> None:
    import sys

    class FakeTwistd(dict):  # twistd's ServerOptions behaves like a dict
        pass

    options = tap.Options()
    options.parent = FakeTwistd(nodaemon=True, logfile=None)
    assert tap._log_stream(options) is sys.stdout
    options.parent = FakeTwistd(nodaemon=False, logfile="-")
    assert tap._log_stream(options) is sys.stdout
    logfile = tmp_path / "rta.log"
    options.parent = FakeTwistd(nodaemon=False, logfile=str(logfile))
    stream = tap._log_stream(options)
    stream.write("line\n")
    stream.close()
    assert logfile.read_text() == "line\n"


def test_reuseport_endpoint_string_is_available_to_twistd() -> None:
    from twisted.internet.endpoints import serverFromString

    from twisted_rta.web.reuseport import ReusePortEndpoint

    reactor = MemoryReactorClock()
    endpoint = serverFromString(reactor, "reuseport:0:interface=127.0.0.1:backlog=7")
    assert isinstance(endpoint, ReusePortEndpoint)


def test_two_reuseport_listeners_share_one_port() -> None:
    import socket

    from twisted.internet.protocol import Factory

    from tests.helpers import result_of
    from twisted_rta.web.reuseport import ReusePortEndpoint

    class AdoptingReactor(MemoryReactorClock):
        def adoptStreamPort(self, fd: int, family: object, factory: object) -> object:
            # Keep a duplicate, as the real reactor does, and report the bound port.
            return socket.socket(fileno=socket.dup(fd))

    reactor = AdoptingReactor()
    first = result_of(ReusePortEndpoint(reactor, 0, "127.0.0.1").listen(Factory()))
    port = first.getsockname()[1]
    second = result_of(ReusePortEndpoint(reactor, port, "127.0.0.1").listen(Factory()))
    assert second.getsockname()[1] == port
    first.close()
    second.close()


def test_node_id_option_overrides_the_config() -> None:
    assert parse("--node-id", "core-1").config.store.node_id == "core-1"
