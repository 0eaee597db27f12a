"""The composition: every piece of the daemon built from a Config and wired on a reactor.

``tap.py`` holds the twistd glue (options, log stream, signals); this module knows every part.
"""

from __future__ import annotations

import atexit
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from twisted_rta import __version__
from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.config import (
    Config,
    ConfigError,
    data_directory,
    default_node_id,
    rules_of,
    store_url,
    summary,
)
from twisted_rta.durability.node_state import claim_node_state
from twisted_rta.durability.opening import Durability, RunInThread, open_durability
from twisted_rta.ingest.dedup import RecentIds
from twisted_rta.ingest.intake import Intake
from twisted_rta.ingest.queue import IntakeQueue
from twisted_rta.ingest.workers import WorkerPool
from twisted_rta.internals import clear_exit_signal
from twisted_rta.ops.exposition import DaemonCollector
from twisted_rta.ops.health import LoadMonitor, Readiness, readiness_of
from twisted_rta.ops.logs import LineObserver
from twisted_rta.ops.notify import NotifyService, StatusLine
from twisted_rta.ops.reactor_lag import ReactorLagMonitor
from twisted_rta.ops.reload import Reloader
from twisted_rta.ops.status import ConnectionCounts, Lifecycle, ListenerState, StatusSource
from twisted_rta.ops.systemd import SystemdNotifier
from twisted_rta.ops.telemetry import Telemetry
from twisted_rta.query.peers import PeerWindows
from twisted_rta.query.service import QueryService
from twisted_rta.query.slices import Slicer
from twisted_rta.service import RTAService
from twisted_rta.store.flush import JOURNAL_RETRY_MAX, FlushService
from twisted_rta.store.interface import Publication, WindowStore
from twisted_rta.store.lease import DEFAULT_NODE_ID_SLOTS
from twisted_rta.store.lifecycle import StoreService
from twisted_rta.store.memory import MemoryWindowStore
from twisted_rta.store.retention import RetentionService
from twisted_rta.store.salts import SaltRotation
from twisted_rta.store.sql import SQLWindowStore
from twisted_rta.web.bots import BotDetector
from twisted_rta.web.browser import BrowserDrops, BrowserPolicy
from twisted_rta.web.dashboard import DashboardApp
from twisted_rta.web.edge import AccessPolicy, EdgeResource
from twisted_rta.web.fastlane import FastLane
from twisted_rta.web.ingest import IngestApp, IngestHandler
from twisted_rta.web.listeners import HTTPListener
from twisted_rta.web.live import LiveFeed, LiveFigures
from twisted_rta.web.metrics_port import metrics_edge as metrics_edge_of
from twisted_rta.web.ops import OpsApp
from twisted_rta.web.queries import QueryApp
from twisted_rta.web.ratelimit import RequestLimiters
from twisted_rta.web.routes import DASHBOARD, INGEST_APP, OPS, QUERY_APP, TRACKER, route_table
from twisted_rta.web.site import RTASite
from twisted_rta.web.tracker import TrackerApp
from twisted_rta.web.visitors import VisitorIds

log = Logger()


def configured_node_id(config: Config) -> str:
    """``store.node_id``, else hostname plus the first listen port."""
    return config.store.node_id or default_node_id(config.server.listen, socket.gethostname())


