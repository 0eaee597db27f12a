"""The twistd glue: options, --print-config, the log output, SIGHUP, and makeService (the
only place that imports the global reactor; the composition itself is in wiring.py)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from twisted_rta import __version__
from twisted_rta.config import (
    Config,
    ConfigError,
    choice,
    config_yaml,
    load_config,
    text,
)
from twisted_rta.config.endpoints import check_endpoint
from twisted_rta.config.loading import load_config_and_notices
from twisted_rta.ops.child_readiness import ChildReadiness
from twisted_rta.ops.file_limit import HEADROOM, FileLimit, raise_file_limit
from twisted_rta.ops.handover import HandoverSockets, refusal
from twisted_rta.ops.logs import STDERR, STDOUT, LogOutput, make_observer
from twisted_rta.ops.notify_receiver import NotifyReceiver
from twisted_rta.ops.supervisor import (
    RESTART_INITIAL,
    RESTART_MAX,
    STABLE_AFTER,
    SupervisorService,
)
from twisted_rta.ops.systemd import SystemdNotifier
from twisted_rta.store.interface import PermanentStoreError
from twisted_rta.store.lease import node_id_candidates
from twisted_rta.store.lifecycle import retry_policy
from twisted_rta.wiring import build_daemon, configured_node_id, exit_status

log = Logger()

# Set by a supervisor (--processes) for its children: it logged the config's notices once.
NOTICES_LOGGED = "RTA_CONFIG_NOTICES_LOGGED"


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run the twisted-rta real-time analytics daemon. Without --config the built-in "
        "defaults apply (config/rta.yaml in the source tree documents every key)."
    )
    optFlags = [
        [
            "print-config",
            None,
            "Print the effective config (file, defaults and the overrides given here) as "
            "YAML in twisted-rta's own vocabulary, secrets redacted, and exit.",
        ],
    ]
    optParameters = [
        ["config", "c", None, "Path to the YAML config file."],
        ["log-level", None, None, "Override logging.level: debug, info, warn or error."],
        ["log-format", None, None, "Override logging.format: console or json."],
        ["node-id", None, None, "Override store.node_id (one per process sharing a store)."],
        [
            "processes",
            None,
            "1",
            "Processes to run on the listen addresses: a number, or auto (one per CPU this "
            "process may run on). Above 1, twistd supervises that many rta processes.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["metrics-listen"] = []
        self.config = Config()
        self.processes = 1
        # Lines about keys of the file that have no effect (the Go service's vocabulary).
        self.notices: tuple[str, ...] = ()

    def opt_listen(self, endpoint: str) -> None:
        """Twisted endpoint to listen on (repeatable; replaces server.listen), e.g. tcp:8080:interface=127.0.0.1 or systemd:domain=INET:name=http."""  # noqa: E501
        self["listen"].append(endpoint)

    def opt_metrics_listen(self, endpoint: str) -> None:
        """Twisted endpoint serving /metrics only (repeatable; replaces server.metrics_listen)."""
        self["metrics-listen"].append(endpoint)

    def opt_version(self) -> None:
        """Print the twisted-rta version and exit."""
        print(f"twisted-rta {__version__}")
        raise SystemExit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        # twistd would print its whole usage text; one line that says what is wrong is kinder.
        try:
            super().parseOptions(options)
        except usage.UsageError as error:
            raise SystemExit(f"twistd rta: {error} (see: twistd rta --help)") from None

    def postOptions(self) -> None:
        try:
            config, notices = load_config_and_notices(self["config"])
            config = _apply_overrides(config, self)
            processes = process_count(self["processes"])
        except ConfigError as error:
            raise usage.UsageError(f"config error: {error}") from None
        if self["print-config"]:
            sys.stdout.write(config_yaml(config, notices=notices, source=self["config"]))
            raise SystemExit(0)
        if processes > 1:
            for endpoint in config.server.listen:
                refused = refusal(endpoint, processes)
                if refused is not None:
                    raise usage.UsageError(refused)
        self.config = config
        self.processes = processes
        self.notices = notices


def process_count(value: str, cpus: Sequence[int] | None = None) -> int:
    """``--processes``: an integer of 1 or more, or ``auto``: the CPUs this process may run
    on (``os.sched_getaffinity``, which honours taskset and systemd's CPUAffinity=)."""
    if value.strip().lower() == "auto":
        return len(cpus if cpus is not None else os.sched_getaffinity(0)) or 1
    if value.isascii() and value.strip().isdigit() and int(value) >= 1:
        return int(value)
    raise ConfigError("--processes", f"must be an integer of 1 or more, or auto, got {value!r}")


def _apply_overrides(config: Config, options: Options) -> Config:
    logging = config.logging
    if options["log-level"] is not None:
        level = choice("debug", "info", "warn", "error")(options["log-level"], "--log-level")
        logging = attrs.evolve(logging, level=level)
    if options["log-format"] is not None:
        fmt = choice("console", "json")(options["log-format"], "--log-format")
        logging = attrs.evolve(logging, format=fmt)
    server = config.server
    if options["listen"]:
        listen = tuple(check_endpoint(endpoint, "--listen") for endpoint in options["listen"])
        server = attrs.evolve(server, listen=listen)
    if options["metrics-listen"]:
        metrics_listen = tuple(
            check_endpoint(endpoint, "--metrics-listen") for endpoint in options["metrics-listen"]
        )
        server = attrs.evolve(server, metrics_listen=metrics_listen)
    store = config.store
    if options["node-id"] is not None:
        store = attrs.evolve(store, node_id=text(options["node-id"], "--node-id"))
    return attrs.evolve(config, logging=logging, server=server, store=store)


def log_destination(options: Options) -> str:
    """Where the log lines go: ``stdout``, ``stderr`` or a file path.

    twistd's own ``--logfile`` wins when given (``-``: stdout), as ``--listen`` replaces
    ``server.listen``; else ``logging.output``. A daemonised twistd (no ``-n``) has no
    stdout or stderr: there ``stdout``/``stderr`` mean twistd's own default, ``twistd.log``.
    """
    output = options.config.logging.output
    twistd = getattr(options, "parent", None)
    if twistd is None:
        return output
    logfile = twistd.get("logfile")
    if logfile:
        return STDOUT if logfile == "-" else str(logfile)
    if output in (STDOUT, STDERR) and not twistd.get("nodaemon"):
        return "twistd.log"
    return output


def _log_output(options: Options) -> LogOutput:
    destination = log_destination(options)
    try:
        return LogOutput.open(destination)
    except OSError as error:
        twistd = getattr(options, "parent", None)
        key = "--logfile" if twistd is not None and twistd.get("logfile") else "logging.output"
        raise SystemExit(
            f"cannot start: {key}: cannot open {destination!r} for appending: "
            f"{error.strerror or error}"
        ) from None


def _log_notices(options: Options) -> None:
    """Each notice of the config file once, as its own warning (a supervisor's children
    leave them to it)."""
    if os.environ.get(NOTICES_LOGGED):
        return
    for notice in options.notices:
        log.warn("{notice}", notice=notice)


def _on_sighup(reactor: Any, output: LogOutput, then: Callable[[], object]) -> None:
    """SIGHUP: reopen the log file (logrotate moved it), then ``then`` (a reload). The
    handler only schedules: both run on the reactor thread."""

    def hangup() -> None:
        output.reopen()
        then()

    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(hangup))


