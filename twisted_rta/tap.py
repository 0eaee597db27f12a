"""The twistd glue: options, the log stream, SIGHUP, and makeService (the only place that
imports the global reactor; the composition itself is in wiring.py)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

import attrs
from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from twisted_rta import __version__
from twisted_rta.config import (
    Config,
    ConfigError,
    choice,
    load_config,
    text,
)
from twisted_rta.config.endpoints import check_endpoint
from twisted_rta.ops.child_readiness import ChildReadiness
from twisted_rta.ops.file_limit import HEADROOM, FileLimit, raise_file_limit
from twisted_rta.ops.handover import HandoverSockets, refusal
from twisted_rta.ops.logs import make_observer
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


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run the twisted-rta real-time analytics daemon. Without --config the built-in "
        "defaults apply (config/rta.yaml in the source tree documents every key)."
    )
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
        self.config = Config()
        self.processes = 1

    def opt_listen(self, endpoint: str) -> None:
        """Twisted endpoint to listen on (repeatable; replaces server.listen), e.g. tcp:8080:interface=127.0.0.1 or systemd:domain=INET:name=http."""  # noqa: E501
        self["listen"].append(endpoint)

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
            config = load_config(self["config"])
            config = _apply_overrides(config, self)
            processes = process_count(self["processes"])
        except ConfigError as error:
            raise usage.UsageError(f"config error: {error}") from None
        if processes > 1:
            for endpoint in config.server.listen:
                refused = refusal(endpoint, processes)
                if refused is not None:
                    raise usage.UsageError(refused)
        self.config = config
        self.processes = processes


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
    store = config.store
    if options["node-id"] is not None:
        store = attrs.evolve(store, node_id=text(options["node-id"], "--node-id"))
    return attrs.evolve(config, logging=logging, server=server, store=store)


def _log_stream(options: Options) -> IO[str]:
    """Where twistd would log: stdout with -n or --logfile=-, else the log file."""
    twistd = getattr(options, "parent", None)
    if twistd is None:
        return sys.stdout
    logfile = twistd.get("logfile")
    if logfile == "-" or (not logfile and twistd.get("nodaemon")):
        return sys.stdout
    return open(logfile or "twistd.log", "a", encoding="utf-8", buffering=1)


def makeService(options: Options) -> IService:
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor

    config = options.config
    observer = make_observer(
        _log_stream(options), log_format=config.logging.format, level=config.logging.level
    )
    if options.processes > 1:
        return _make_supervisor(options, reactor, observer)
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
    reload = daemon.reloader.reload
    # The handler only schedules: the reload itself runs on the reactor thread.
    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(reload))
    return daemon.service


def child_command(
    options: Options, node_id: str, listen: Sequence[str], executable: str = sys.executable
) -> list[str]:
    """One supervised child: ``twistd -n rta`` with the same config file and overrides, the
    handed-over sockets as its listen endpoints, its slot's node id, and no --processes."""
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
    return [*twistd, *rta, "--node-id", node_id]


def _child_logfile(options: Options) -> str | None:
    """The supervisor's log file for its children, or None when it logs to stdout (which
    the children then share)."""
    twistd = getattr(options, "parent", None)
    if twistd is None:
        return None
    logfile = twistd.get("logfile")
    if logfile == "-" or (not logfile and twistd.get("nodaemon")):
        return None
    return os.path.abspath(logfile or "twistd.log")


def _make_supervisor(options: Options, reactor: Any, observer: Any) -> IService:
    config = options.config
    base = config.store.node_id or configured_node_id(config)
    errors: list[str] = []
    readiness = ChildReadiness(
        SystemdNotifier.from_environ(os.environ),
        reactor,
        options.processes,
        monotonic_usec=lambda: time.monotonic_ns() // 1000,
    )
    supervisor = SupervisorService(
        reactor=reactor,
        sockets=HandoverSockets(config.server.listen, config.server.listen_backlog),
        node_ids=node_id_candidates(base, options.processes),
        command=lambda node_id, listen: child_command(options, node_id, listen),
        environ=dict(os.environ),
        readiness=readiness,
        receiver=NotifyReceiver(reactor, readiness.received),
        shutdown_timeout=config.server.shutdown_timeout,
        restart_delay=retry_policy(RESTART_INITIAL, RESTART_MAX),
        stable_after=STABLE_AFTER,
        stop_reactor=reactor.stop,
        log_observer=observer,
        errors=errors,
    )
    # The handler only schedules: the forwarding runs on the reactor thread.
    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(supervisor.reload))
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