def open_store(
    config: Config, reactor: Any, environ: Mapping[str, str], *, node_id: str | None = None
) -> WindowStore:
    """The WindowStore named by ``store.url`` (default: the embedded SQLite file).

    ``node_id``: the id the node's state directory was claimed under (journal on); the
    store's lease must then be that very id. Otherwise the default node id takes the first
    free slot (``host:port``, ``host:port/2``, ...) when the store opens; an explicit one is
    refused there if a live process holds it. Raises ConfigError for a URL that cannot work
    (bad scheme, driver extra not installed).
    """
    explicit = config.store.node_id if node_id is None else node_id
    node_id = explicit or configured_node_id(config)
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
    intake: Intake


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
    ingest: IngestHandler  # its event limits are swapped on reload
    limiters: RequestLimiters
    feed: LiveFeed
    listeners: tuple[HTTPListener, ...]  # server.listen's, then server.metrics_listen's
    # /metrics alone, on server.metrics_listen (None without such endpoints).
    metrics_site: RTASite | None = None
    metrics_edge: EdgeResource | None = None


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
    run_in_thread: RunInThread | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Daemon:
    """Wire every piece of the daemon for ``config`` on ``reactor``.

    ``store`` and ``notifier`` replace the ones the config and environment would give
    (tests); ``reload_config`` re-reads the config for SIGHUP; ``run_in_thread`` runs the
    journal's and checkpoints' blocking file work (default: the reactor's thread pool).
    With the journal on, the node's state directory is claimed and recovered here, before
    anything serves; a held node id raises NodeIdHeldError.
    """
    notifier = notifier or SystemdNotifier(None)
    aggregator = new_aggregator(config, reactor.seconds())
    dedup = config.dedup
    recent_ids = RecentIds(dedup.horizon, dedup.max_ids) if dedup.enabled else None
    durability = None
    if config.journal.enabled:
        slots = 1 if config.store.node_id else DEFAULT_NODE_ID_SLOTS
        node = claim_node_state(
            data_directory(config.store, environ), configured_node_id(config), slots=slots
        )
        durability = open_durability(
            config.journal,
            node,
            aggregator,
            clock=reactor,
            run_in_thread=run_in_thread or _thread_pool_runner(reactor),
            recent_ids=recent_ids,
        )
    else:
        log.warn(
            "journal.enabled is false: events answered 202 are only in memory until the "
            "next flush writes them to the store; a crash or kill -9 loses them"
        )
    if store is None:
        claimed = durability.node.node_id if durability is not None else None
        store = open_store(config, reactor, environ, node_id=claimed)
    shutdown_errors: list[str] = []

    def fatal(reason: str) -> None:
        shutdown_errors.append(reason)
        reactor.stop()

    telemetry = Telemetry()
    pipeline = build_pipeline(
        config,
        reactor,
        store,
        telemetry,
        aggregator,
        durability,
        recent_ids=recent_ids,
        on_fatal=fatal,
    )
    monitors = build_monitors(config, reactor, pipeline, telemetry)
    browser = BrowserPolicy(
        visitors=VisitorIds(period=config.privacy.salt_rotation),
        bots=BotDetector(),
        drops=BrowserDrops(),
        honor_do_not_track=config.privacy.honor_do_not_track,
    )
    salts = SaltRotation(pipeline.store_service, browser.visitors, clock=reactor)
    lifecycle = Lifecycle()
    listener_states = tuple(ListenerState(endpoint) for endpoint in config.server.listen)
    metrics_states = tuple(ListenerState(endpoint) for endpoint in config.server.metrics_listen)
    connections = ConnectionCounts()
    status = StatusSource(
        aggregator=pipeline.aggregator,
        queue=pipeline.queue,
        workers=pipeline.workers,
        flush=pipeline.flush,
        store_service=pipeline.store_service,
        retention=pipeline.retention,
        lifecycle=lifecycle,
        listeners=(*listener_states, *metrics_states),
        load=monitors.load,
        durability=durability,
        browser_drops=browser.drops,
        recent_ids=recent_ids,
        connections=connections,
    )
    telemetry.registry.register(
        DaemonCollector(
            status=lambda: status.snapshot(reactor.seconds()),
            analytics=pipeline.aggregator.metrics,
            rules=pipeline.aggregator.rules,
            reserved=frozenset(family.name for family in telemetry.registry.collect()),
        )
    )
    http = build_http(
        config,
        reactor,
        pipeline,
        status,
        telemetry,
        listener_states,
        browser,
        metrics_states=metrics_states,
        connections=connections,
    )
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
        monitors=(monitors.load, monitors.lag, salts, http.feed),
        shutdown_timeout=config.server.shutdown_timeout,
        log_observer=log_observer,
        shutdown_errors=shutdown_errors,
        notify=notify,
        on_stopping=notifier.stopping,
        durability=durability,
    )
    reloader = build_reloader(config, http, log_observer, notifier, reload_config)
    # Only the error list, not the service: a reference from the reactor would keep every
    # sketch alive past interpreter teardown (nanobind then prints leak warnings).
    reactor.addSystemEventTrigger("after", "shutdown", exit_status, reactor, shutdown_errors)
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