def makeService(options: Options) -> IService:
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor

    config = options.config
    output = _log_output(options)
    observer = make_observer(output, log_format=config.logging.format, level=config.logging.level)
    # Logged before anything starts; twistd replays them to the observer once it is set.
    _log_notices(options)
    if options.processes > 1:
        return _make_supervisor(options, reactor, observer, output)
    try:
        daemon = build_daemon(
            config,
            reactor,
            observer,
            notifier=SystemdNotifier.from_environ(os.environ),
            reload_config=lambda: _apply_overrides(load_config(options["config"]), options),
        )
    except ConfigError as error:
        # Found only when the pieces are made (a store URL whose driver is not installed).
        raise SystemExit(f"twistd rta: config error: {error}") from None
    except PermanentStoreError as error:
        # The node's state directory is held by a live process (the journal's lease).
        raise SystemExit(f"cannot start: {error}") from None
    except OSError as error:
        # The journal or checkpoint directory cannot be made or read.
        raise SystemExit(f"cannot start: the node's state directory: {error}") from None
    _report_file_limit(raise_file_limit(config.server.max_connections))
    _on_sighup(reactor, output, daemon.reloader.reload)
    return daemon.service


def child_command(
    options: Options,
    node_id: str,
    listen: Sequence[str],
    executable: str = sys.executable,
    metrics_listen: Sequence[str] = (),
) -> list[str]:
    """One supervised child: ``twistd -n rta`` with the same config file and overrides, the
    handed-over sockets as its listen (and metrics) endpoints, its slot's node id, and no
    --processes."""
    # twistd from the same interpreter, wherever the twistd script is installed.
    twistd = [executable, "-m", "twisted_rta.ops.child_main", "--nodaemon", "--pidfile="]
    logfile = _child_logfile(options)
    if logfile is not None:
        twistd += ["--logfile", logfile]
    rta = ["rta"]
    if options["config"] is not None:
        rta += ["--config", os.path.abspath(options["config"])]
    for name in ("log-level", "log-format"):
        if options[name] is not None:
            rta += [f"--{name}", options[name]]
    for endpoint in listen:
        rta += ["--listen", endpoint]
    for endpoint in metrics_listen:
        rta += ["--metrics-listen", endpoint]
    return [*twistd, *rta, "--node-id", node_id]


