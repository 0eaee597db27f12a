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

from attrs import frozen
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
from twisted_rta.ops.health import LoadMonitor, Readiness, readiness_of
from twisted_rta.ops.logs import LineObserver
from twisted_rta.ops.notify import NotifyService, StatusLine
from twisted_rta.ops.reactor_lag import ReactorLagMonitor
from twisted_rta.ops.reload import Reloader
from twisted_rta.ops.status import Lifecycle, ListenerState, StatusSource
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
from twisted_rta.web.dashboard import DashboardApp
from twisted_rta.web.edge import AccessPolicy, EdgeResource
from twisted_rta.web.ingest import IngestApp
from twisted_rta.web.listeners import HTTPListener
from twisted_rta.web.live import LiveFeed, LiveFigures
from twisted_rta.web.ops import OpsApp
from twisted_rta.web.queries import QueryApp
from twisted_rta.web.ratelimit import RequestLimiters
from twisted_rta.web.routes import DASHBOARD, INGEST_APP, OPS, QUERY_APP
from twisted_rta.web.site import RTASite

log = Logger()


def open_store(config: Config, reactor: Any, environ: Mapping[str, str]) -> WindowStore:
    """The WindowStore named by ``store.url`` (default: the embedded SQLite file).

    The default node id takes the first free slot (``host:port``, ``host:port/2``, ...) when
    the store opens; an explicit one is refused there if a live process holds it. Raises
    ConfigError for a URL that cannot work (bad scheme, driver extra not installed).
    """
    from twisted_rta.config import ConfigError
    from twisted_rta.store.lease import DEFAULT_NODE_ID_SLOTS

    explicit = config.store.node_id
    node_id = explicit or default_node_id(config.server.listen, socket.gethostname())
    url = store_url(config.store, environ)
    if url == "memory:":
        return MemoryWindowStore(node_id=node_id)
    try:
        return SQLWindowStore.from_url(
            url,
            reactor=reactor,
            node_id=node_id,
            max_connections=config.store.max_connections,
            node_id_slots=1 if explicit else DEFAULT_NODE_ID_SLOTS,
        )
    except ValueError as error:
        raise ConfigError("store.url", str(error)) from None


@frozen
class Pipeline:
    """Accepted events on their way to the store: queue -> workers -> aggregator -> flush."""

    aggregator: Aggregator
    queue: IntakeQueue
    store_service: StoreService
    flush: FlushService
    retention: RetentionService
    workers: WorkerPool


@frozen
class Monitors:
    """Periodic measurements of the running daemon."""

    load: LoadMonitor
    lag: ReactorLagMonitor


@frozen
class Http:
    """The HTTP side: the site with its edge and apps, and one listener per endpoint."""

    site: RTASite
    edge: EdgeResource
    api: IngestApp  # its event limits are swapped on reload
    limiters: RequestLimiters
    feed: LiveFeed
    listeners: tuple[HTTPListener, ...]


@frozen
class Daemon:
    """The daemon as twistd runs it: the service tree, and the reloader SIGHUP calls."""

    service: RTAService
    reloader: Reloader


def build_daemon(
    config: Config,
    reactor: Any,
    log_observer: LineObserver | None,
    *,
    store: WindowStore | None = None,
    notifier: SystemdNotifier | None = None,
    reload_config: Callable[[], Config] | None = None,
) -> Daemon:
    """Wire every piece of the daemon for ``config`` on ``reactor``.

    ``store`` and ``notifier`` replace the ones the config and environment would give
    (tests); ``reload_config`` re-reads the config for SIGHUP.
    """
    notifier = notifier or SystemdNotifier(None)
    if store is None:
        store = open_store(config, reactor, os.environ)
    shutdown_errors: list[str] = []

    def fatal(reason: str) -> None:
        shutdown_errors.append(reason)
        reactor.stop()

    telemetry = Telemetry()
    pipeline = build_pipeline(config, reactor, store, telemetry, on_fatal=fatal)
    monitors = build_monitors(config, reactor, pipeline, telemetry)
    lifecycle = Lifecycle()
    listener_states = tuple(ListenerState(endpoint) for endpoint in config.server.listen)
    status = StatusSource(
        aggregator=pipeline.aggregator,
        queue=pipeline.queue,
        workers=pipeline.workers,
        flush=pipeline.flush,
        store_service=pipeline.store_service,
        retention=pipeline.retention,
        lifecycle=lifecycle,
        listeners=listener_states,
        load=monitors.load,
    )
    telemetry.registry.register(
        DaemonCollector(
            status=lambda: status.snapshot(reactor.seconds()),
            analytics=pipeline.aggregator.metrics,
            rules=pipeline.aggregator.rules,
        )
    )
    http = build_http(config, reactor, pipeline, status, telemetry, listener_states)
    notify = NotifyService(
        notifier,
        clock=reactor,
        reactor_lag=lambda: monitors.lag.last_lag,
        status=StatusLine(lambda: status.snapshot(reactor.seconds())).render,
    )
    service = RTAService(
        clock=reactor,
        queue=pipeline.queue,
        store_service=pipeline.store_service,
        flush=pipeline.flush,
        retention=pipeline.retention,
        workers=pipeline.workers,
        listeners=http.listeners,
        lifecycle=lifecycle,
        monitors=(monitors.load, monitors.lag, http.feed),
        shutdown_timeout=config.server.shutdown_timeout,
        log_observer=log_observer,
        shutdown_errors=shutdown_errors,
        notify=notify,
        on_stopping=notifier.stopping,
    )
    reloader = build_reloader(config, http, log_observer, notifier, reload_config)
    # Only the error list, not the service: a reference from the reactor would keep every
    # sketch alive past interpreter teardown (nanobind then prints leak warnings).
    reactor.addSystemEventTrigger("after", "shutdown", _exit_status, reactor, shutdown_errors)
    log.info(
        # The node id is known once the store has granted its lease: "store open (node ...)".
        "twisted-rta {version} starting with {config}",
        version=__version__,
        config=summary(config),
    )
    if not config.auth.keys:
        log.warn(
            "no API keys configured (auth.keys): every route is open to anyone who can "
            "reach the listen addresses"
        )
    return Daemon(service, reloader)