def new_aggregator(config: Config, now: float) -> Aggregator:
    """An empty aggregator as the config builds it (also the scratch one that holds another
    node's publication)."""
    return Aggregator(
        window_sizes=tuple(resolution.size for resolution in config.windows.resolutions),
        grace=config.windows.grace,
        max_dimension_values=config.limits.max_dimension_values,
        started_at=now,
        rules=rules_of(config.metrics.builtin, config.metrics.rules, web=config.metrics.web),
    )


def _thread_pool_runner(reactor: Any) -> RunInThread:
    def run(work: Callable[[], Any]) -> Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), work)

    return run


def build_pipeline(
    config: Config,
    reactor: Any,
    store: WindowStore,
    telemetry: Telemetry,
    aggregator: Aggregator,
    durability: Durability | None,
    *,
    recent_ids: RecentIds | None = None,
    on_fatal: Callable[[str], None],
) -> Pipeline:
    resolutions = config.windows.resolutions
    recovered = durability.recovered if durability is not None else None
    queue = IntakeQueue(capacity=config.processing.buffer_size)
    store_service = StoreService(
        store,
        aggregator,
        clock=reactor,
        retry_initial=config.store.retry_initial,
        # Acknowledged data waits in the journal while the store is away: retry promptly.
        retry_max=config.store.retry_max
        if durability is None
        else min(config.store.retry_max, JOURNAL_RETRY_MAX),
        on_fatal=on_fatal,
        # A checkpoint already holds this node's totals: merging the stored ones would
        # count them twice.
        restore_totals=recovered is None or not recovered.from_checkpoint,
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
        checkpointer=durability.checkpointer if durability is not None else None,
        pending=recovered.pending if recovered is not None else (),
        # After a recovery every total is written once, whatever the store last got.
        totals_since=-math.inf if recovered is not None else None,
    )
    retention = RetentionService(
        store_service,
        resolutions,
        clock=reactor,
        interval=config.store.retention_interval,
        batch_size=config.store.retention_batch,
    )
    workers = WorkerPool(
        queue,
        aggregator,
        clock=reactor,
        worker_count=config.processing.worker_count,
        coalesce_requests=config.processing.coalesce_requests,
        on_applied=durability.progress.applied if durability is not None else lambda seq: None,
    )
    intake = Intake(
        queue,
        durability.journal if durability is not None else None,
        lambda: flush.backlogged,
        recent_ids,
    )
    return Pipeline(aggregator, queue, store_service, flush, retention, workers, intake)


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
    browser: BrowserPolicy | None = None,
    *,
    metrics_states: tuple[ListenerState, ...] = (),
    connections: ConnectionCounts | None = None,
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
        slicer=Slicer.on(reactor),
        peers=_peer_windows(config, reactor, pipeline.store_service),
    )
    figures = LiveFigures(
        query=query, status=status.snapshot, clock=reactor, resolutions=resolutions
    )
    feed = LiveFeed(clock=reactor, snapshot=figures.snapshot)
    dashboard = DashboardApp(feed=feed, tracker_script_path=config.tracker.script_path)
    limiters = RequestLimiters(config.rate_limits)
    ingest = IngestHandler(
        clock=reactor,
        intake=pipeline.intake,
        limits=config.limits,
        telemetry=telemetry,
        limiters=limiters,
        browser=browser,
        history_age=max(resolution.retention for resolution in config.windows.resolutions),
    )
    queries = QueryApp(
        clock=reactor,
        query=query,
        resolutions=resolutions,
        figures=config.windows.figures,
        sliding=config.windows.sliding,
    )
    routes = route_table(config.tracker)  # the tracker's paths are the config's
    edge = EdgeResource(
        {
            OPS: ops.app.resource(),
            INGEST_APP: IngestApp(ingest).app.resource(),
            QUERY_APP: queries.app.resource(),
            DASHBOARD: dashboard.app.resource(),
            TRACKER: TrackerApp(endpoint_path=config.tracker.endpoint_path).app.resource(),
        },
        AccessPolicy.from_config(config),
        routes=routes,
        limiters=limiters,
        clock=reactor,
    )
    connections = connections if connections is not None else ConnectionCounts()

    def new_site(edge: EdgeResource) -> RTASite:
        return RTASite(
            edge,
            routes=edge.routes,
            clock=reactor,
            max_body_bytes=config.limits.max_body_bytes,
            access_log=config.logging.access_log,
            telemetry=telemetry,
            request_timeout=config.server.request_timeout,
            write_timeout=config.server.write_timeout,
            idle_timeout=config.server.idle_timeout,
            max_connections=config.server.max_connections,
            connections=connections,
        )

    site = new_site(edge)
    # The fast lane answers ingest itself and hands the rest to the site; off, the site
    # (twisted.web) answers everything.
    factory: IProtocolFactory = (
        FastLane(site=site, edge=edge, ingest=ingest, clock=reactor)
        if config.server.fast_lane
        else site
    )
    # Prometheus on its own ports: twisted.web alone (no ingest there), its own connection cap.
    metrics_edge = metrics_site = None
    if metrics_states:
        metrics_edge = metrics_edge_of(
            ops.app.resource(), edge.policy, routes=routes, limiters=limiters, clock=reactor
        )
        metrics_site = new_site(metrics_edge)
    listeners = tuple(
        HTTPListener(
            reactor,
            state.description,
            served_by,
            state,
            backlog=config.server.listen_backlog,
            on_accept_error=lambda reason: telemetry.accept_errors.labels(reason=reason).inc(),
        )
        for states, served_by in ((listener_states, factory), (metrics_states, metrics_site))
        if served_by is not None
        for state in states
    )
    return Http(site, edge, ingest, limiters, feed, listeners, metrics_site, metrics_edge)