def _child_logfile(options: Options) -> str | None:
    """The ``--logfile`` that gives a child (run with -n) the supervisor's log destination:
    its file (absolute: the child may run elsewhere), ``-`` for stdout where the child's
    own config would say otherwise, or None when the child's config gives the same (the
    children then share the supervisor's stdout or stderr)."""
    destination = log_destination(options)
    if destination not in (STDOUT, STDERR):
        return os.path.abspath(destination)
    if destination != options.config.logging.output:
        return "-"
    return None


def _make_supervisor(options: Options, reactor: Any, observer: Any, output: LogOutput) -> IService:
    config = options.config
    base = config.store.node_id or configured_node_id(config)
    api_sockets = len(config.server.listen)
    errors: list[str] = []
    readiness = ChildReadiness(
        SystemdNotifier.from_environ(os.environ),
        reactor,
        options.processes,
        monotonic_usec=lambda: time.monotonic_ns() // 1000,
    )
    supervisor = SupervisorService(
        reactor=reactor,
        # The metrics ports are handed over too, after the API's: each child serves both.
        sockets=HandoverSockets(
            (*config.server.listen, *config.server.metrics_listen), config.server.listen_backlog
        ),
        node_ids=node_id_candidates(base, options.processes),
        command=lambda node_id, endpoints: child_command(
            options,
            node_id,
            endpoints[:api_sockets],
            metrics_listen=endpoints[api_sockets:],
        ),
        environ={**os.environ, NOTICES_LOGGED: "1"},
        readiness=readiness,
        receiver=NotifyReceiver(reactor, readiness.received),
        shutdown_timeout=config.server.shutdown_timeout,
        restart_delay=retry_policy(RESTART_INITIAL, RESTART_MAX),
        stable_after=STABLE_AFTER,
        stop_reactor=reactor.stop,
        log_observer=observer,
        errors=errors,
    )
    _on_sighup(reactor, output, supervisor.reload)
    reactor.addSystemEventTrigger("after", "shutdown", exit_status, reactor, errors)
    return supervisor


def _report_file_limit(limit: FileLimit) -> None:
    if limit.raised:
        log.info(
            "open file limit raised from {before} to {soft} (hard limit {hard})",
            before=limit.soft_before,
            soft=limit.soft,
            hard=limit.hard,
        )
    if limit.too_low:
        log.warn(
            "open file limit {soft} (hard {hard}) is below server.max_connections + "
            "{headroom} = {wanted}: connections past it fail (EMFILE) and /health with them; "
            "raise LimitNOFILE= in the unit (ulimit -n) or lower server.max_connections",
            soft=limit.soft,
            hard=limit.hard,
            headroom=HEADROOM,
            wanted=limit.wanted,
        )
