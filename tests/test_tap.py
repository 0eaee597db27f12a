"""The twistd plugin and the composition root."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins

from twisted_rta import tap, wiring
from twisted_rta.ops.logs import STDOUT, LogOutput
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


def test_build_service_on_a_memory_reactor(tmp_path: Path) -> None:
    reactor = MemoryReactorClock()
    options = parse("--listen", "tcp:8123:interface=127.0.0.1")
    service = wiring.build_daemon(
        options.config, reactor, log_observer=None, environ={"STATE_DIRECTORY": str(tmp_path)}
    ).service
    assert isinstance(service, RTAService)
    service.privilegedStartService()
    service.startService()
    port, factory, _backlog, interface = reactor.tcpServers[0]
    assert (port, interface) == (8123, "127.0.0.1")
    assert factory is service.listeners[0].factory
    assert service.workers.running and service.flush.alive


def test_make_service_registers_the_log_observer_on_twistds_application(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from twisted.application.service import Application
    from twisted.logger import ILogObserver, LogLevel

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))  # the journal and store go there
    stream = io.StringIO()
    monkeypatch.setattr(tap, "_log_output", lambda options: LogOutput(STDOUT, stream))
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


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("tcp:99999", "port must be a number from 0 to 65535 in 'tcp:99999', got '99999'"),
        ("tcp:port=70000:interface=127.0.0.1", "port must be a number from 0 to 65535"),
        ("reuseport:-1", "port must be a number from 0 to 65535"),
        ("bogus:1", "invalid endpoint 'bogus:1': Unknown endpoint type: 'bogus'"),
        ("tcp:80:colour=blue", "invalid endpoint 'tcp:80:colour=blue'"),
        ("8080", "must be a Twisted endpoint like tcp:8080:interface=127.0.0.1"),
    ],
)
def test_listen_endpoints_are_checked_with_the_config(
    tmp_path: Path, listen: str, message: str
) -> None:
    path = tmp_path / "rta.yaml"
    path.write_text(f"server:\n  listen: [{listen!r}]\n")
    with pytest.raises(SystemExit) as caught:
        parse("-c", str(path))
    assert f"config error: server.listen[0]: {message}" in str(caught.value.code)


def test_systemd_and_unix_endpoints_pass_the_check_outside_systemd() -> None:
    options = parse("--listen", "systemd:domain=INET:name=http", "--listen", "unix:/tmp/r.sock")
    assert options.config.server.listen[0] == "systemd:domain=INET:name=http"


def test_listen_backlog_applies_where_the_endpoint_sets_none(tmp_path: Path) -> None:
    from twisted_rta.config.endpoints import with_backlog

    reactor = MemoryReactorClock()
    options = parse("--listen", "tcp:8123:interface=127.0.0.1", "--listen", "tcp:8124:backlog=5")
    service = wiring.build_daemon(
        options.config, reactor, log_observer=None, environ={"STATE_DIRECTORY": str(tmp_path)}
    ).service
    service.privilegedStartService()
    assert [(port, backlog) for port, _, backlog, _ in reactor.tcpServers] == [
        (8123, 1024),
        (8124, 5),
    ]
    assert service.listeners[0].description == "tcp:8123:interface=127.0.0.1"
    assert with_backlog("unix:/tmp/x", 9) == "unix:/tmp/x"
    assert with_backlog("reuseport:80", 9) == "reuseport:80:backlog=9"


def test_a_listener_that_cannot_bind_exits_1_without_a_traceback() -> None:
    from twisted.internet.protocol import Factory

    from twisted_rta.web.listeners import HTTPListener, StartupFailed

    class Refusing(MemoryReactorClock):
        def listenTCP(self, *args: object, **kwargs: object) -> object:
            from twisted.internet.error import CannotListenError

            raise CannotListenError("127.0.0.1", 8080, OSError(98, "Address already in use"))

    listener = HTTPListener(Refusing(), "tcp:8080:interface=127.0.0.1", Factory())
    with pytest.raises(StartupFailed) as caught:
        listener.privilegedStartService()
    # twistd's cleanup catches Exception; Python exits quietly with 1 for a SystemExit.
    assert isinstance(caught.value, Exception) and caught.value.code == 1


def test_the_file_limit_is_raised_within_the_hard_limit() -> None:
    import resource

    from twisted_rta.ops.file_limit import raise_file_limit

    calls: list[tuple[int, int]] = []

    def limits(soft: int, hard: int) -> object:
        return lambda which: (soft, hard)

    low = raise_file_limit(
        10_000, getrlimit=limits(1024, 524_288), setrlimit=lambda w, v: calls.append(v)
    )
    assert calls == [(10_064, 524_288)] and low.soft == 10_064 and not low.too_low
    calls.clear()
    capped = raise_file_limit(
        10_000, getrlimit=limits(1024, 4096), setrlimit=lambda w, v: calls.append(v)
    )
    assert calls == [(4096, 4096)] and capped.too_low and capped.raised
    calls.clear()
    ample = raise_file_limit(
        100, getrlimit=limits(1024, 4096), setrlimit=lambda w, v: calls.append(v)
    )
    assert calls == [] and not ample.raised and not ample.too_low
    unlimited = raise_file_limit(
        100,
        getrlimit=limits(64, resource.RLIM_INFINITY),
        setrlimit=lambda w, v: calls.append(v),
    )
    assert calls == [(164, resource.RLIM_INFINITY)] and not unlimited.too_low

    def refuse(which: int, value: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    refused = raise_file_limit(10_000, getrlimit=limits(1024, 4096), setrlimit=refuse)
    assert refused.soft == 1024 and refused.too_low and not refused.raised


def test_emfile_accept_failures_are_counted_and_logged_as_errors() -> None:
    from twisted.internet.task import Clock
    from twisted.logger import LogLevel, LogPublisher

    from twisted_rta.ops.telemetry import Telemetry
    from twisted_rta.web.listeners import AcceptErrorLog

    telemetry = Telemetry()
    clock = Clock()
    logged: list[dict[str, object]] = []
    from twisted.logger import globalLogPublisher

    globalLogPublisher.addObserver(logged.append)
    publisher = LogPublisher()
    watches = [
        AcceptErrorLog(lambda reason: telemetry.accept_errors.labels(reason=reason).inc(), clock)
        for _ in range(2)  # two listeners: each event counted once
    ]
    for watch in watches:
        publisher.addObserver(watch)
    try:
        for _ in range(3):
            publisher(
                {
                    "log_namespace": "twisted.internet.tcp.Port",
                    "log_format": "Could not accept new connection ({acceptError})",
                    "acceptError": "EMFILE",
                    "log_level": LogLevel.info,
                }
            )
        publisher(
            {
                "log_namespace": "twisted.internet.tcp.Port",
                "log_format": "EMFILE encountered; releasing reserved file descriptor.",
                "log_level": LogLevel.info,
            }
        )
        publisher(
            {
                "log_namespace": "twisted.internet.tcp.Port",
                "log_format": "Could not accept new connection ({acceptError})",
                "acceptError": "ECONNABORTED",
                "log_level": LogLevel.info,
            }
        )
    finally:
        globalLogPublisher.removeObserver(logged.append)
    value = telemetry.registry.get_sample_value
    assert value("rta_accept_errors_total", {"reason": "EMFILE"}) == 4
    assert value("rta_accept_errors_total", {"reason": "ECONNABORTED"}) == 1
    errors = [e for e in logged if e.get("log_level") == LogLevel.error]
    assert len(errors) == 1  # the rest within 10 s are only counted
    assert errors[0]["reason"] == "EMFILE"


# --processes --------------------------------------------------------------------------------


def test_processes_counts_cpus_for_auto_and_takes_a_number() -> None:
    assert tap.process_count("auto", cpus=[0, 1, 2]) == 3
    assert tap.process_count("AUTO", cpus=[5]) == 1
    assert tap.process_count("4") == 4
    assert parse().processes == 1
    assert parse("--processes", "2").processes == 2
    import os

    assert parse("--processes", "auto").processes == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", ""])
def test_a_bad_process_count_is_one_line(value: str) -> None:
    with pytest.raises(SystemExit) as caught:
        parse("--processes", value)
    assert str(caught.value.code) == (
        "twistd rta: config error: --processes: must be an integer of 1 or more, or auto, "
        f"got {value!r} (see: twistd rta --help)"
    )


def test_processes_refuse_an_endpoint_they_cannot_share() -> None:
    with pytest.raises(SystemExit) as caught:
        parse("--processes", "2", "--listen", "tcp:8080", "--listen", "unix:/tmp/rta.sock")
    message = str(caught.value.code)
    assert message.startswith("twistd rta: --processes 2 cannot share 'unix:/tmp/rta.sock': ")
    assert "\n" not in message
    # One process keeps every endpoint type.
    assert parse("--processes", "1", "--listen", "unix:/tmp/rta.sock").processes == 1


def test_a_child_runs_twistd_rta_with_the_same_config_and_no_processes(tmp_path: Path) -> None:
    import os

    config = tmp_path / "rta.yaml"
    config.write_text("logging:\n  access_log: false\n")
    options = parse(
        "-c", os.path.relpath(config), "--processes", "2", "--log-format", "json", "--node-id", "n"
    )
    argv = tap.child_command(options, "n/2", ["inherited:fd=3:domain=INET"], executable="py")
    assert argv == [
        "py",
        "-m",
        "twisted_rta.ops.child_main",
        "--nodaemon",
        "--pidfile=",
        "rta",
        "--config",
        str(config),
        "--log-format",
        "json",
        "--listen",
        "inherited:fd=3:domain=INET",
        "--node-id",
        "n/2",
    ]
    # A daemonised supervisor logging to a file gives its children the same file.
    options.parent = {"nodaemon": False, "logfile": "rta.log"}  # type: ignore[assignment]
    argv = tap.child_command(options, "n", [], executable="py")
    assert argv[5:7] == ["--logfile", os.path.abspath("rta.log")]


def test_make_service_with_processes_builds_the_supervisor_and_claims_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from twisted_rta.ops.supervisor import SupervisorService

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    monkeypatch.setattr(tap, "_log_output", lambda options: LogOutput(STDOUT, io.StringIO()))
    options = parse("--processes", "3", "--listen", "tcp:8123:interface=127.0.0.1")
    service = tap.makeService(options)
    assert isinstance(service, SupervisorService)
    assert [slot.node_id for slot in service.slots] == [
        f"{__import__('socket').gethostname()}:8123",
        f"{__import__('socket').gethostname()}:8123/2",
        f"{__import__('socket').gethostname()}:8123/3",
    ]
    assert list(tmp_path.iterdir()) == []  # no journal, no store: the children own them


def test_print_config_prints_the_effective_config_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from twisted_rta.config import config_from_mapping, load_config

    config = tmp_path / "rta.yaml"
    config.write_text("windows:\n  grace: 90s\nauth:\n  keys: []\n")
    with pytest.raises(SystemExit) as caught:
        parse("--print-config", "-c", str(config), "--listen", "tcp:9001", "--log-level", "warn")
    assert caught.value.code == 0
    printed = capsys.readouterr().out
    assert "  grace: 90s\n" in printed
    # The overrides given with it are part of the effective config.
    fed_back = config_from_mapping(yaml.safe_load(printed))
    assert fed_back.server.listen == ("tcp:9001",)
    assert fed_back.logging.level == "warn"
    expected = parse("-c", str(config), "--listen", "tcp:9001", "--log-level", "warn").config
    assert fed_back == expected != load_config(config)


def test_print_config_of_a_bad_config_is_the_usual_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rta.yaml"
    config.write_text("processing:\n  worker_count: 0\n")
    with pytest.raises(SystemExit) as caught:
        parse("--print-config", "-c", str(config))
    assert str(caught.value.code).startswith(
        "twistd rta: config error: processing.worker_count: must be an integer"
    )
    assert capsys.readouterr().out == ""


def test_print_config_lists_the_keys_without_effect_as_comments(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from twisted_rta.config import Config

    notices = ("storage.redis: no effect (twisted-rta needs no Redis)",)
    monkeypatch.setattr(tap, "load_config_and_notices", lambda path: (Config(), notices))
    with pytest.raises(SystemExit):
        parse("--print-config")
    assert "\n#   storage.redis: no effect (twisted-rta needs no Redis)\n" in (
        capsys.readouterr().out
    )


def logged_by_tap(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    from twisted.logger import Logger

    events: list[dict[str, object]] = []
    monkeypatch.setattr(tap, "log", Logger(observer=events.append))
    return events


def test_the_config_notices_are_logged_once_each_as_warnings_before_the_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from twisted.logger import formatEvent

    from twisted_rta.config import Config

    notices = (
        "storage.redis: no effect (twisted-rta needs no Redis)",
        "server.mode: no effect (a Gin setting)",
    )
    monkeypatch.setattr(tap, "load_config_and_notices", lambda path: (Config(), notices))
    monkeypatch.setattr(tap, "_log_output", lambda options: LogOutput(STDOUT, io.StringIO()))
    monkeypatch.setattr(tap, "build_daemon", lambda *args, **kwargs: pytest.fail("started"))
    monkeypatch.delenv(tap.NOTICES_LOGGED, raising=False)
    events = logged_by_tap(monkeypatch)
    options = parse()
    assert options.notices == notices
    with pytest.raises(pytest.fail.Exception):
        tap.makeService(options)  # the notices come before anything is built
    assert [(e["log_level"].name, formatEvent(e)) for e in events] == [
        ("warn", notice) for notice in notices
    ]


def test_a_supervisors_children_leave_the_notices_to_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from twisted_rta.config import Config

    notices = ("storage.redis: no effect (twisted-rta needs no Redis)",)
    monkeypatch.setattr(tap, "load_config_and_notices", lambda path: (Config(), notices))
    monkeypatch.setattr(tap, "_log_output", lambda options: LogOutput(STDOUT, io.StringIO()))
    monkeypatch.setattr(tap.signal, "signal", lambda signum, handler: None)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    monkeypatch.delenv(tap.NOTICES_LOGGED, raising=False)
    events = logged_by_tap(monkeypatch)

    class Supervisor:
        def __init__(self, **kwargs: Any) -> None:
            self.environ = kwargs["environ"]

        def reload(self) -> None:
            pass

    monkeypatch.setattr(tap, "SupervisorService", Supervisor)
    supervisor = tap.makeService(parse("--processes", "2", "--listen", "tcp:0"))
    assert [e["notice"] for e in events if "notice" in e] == list(notices)
    # Its children get the mark in their environment, and so log none.
    assert isinstance(supervisor, Supervisor)
    assert supervisor.environ[tap.NOTICES_LOGGED] == "1"
    monkeypatch.setenv(tap.NOTICES_LOGGED, "1")
    events.clear()
    monkeypatch.setattr(tap, "build_daemon", lambda *args, **kwargs: pytest.fail("started"))
    with pytest.raises(pytest.fail.Exception):
        tap.makeService(parse())
    assert [e for e in events if "notice" in e] == []


def test_metrics_listen_is_overridden_and_handed_to_children_after_the_api_sockets() -> None:
    options = parse("--metrics-listen", "tcp:9191:interface=127.0.0.1", "--processes", "2")
    assert options.config.server.metrics_listen == ("tcp:9191:interface=127.0.0.1",)
    argv = tap.child_command(
        options,
        "n",
        ["inherited:fd=3:domain=INET"],
        executable="py",
        metrics_listen=["inherited:fd=4:domain=INET"],
    )
    assert argv[-6:] == [
        "--listen",
        "inherited:fd=3:domain=INET",
        "--metrics-listen",
        "inherited:fd=4:domain=INET",
        "--node-id",
        "n",
    ]