def _peer_windows(config: Config, reactor: Any, store_service: StoreService) -> PeerWindows | None:
    """Other nodes' live windows, from their publications (only nodes with a journal
    publish; without one this node publishes nothing and reads nothing)."""
    if not config.journal.enabled:
        return None

    def read() -> Deferred[list[Publication]]:
        if not store_service.opened:
            return succeed([])  # the stored rows are unavailable too: the query says so
        store = store_service.store
        return store.read_publications(exclude_node=store.node_id)

    return PeerWindows(
        read=read,
        scratch_aggregator=lambda: new_aggregator(config, reactor.seconds()),
        clock=reactor,
    )


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
        policy = AccessPolicy.from_config(new)
        for site in (http.site, http.metrics_site):
            if site is not None:
                site.access_log = new.logging.access_log
                site.max_body_bytes = new.limits.max_body_bytes
        for edge in (http.edge, http.metrics_edge):
            if edge is not None:
                edge.policy = policy
        http.limiters.configure(new.rate_limits)
        http.ingest.limits = new.limits

    return Reloader(
        load=reload_config or (lambda: config),
        current=config,
        apply=apply,
        before=lambda: notifier.reloading(time.monotonic_ns() // 1000),
        after=lambda: notifier.ready(),
    )


def exit_status(reactor: Any, shutdown_errors: list[str]) -> None:
    """After the reactor stopped: a failed shutdown step (or a supervised child that failed
    its start or stop) ends the process with status 1, not a clean signal exit."""
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
