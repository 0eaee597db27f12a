"""The twistd glue: options, the log stream, SIGHUP, and makeService (the only place that
imports the global reactor; the composition itself is in wiring.py)."""

from __future__ import annotations

import os
import signal
import sys
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
from twisted_rta.ops.file_limit import HEADROOM, FileLimit, raise_file_limit
from twisted_rta.ops.logs import make_observer
from twisted_rta.ops.systemd import SystemdNotifier
from twisted_rta.store.interface import PermanentStoreError
from twisted_rta.wiring import build_daemon

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
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self.config = Config()

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
        except ConfigError as error:
            raise usage.UsageError(f"config error: {error}") from None
        self.config = config


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