def build_pipeline(
    config: Config,
    reactor: Any,
    store: WindowStore,
    telemetry: Telemetry,
    *,
    on_fatal: Callable[[str], None],
) -> Pipeline:
    resolutions = config.windows.resolutions
    aggregator = Aggregator(
        window_sizes=tuple(resolution.size for resolution in resolutions),
        grace=config.windows.grace,
        max_dimension_values=config.limits.max_dimension_values,
        started_at=reactor.seconds(),
    )
    queue = IntakeQueue(capacity=config.processing.buffer_size)
    store_service = StoreService(
        store,
        aggregator,
        clock=reactor,
        retry_initial=config.store.retry_initial,
        retry_max=config.store.retry_max,
        on_fatal=on_fatal,
    )
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
    return Pipeline(aggregator, queue, store_service, flush, retention, workers)


def build_monitors(
    config: Config, reactor: Any, pipeline: Pipeline, telemetry: Telemetry
) -> Monitors:
    workers, flush = pipeline.workers, pipeline.flush
    load = LoadMonitor(
        clock=reactor,
        interval=config.windows.flush_interval,
        busy_seconds=lambda: workers.busy_seconds,
        flush_seconds=lambda: flush.last_duration,
    )
    lag = ReactorLagMonitor(clock=reactor, interval=1.0, observe=telemetry.reactor_lag.observe)
    return Monitors(load, lag)


def build_http(
    config: Config,
    reactor: Any,
    pipeline: Pipeline,
    status: StatusSource,
    telemetry: Telemetry,
    listener_states: tuple[ListenerState, ...],
) -> Http:
    resolutions = config.windows.resolutions
    flush = pipeline.flush

    def readiness() -> Readiness:
        return readiness_of(status.snapshot(reactor.seconds()))

    ops = OpsApp(clock=reactor, readiness=readiness, registry=telemetry.registry)
    query = QueryService(
        aggregator=pipeline.aggregator,
        flush=flush,
        store_service=pipeline.store_service,
        resolutions=resolutions,
        status=status.snapshot,
    )
    figures = LiveFigures(
        query=query, status=status.snapshot, clock=reactor, resolutions=resolutions
    )
    feed = LiveFeed(clock=reactor, snapshot=figures.snapshot)
    dashboard = DashboardApp(feed=feed)
    limiters = RequestLimiters(config.rate_limits)
    api = IngestApp(
        clock=reactor,
        queue=pipeline.queue,
        limits=config.limits,
        store_backlogged=lambda: flush.backlogged,
        telemetry=telemetry,
        limiters=limiters,
    )
    queries = QueryApp(clock=reactor, query=query, resolutions=resolutions)
    edge = EdgeResource(
        {
            OPS: ops.app.resource(),
            INGEST_APP: api.app.resource(),
            QUERY_APP: queries.app.resource(),
            DASHBOARD: dashboard.app.resource(),
        },
        AccessPolicy.from_config(config),
        limiters=limiters,
        clock=reactor,
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
    listeners = tuple(
        HTTPListener(
            reactor,
            state.description,
            site,
            state,
            backlog=config.server.listen_backlog,
            on_accept_error=lambda reason: telemetry.accept_errors.labels(reason=reason).inc(),
        )
        for state in listener_states
    )
    return Http(site, edge, api, limiters, feed, listeners)


def build_reloader(
    config: Config,
    http: Http,
    log_observer: LineObserver | None,
    notifier: SystemdNotifier,
    reload_config: Callable[[], Config] | None,
) -> Reloader:
    def apply(new: Config) -> None:
        """Swap in what may change while running (the schema marks it reloadable)."""
        if log_observer is not None:
            log_observer.configure(log_format=new.logging.format, level=new.logging.level)
        http.site.access_log = new.logging.access_log
        http.site.max_body_bytes = new.limits.max_body_bytes
        http.edge.policy = AccessPolicy.from_config(new)
        http.limiters.configure(new.rate_limits)
        http.api.limits = new.limits

    return Reloader(
        load=reload_config or (lambda: config),
        current=config,
        apply=apply,
        before=lambda: notifier.reloading(time.monotonic_ns() // 1000),
        after=lambda: notifier.ready(),
    )


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
