"""The composition: every piece of the daemon built from a Config and wired on a reactor.

``tap.py`` holds the twistd glue (options, log stream, signals); this module knows every part.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import Logger

from twisted_rta import __version__
from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.config import (
    Config,
    default_node_id,
    store_url,
    summary,
)
from twisted_rta.ingest.queue import IntakeQueue
from twisted_rta.ingest.workers import WorkerPool
from twisted_rta.internals import clear_exit_signal
from twisted_rta.ops.exposition import DaemonCollector
from twisted_rta.ops.health import LoadMonitor, Readiness, check_readiness
from twisted_rta.ops.logs import LineObserver
from twisted_rta.ops.notify import NotifyService, StatusLine
from twisted_rta.ops.reactor_lag import ReactorLagMonitor
from twisted_rta.ops.reload import Reloader
from twisted_rta.ops.systemd import SystemdNotifier
from twisted_rta.ops.telemetry import Telemetry
from twisted_rta.query.service import QueryService
from twisted_rta.service import RTAService
from twisted_rta.store.flush import FlushService
from twisted_rta.store.interface import WindowStore
from twisted_rta.store.lifecycle import StoreService
from twisted_rta.store.memory import MemoryWindowStore
from twisted_rta.store.retention import RetentionService
from twisted_rta.store.sql import SQLWindowStore
from twisted_rta.web.api import ApiApp
from twisted_rta.web.dashboard import DashboardApp
from twisted_rta.web.edge import AccessPolicy, EdgeResource
from twisted_rta.web.listeners import HTTPListener
from twisted_rta.web.live import LiveFeed, LiveFigures
from twisted_rta.web.ops import OpsApp
from twisted_rta.web.ratelimit import RequestLimiters
from twisted_rta.web.site import RTASite

log = Logger()


def open_store(config: Config, reactor: Any, environ: Mapping[str, str]) -> WindowStore:
    """The WindowStore named by ``store.url`` (default: the embedded SQLite file)."""
    node_id = config.store.node_id or default_node_id(config.server.listen, socket.gethostname())
    url = store_url(config.store, environ)
    if url == "memory:":
        return MemoryWindowStore(node_id=node_id)
    return SQLWindowStore.from_url(
        url, reactor=reactor, node_id=node_id, max_connections=config.store.max_connections
    )


def build_service(
    config: Config,
    reactor: Any,
    log_observer: LineObserver | None,
    store: WindowStore | None = None,
    notifier: SystemdNotifier | None = None,
    reload_config: Callable[[], Config] | None = None,
) -> RTAService:
    """Wire every piece of the daemon for ``config`` on ``reactor``.

    ``store`` and ``notifier`` replace the ones the config and environment would give
    (tests); ``reload_config`` re-reads the config for SIGHUP.
    """
    notifier = notifier or SystemdNotifier(None)
    now = reactor.seconds()
    resolutions = config.windows.resolutions
    aggregator = Aggregator(
        window_sizes=tuple(resolution.size for resolution in resolutions),
        grace=config.windows.grace,
        max_dimension_values=config.limits.max_dimension_values,
        started_at=now,
    )
    queue = IntakeQueue(capacity=config.processing.buffer_size)
    if store is None:
        store = open_store(config, reactor, os.environ)
    shutdown_errors: list[str] = []

    def fatal(reason: str) -> None:
        shutdown_errors.append(reason)
        reactor.stop()

    store_service = StoreService(
        store,
        aggregator,
        clock=reactor,
        retry_initial=config.store.retry_initial,
        retry_max=config.store.retry_max,
        on_fatal=fatal,
    )
    telemetry = Telemetry()
    flush = FlushService(
        aggregator,
        store_service,
        clock=reactor,
        interval=config.windows.flush_interval,
        max_pending=config.store.max_pending_windows,
        retry_initial=config.store.retry_initial,
        retry_max=config.store.retry_max,
        keep_recent=config.windows.keep_closed,
        observe_duration=telemetry.flush_duration.observe,
    )
    retention = RetentionService(
        store_service,
        resolutions,
        clock=reactor,
        interval=config.store.retention_interval,
        batch_size=config.store.retention_batch,
    )
    workers = WorkerPool(
        queue, aggregator, clock=reactor, worker_count=config.processing.worker_count
    )
    load = LoadMonitor(
        clock=reactor,
        interval=config.windows.flush_interval,
        busy_seconds=lambda: workers.busy_seconds,
        flush_seconds=lambda: flush.last_duration,
    )
    lag = ReactorLagMonitor(clock=reactor, interval=1.0, observe=telemetry.reactor_lag.observe)
    telemetry.registry.register(
        DaemonCollector(
            aggregator=aggregator,
            rules=aggregator.rules,
            queue=queue,
            workers=workers,
            flush=flush,
            store_service=store_service,
            retention=retention,
            clock_seconds=reactor.seconds,
        )
    )
    holder: list[RTAService] = []

    def readiness() -> Readiness:
        return check_readiness(holder[0], load, reactor.seconds())

    ops = OpsApp(clock=reactor, readiness=readiness, registry=telemetry.registry)
    query = QueryService(
        aggregator=aggregator,
        flush=flush,
        store_service=store_service,
        queue=queue,
        resolutions=resolutions,
    )
    figures = LiveFigures(query=query, readiness=readiness, clock=reactor, resolutions=resolutions)
    feed = LiveFeed(clock=reactor, snapshot=figures.snapshot)
    dashboard = DashboardApp(feed=feed)
    limiters = RequestLimiters(config.rate_limits)
    api = ApiApp(
        clock=reactor,
        queue=queue,
        query=query,
        limits=config.limits,
        resolutions=resolutions,
        store_backlogged=lambda: flush.backlogged,
        telemetry=telemetry,
        limiters=limiters,
    )
    edge = EdgeResource(
        ops.app.resource(),
        api.app.resource(),
        AccessPolicy.from_config(config),
        limiters=limiters,
        clock=reactor,
        dashboard=dashboard.app.resource(),
    )
    site = RTASite(
        edge,
        clock=reactor,
        max_body_bytes=config.limits.max_body_bytes,
        access_log=config.logging.access_log,
        telemetry=telemetry,
        request_timeout=config.server.request_timeout,
        idle_timeout=config.server.idle_timeout,
        max_connections=config.server.max_connections,
    )
    listeners = [HTTPListener(reactor, endpoint, site) for endpoint in config.server.listen]
    notify = NotifyService(
        notifier,
        clock=reactor,
        reactor_lag=lambda: lag.last_lag,
        status=StatusLine(queue, workers, flush).render,
    )
    service = RTAService(
        clock=reactor,
        queue=queue,
        store_service=store_service,
        flush=flush,
        retention=retention,
        workers=workers,
        listeners=listeners,
        monitors=(load, lag, feed),
        shutdown_timeout=config.server.shutdown_timeout,
        log_observer=log_observer,
        shutdown_errors=shutdown_errors,
        notify=notify,
        on_stopping=notifier.stopping,
    )
    holder.append(service)

    def apply(new: Config) -> None:
        """Swap in what may change while running (see reload.RUNTIME_PREFIXES)."""
        if log_observer is not None:
            log_observer.configure(log_format=new.logging.format, level=new.logging.level)
        site.access_log = new.logging.access_log
        site.max_body_bytes = new.limits.max_body_bytes
        edge.policy = AccessPolicy.from_config(new)
        limiters.configure(new.rate_limits)
        api.limits = new.limits

    service.reloader = Reloader(
        load=reload_config or (lambda: config),
        current=config,
        apply=apply,
        before=lambda: notifier.reloading(time.monotonic_ns() // 1000),
        after=lambda: notifier.ready(),
    )
    # Only the error list, not the service: a reference from the reactor would keep every
    # sketch alive past interpreter teardown (nanobind then prints leak warnings).
    reactor.addSystemEventTrigger("after", "shutdown", _exit_status, reactor, shutdown_errors)
    log.info(
        "twisted-rta {version} starting as node {node_id} with {config}",
        version=__version__,
        node_id=store.node_id,
        config=summary(config),
    )
    if not config.auth.keys:
        log.warn(
            "no API keys configured (auth.keys): every route is open to anyone who can "
            "reach the listen addresses"
        )
    return service


def _exit_status(reactor: Any, shutdown_errors: list[str]) -> None:
    """A failed shutdown step must end the process with status 1, not a clean signal exit."""
    if not shutdown_errors:
        return
    log.error("exiting with status 1: {errors}", errors="; ".join(shutdown_errors))
    # twistd re-raises SIGTERM/SIGINT after the reactor stops, which systemd counts as a
    # clean stop; clear it and leave with 1 once twistd has removed its pid file.
    clear_exit_signal(reactor)
    atexit.register(_hard_exit, 1)


def _hard_exit(status: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
