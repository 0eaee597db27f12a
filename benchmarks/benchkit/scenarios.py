"""The scenarios: what load each one sends, and the figures it takes from the daemon."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from benchkit.daemon_api import DaemonApi
from benchkit.loadgen import LoadRun, WrkJob, run_wrk
from benchkit.machine import Pinning
from benchkit.procstat import core_busy_seconds, cpu_seconds, peak_rss_mib, rss_mib
from benchkit.server import ServerProcess

BENCH_DIR = Path(__file__).resolve().parent.parent
USERS, SESSIONS, PAGES = 1_000_000, 200_000, 10_000
# The browser scenario's clients: X-Forwarded-For addresses, and pre-built hits per wrk thread
# (the pool draws from every address: ~48k distinct visitors per wrk thread).
BROWSER_ADDRESSES, BROWSER_POOL = 50_000, 50_000
# The daemon's defaults (config/rta.yaml): the pages10k scenario waits on them.
WINDOW_SECONDS, GRACE_SECONDS, FLUSH_INTERVAL_SECONDS = 60, 10, 5


@dataclass(frozen=True)
class Settings:
    duration_s: float
    warmup_s: float
    memory_events: int
    ceiling_s: float
    wrk_threads: int
    wrk: str
    twistd: str
    pinning: Pinning
    workdir: Path
    # None: the config leaves the journal section out (the daemon's defaults); else a key
    # of JOURNAL_MODES, written into the daemon's config.
    journal: str | None = None
    # A key of LANES: which HTTP path answers the ingest POSTs (server.fast_lane).
    lane: str = "fast"


# --journal MODE -> the config's journal section. The journal lives in the daemon's data_dir,
# which is a fresh temp dir per daemon (see Daemon), so no run replays another's journal.
JOURNAL_MODES: dict[str, dict[str, Any]] = {
    "off": {"enabled": False},
    "interval": {"enabled": True, "fsync": "interval"},
    "always": {"enabled": True, "fsync": "always"},
}


# --lane / --compare -> server.fast_lane. "klein": twisted.web/Klein answers every request,
# the reference the fast httptools lane for POST /api/v1/events(/batch) is measured against.
LANES: dict[str, bool] = {"fast": True, "klein": False}


def ingest_job(name: str, *, batch: int, connections: int, pool: int, **extra: int) -> WrkJob:
    """POSTs of realistic events; batch 0 means one event per request."""
    args: dict[str, str | int] = {
        "path": "/api/v1/events" if batch == 0 else "/api/v1/events/batch",
        "batch": batch,
        "pool": pool,
        "users": USERS,
        "sessions": SESSIONS,
        "pages": PAGES,
        **extra,
    }
    return WrkJob(
        name,
        "ingest.lua",
        connections,
        args,
        events_per_request=max(batch, 1),
        count_bounded="quota" in extra,
    )


# Pools: ~20k distinct single events, 20k events of batch100, 50k events of batch1000 per
# wrk thread; bigger pools only cost wrk memory and start-up time.
SINGLE = ingest_job("single", batch=0, connections=50, pool=20_000)
BATCH100 = ingest_job("batch100", batch=100, connections=8, pool=200)
BATCH1000 = ingest_job("batch1000", batch=1000, connections=4, pool=50)
# Plausible hits (browser.lua): like single, one event per request and 50 connections.
BROWSER = WrkJob(
    "browser",
    "browser.lua",
    50,
    {"path": "/api/event", "pool": BROWSER_POOL, "pages": PAGES, "addresses": BROWSER_ADDRESSES},
)
# wrk poses as the sites' reverse proxy: the daemon takes the client's address (and so the
# visitor) from X-Forwarded-For. Rate limits are off in every scenario (daemon_config).
BROWSER_CONFIG: dict[str, Any] = {"server": {"trusted_proxies": ["127.0.0.1"]}}
READERS = (
    # Modest, fixed paces (see read.lua): about 2 + 2 + 5 + 5 requests/s.
    WrkJob(
        "all metrics", "read.lua", 1, {"path": "/api/v1/metrics", "delay_ms": 500}, timeout_s=30
    ),
    WrkJob(
        "metrics page",
        "read.lua",
        1,
        {"path": "/api/v1/metrics?prefix=page_views:&limit=1000", "delay_ms": 500},
        timeout_s=30,
    ),
    WrkJob(
        "series",
        "read.lua",
        1,
        {"path": "/api/v1/metrics/pageviews/series?from=-15m", "delay_ms": 200},
        timeout_s=30,
    ),
    WrkJob(
        "breakdown",
        "read.lua",
        1,
        {"path": "/api/v1/breakdown/page_views?limit=10", "delay_ms": 200},
        timeout_s=30,
    ),
)


def memory_job(events: int, threads: int) -> WrkJob:
    # Built per request from a counter, so every one of the 1M user ids really arrives.
    quota = math.ceil(events / 1000 / threads)
    return ingest_job("memory", batch=1000, connections=4, pool=0, counter=1, quota=quota)


def daemon_config(
    workdir: Path,
    level: str,
    journal: str | None = None,
    lane: str = "fast",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The daemon's config; ``extra``: a scenario's own keys, merged into their sections."""
    # limits.max_dimension_values and the windows stay at their defaults on purpose.
    config: dict[str, Any] = {
        "logging": {"level": level, "format": "console", "access_log": False},
        "processing": {"buffer_size": 200_000},
        "rate_limits": {"enabled": False},
        "store": {"data_dir": str(workdir / "store"), "node_id": "bench"},
        # Always written, so a run says which lane it measured whatever the default becomes.
        "server": {"fast_lane": LANES[lane]},
    }
    if journal is not None:
        # Not reloadable (nor is server.fast_lane): both configs the harness writes (info,
        # then warn) carry the same.
        config["journal"] = dict(JOURNAL_MODES[journal])
    for name, keys in (extra or {}).items():
        config[name] = {**config.get(name, {}), **keys}
    return config


@dataclass(frozen=True)
class Mark:
    at: float
    cpu_s: float
    events: int
    server_core_s: float
    load_core_s: float


def busy_cores(pinning: Pinning) -> tuple[float, float]:
    """Busy seconds of the server's core and of the load generator's (both: whole machine
    when not pinned)."""
    return core_busy_seconds(pinning.server_cpu), core_busy_seconds(pinning.load_cpu)


def machine_load(
    start: Mark, end: Mark, server_pid_cpu_s: float, pinning: Pinning
) -> dict[str, float]:
    """How much of the cores went elsewhere: the check that nothing else skewed the run."""
    wall = end.at - start.at
    server_core = 100 * (end.server_core_s - start.server_core_s) / wall
    load_core = 100 * (end.load_core_s - start.load_core_s) / wall
    if not pinning.enabled:
        # Daemon and wrk share every core: only the whole machine's busy share is known.
        return {"machine_busy_pct": round(server_core / len(os.sched_getaffinity(0)), 1)}
    return {
        # Everything on the server's core that is not the server: another process there
        # (a test run, a build) shows up here and makes the figures unreliable.
        # Clamped: per-process and per-core tick counts round differently (a few % off).
        "other_busy_pct_on_server_core": round(
            max(0.0, server_core - 100 * server_pid_cpu_s / wall), 1
        ),
        # wrk, the harness and anything else: near 100 means the generator may be the limit.
        "load_core_busy_pct": round(load_core, 1),
    }


class Daemon:
    """A fresh ``twistd -n rta`` per scenario, so peak RSS and counters are its own."""

    def __init__(
        self, settings: Settings, label: str, extra_config: dict[str, Any] | None = None
    ) -> None:
        self.settings = settings
        self.extra_config = extra_config
        if settings.journal is not None:
            label = f"{label}-journal-{settings.journal}"
        # A fresh directory for every daemon (repeated runs of a scenario too): its store and
        # its journal (data_dir/nodes/<node id>/) start empty, nothing is recovered at start.
        settings.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=settings.workdir))
        self.config_path = self.workdir / "rta.yaml"
        argv = [
            *settings.pinning.server_prefix(),
            settings.twistd,
            "-n",
            "--pidfile=",
            "rta",
            "-c",
            str(self.config_path),
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ]
        # Start at info: the port is only known from the "listening on" line. JSON is YAML.
        self.config_path.write_text(
            json.dumps(
                daemon_config(self.workdir, "info", settings.journal, settings.lane, extra_config),
                indent=2,
            )
        )
        self.server = ServerProcess(argv, cwd=self.workdir, log_path=self.workdir / "daemon.log")
        self.pid = self.server.pid
        self.exit_status: int | None = None

    def __enter__(self) -> Daemon:
        try:
            port = self.server.wait_for_port(timeout=60)
            # Then warn for the measured part, through the documented SIGHUP reload (a
            # --log-level override would survive reloads). The reload logs this line at info
            # and applies the new level in the same reactor call.
            offset = len(self.server.log_text())
            self.config_path.write_text(
                json.dumps(
                    daemon_config(
                        self.workdir,
                        "warn",
                        self.settings.journal,
                        self.settings.lane,
                        self.extra_config,
                    )
                )
            )
            self.server.signal(signal.SIGHUP)
            self.server.wait_for_log(re.compile("reloading the config"), 15, after=offset)
            self.api = DaemonApi(port)
            self.server.wait_until(self.api.ready, "GET /ready == 200", timeout=60)
            self._check_journal()
        except BaseException:
            self.server.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.exit_status = self.server.stop(timeout=60)

    def _check_journal(self) -> None:
        """The daemon runs with the journal the harness asked for (its /api/v1/stats says)."""
        wanted = self.settings.journal
        if wanted is None:
            return
        active = self.api.stats().get("journal") is not None
        if active != JOURNAL_MODES[wanted]["enabled"]:
            raise RuntimeError(
                f"asked for journal {wanted!r} but /api/v1/stats says the journal is "
                f"{'on' if active else 'off'}"
            )

    def journal_figures(self) -> dict[str, Any]:
        """The journal mode of this daemon and its size now (None: journal off)."""
        journal = self.api.stats().get("journal")
        return {
            "journal": self.settings.journal or "default",
            "journal_bytes": None if journal is None else journal["bytes"],
        }

    @property
    def exit_description(self) -> str:
        # twistd re-raises SIGTERM after a clean shutdown (README "Shutdown").
        if self.exit_status in (0, -signal.SIGTERM):
            return "clean"
        return f"status {self.exit_status}; log: {self.server.log_path}"

    def mark(self) -> Mark:
        events = self.api.total_events()
        return Mark(
            time.monotonic(), cpu_seconds(self.pid), events, *busy_cores(self.settings.pinning)
        )

    def drained_mark(self) -> Mark:
        self.api.drain()
        return self.mark()

    def load(
        self,
        settings: Settings,
        jobs: list[WrkJob],
        seconds: float,
        on_tick: Callable[[], None] = lambda: None,
    ) -> LoadRun:
        return run_wrk(
            jobs,
            port=self.api.port,
            duration_s=seconds,
            pinning=settings.pinning,
            threads=settings.wrk_threads,
            wrk=settings.wrk,
            on_tick=on_tick,
        )


def _figures(
    name: str,
    description: str,
    run: LoadRun,
    job: WrkJob,
    start: Mark,
    load_end: float,
    end: Mark,
    daemon: Daemon,
) -> dict[str, Any]:
    main = run[job.name]
    # wrk's own load time (it excludes building the request pool) plus the drain after it.
    wall = main.duration_s + (end.at - load_end)
    cpu = end.cpu_s - start.cpu_s
    events = end.events - start.events
    return {
        "scenario": name,
        "description": description,
        "requests_per_s": round(main.requests_per_s, 1),
        "latency_p50_ms": main.latency_ms["p50"],
        "latency_p99_ms": main.latency_ms["p99"],
        # Counted by the daemon (total_events), over the load plus the drain of its queue.
        "events": events,
        "events_per_s": round(events / wall, 1),
        "wall_s": round(wall, 3),
        "daemon_cpu_s": round(cpu, 2),
        "daemon_cpu_pct": round(100 * cpu / wall, 1),
        "peak_rss_mib": round(peak_rss_mib(daemon.pid), 1),
        "rss_end_mib": round(rss_mib(daemon.pid), 1),
        "non_2xx": main.non_2xx,
        # 503 queue_full: the daemon sheds load cheaply instead of queueing it; a lane that
        # answers faster than the workers aggregate shows it here rather than in events/s.
        "responses_503": main.statuses.get("503", 0),
        **machine_load(start, end, cpu, daemon.settings.pinning),
        **_wrk_cpu(run, main.duration_s),
        **daemon.journal_figures(),
        "load": main.summary(),
    }


def _wrk_cpu(run: LoadRun, seconds: float) -> dict[str, float]:
    # All wrk processes of the run share one core: near 100 means the generator is the limit.
    return {
        "wrk_cpu_s": round(run.wrk_cpu_s, 2),
        "wrk_cpu_pct": round(100 * run.wrk_cpu_s / seconds, 1),
    }


def timed(
    name: str,
    description: str,
    job: WrkJob,
    settings: Settings,
    readers: tuple[WrkJob, ...] = (),
    extra_config: dict[str, Any] | None = None,
    after: Callable[[Daemon], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Warm up, then ``job`` (and ``readers`` beside it) for the scenario's duration;
    ``extra_config``: keys the daemon's config gets for this scenario; ``after``: figures of
    the scenario's own, asked of the drained daemon and added to the record."""
    with Daemon(settings, name, extra_config) as daemon:
        if settings.warmup_s:
            daemon.load(settings, [job], settings.warmup_s)
            daemon.api.drain()
        start = daemon.mark()
        results = daemon.load(settings, [job, *readers], settings.duration_s)
        load_end = time.monotonic()
        record = _figures(
            name, description, results, job, start, load_end, daemon.drained_mark(), daemon
        )
        if readers:
            record["reads"] = {
                reader.name: {"path": reader.args["path"], **results[reader.name].summary()}
                for reader in readers
            }
        if after is not None:
            record.update(after(daemon))
    record["daemon_exit"] = daemon.exit_description
    return record


def memory(settings: Settings) -> dict[str, Any]:
    """A fixed number of events from 1M distinct users; RSS along the way."""
    target = settings.memory_events
    job = memory_job(target, settings.wrk_threads)
    # Bounded in time as well as in count: at least 5k events/s, at most 30 minutes.
    bound_s = min(1800.0, max(60.0, target / 5000))
    with Daemon(settings, "memory") as daemon:
        start = daemon.mark()
        samples: list[dict[str, float]] = []
        quarters: dict[str, dict[str, float]] = {}
        next_sample = 0.0

        def sample() -> None:
            nonlocal next_sample
            now = time.monotonic()
            if now < next_sample:
                return
            next_sample = now + 0.5
            events = daemon.api.total_events() - start.events
            rss = round(rss_mib(daemon.pid), 1)
            samples.append({"t_s": round(now - start.at, 2), "events": events, "rss_mib": rss})
            for quarter in (25, 50, 75):
                if str(quarter) not in quarters and events >= target * quarter / 100:
                    quarters[str(quarter)] = {"events": events, "rss_mib": rss}

        results = daemon.load(settings, [job], bound_s, on_tick=sample)
        load_end = time.monotonic()
        end = daemon.drained_mark()
        description = (
            f"{target:,} events in batches of 1000 from {USERS:,} distinct users "
            "(ids from a counter), 4 connections"
        )
        record = _figures("memory", description, results, job, start, load_end, end, daemon)
        quarters["100"] = {
            "events": end.events - start.events,
            "rss_mib": round(rss_mib(daemon.pid), 1),
        }
        record["memory"] = {
            "target_events": target,
            "completed": end.events - start.events >= target,
            "rss_mib_at_percent": quarters,
            "unique_users_estimate": daemon.api.stats()["unique_users"],
            "samples": samples,
        }
    record["daemon_exit"] = daemon.exit_description
    return record


def _flush_histogram(api: DaemonApi) -> dict[str, Any]:
    samples = api.prometheus_samples(
        "rta_flush_duration_seconds_bucket",
        "rta_flush_duration_seconds_count",
        "rta_flush_duration_seconds_sum",
        "rta_windows_written_total",
        "rta_windows_pending",
    )
    return {
        "buckets": {
            labels["le"]: value for labels, value in samples["rta_flush_duration_seconds_bucket"]
        },
        "count": samples["rta_flush_duration_seconds_count"][0][1],
        "sum": samples["rta_flush_duration_seconds_sum"][0][1],
        "written": samples["rta_windows_written_total"][0][1],
        "pending": samples["rta_windows_pending"][0][1],
    }


def _histogram_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    ticks = int(after["count"] - before["count"])
    seconds = after["sum"] - before["sum"]
    cumulative = {
        le: after["buckets"][le] - before["buckets"].get(le, 0.0) for le in after["buckets"]
    }
    bounds = sorted(cumulative, key=lambda le: math.inf if le == "+Inf" else float(le))
    per_bucket: dict[str, int] = {}
    below = 0.0
    for le in bounds:
        if cumulative[le] > below:
            per_bucket[le] = int(cumulative[le] - below)
        below = cumulative[le]
    slowest = next((le for le in bounds if ticks and cumulative[le] >= ticks), None)
    return {
        "ticks": ticks,
        "total_s": round(seconds, 4),
        "mean_ms": round(1000 * seconds / ticks, 2) if ticks else None,
        "slowest_tick_at_most_s": slowest,  # the histogram's resolution: a bucket bound
        "ticks_per_bucket_le_s": per_bucket,
        "windows_written": int(after["written"] - before["written"]),
    }


def pages10k(settings: Settings) -> dict[str, Any]:
    """Batches spanning all 10,000 pages, then the flush of the windows that hold them."""
    job = ingest_job("pages10k", batch=1000, connections=4, pool=50, pages_cycle=1)
    with Daemon(settings, "pages10k") as daemon:
        before = _flush_histogram(daemon.api)
        start = daemon.mark()
        started_wall = time.time()
        results = daemon.load(settings, [job], settings.duration_s)
        load_end = time.monotonic()
        end = daemon.drained_mark()
        ended_wall = time.time()
        record = _figures(
            "pages10k",
            "batches of 1000 events cycling through 10,000 "
            "distinct pages, 4 connections; then the window flush",
            results,
            job,
            start,
            load_end,
            end,
            daemon,
        )
        # Every minute window the load touched (asked of the daemon) must close (end + grace,
        # found by a tick every flush interval) and be written. Sleep until then rather than
        # poll: a /metrics scrape with 10k page series would run on the reactor inside the
        # timed flush.
        minutes = math.ceil((time.time() - started_wall) / WINDOW_SECONDS) + 1
        points = daemon.api.get_json(
            f"/api/v1/metrics/total_events/series?from=-{minutes}m&resolution=1m"
        )["points"]
        if not points:
            raise RuntimeError("no event reached any window")
        windows = len(points)
        last_start = datetime.fromisoformat(points[-1]["start"]).timestamp()
        due = last_start + WINDOW_SECONDS + GRACE_SECONDS
        time.sleep(max(0.0, due + FLUSH_INTERVAL_SECONDS + 1 - time.time()))
        deadline = time.monotonic() + 30
        after = _flush_histogram(daemon.api)
        while after["written"] - before["written"] < windows or after["pending"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{windows} window(s) not written 30s after they were due")
            time.sleep(2)
            after = _flush_histogram(daemon.api)
        stats = daemon.api.stats()
        record["flush"] = {
            "minute_windows_closed": windows,
            "wait_s": round(time.time() - ended_wall, 1),
            **_histogram_delta(before, after),
            "unique_pages_estimate": daemon.api.get_json("/api/v1/metrics/unique_pages")["value"],
            "dimension_overflow": stats["dimension_overflow"],
        }
    record["daemon_exit"] = daemon.exit_description
    return record


CEILING_JOBS = (
    SINGLE,
    BROWSER,
    BATCH100,
    BATCH1000,
    ingest_job("memory", batch=1000, connections=4, pool=0, counter=1),
)


def generator_ceiling(settings: Settings) -> list[dict[str, Any]]:
    """The same wrk scripts against a trivial responder pinned where the daemon runs."""
    workdir = settings.workdir / "generator-ceiling"
    workdir.mkdir(parents=True)
    argv = [
        *settings.pinning.server_prefix(),
        sys.executable,
        str(BENCH_DIR / "trivial_server.py"),
        "--max-seconds",
        "900",
    ]
    server = ServerProcess(argv, cwd=workdir, log_path=workdir / "server.log")
    records = []
    try:
        port = server.wait_for_port(timeout=30)
        for job in CEILING_JOBS:
            start = Mark(
                time.monotonic(), cpu_seconds(server.pid), 0, *busy_cores(settings.pinning)
            )
            run = run_wrk(
                [job],
                port=port,
                duration_s=settings.ceiling_s,
                pinning=settings.pinning,
                threads=settings.wrk_threads,
                wrk=settings.wrk,
            )
            result = run[job.name]
            end = Mark(time.monotonic(), cpu_seconds(server.pid), 0, *busy_cores(settings.pinning))
            wall, cpu = end.at - start.at, end.cpu_s - start.cpu_s
            records.append(
                {
                    "scenario": f"generator-ceiling/{job.name}",
                    "description": f"wrk's {job.name} load against benchmarks/trivial_server.py",
                    "requests_per_s": round(result.requests_per_s, 1),
                    "latency_p50_ms": result.latency_ms["p50"],
                    "latency_p99_ms": result.latency_ms["p99"],
                    # No daemon to count: what wrk offered (2xx answers x events per request).
                    "events_per_s": None,
                    "offered_events_per_s": round(
                        result.ok_responses * job.events_per_request / result.duration_s, 1
                    ),
                    "server_cpu_pct": round(100 * cpu / wall, 1),
                    "non_2xx": result.non_2xx,
                    **machine_load(start, end, cpu, settings.pinning),
                    **_wrk_cpu(run, result.duration_s),
                    "load": result.summary(),
                }
            )
    finally:
        server.stop(timeout=15)
    return records


def _single(settings: Settings) -> list[dict[str, Any]]:
    return [
        timed(
            "single", "POST /api/v1/events, one event per request, 50 connections", SINGLE, settings
        )
    ]


def _browser_figures(daemon: Daemon) -> dict[str, Any]:
    # That the hits were counted as browsers' (no crawler drop) from many visitors: every
    # client address is a visitor, so the estimate is near the pool's distinct visitors.
    stats = daemon.api.stats()
    return {
        "browser": {
            "unique_visitors_estimate": stats["unique_users"],
            "dropped": stats.get("browser_events_dropped", {}),
        }
    }


def _browser(settings: Settings) -> list[dict[str, Any]]:
    record = timed(
        "browser",
        "POST /api/event (Plausible), one hit per request from ~50k client addresses "
        "(X-Forwarded-For, trusted from 127.0.0.1), 50 connections",
        BROWSER,
        settings,
        extra_config=BROWSER_CONFIG,
        after=_browser_figures,
    )
    return [record]


def _batch100(settings: Settings) -> list[dict[str, Any]]:
    return [
        timed(
            "batch100",
            "POST /api/v1/events/batch, 100 events per request, 8 connections",
            BATCH100,
            settings,
        )
    ]


def _batch1000(settings: Settings) -> list[dict[str, Any]]:
    return [
        timed(
            "batch1000",
            "POST /api/v1/events/batch, 1000 events per request, 4 connections; counts 503s",
            BATCH1000,
            settings,
        )
    ]


def _reads(settings: Settings) -> list[dict[str, Any]]:
    return [
        timed(
            "reads",
            "batch100 ingest at full speed while four readers query at fixed paces",
            BATCH100,
            settings,
            READERS,
        )
    ]


SCENARIOS: dict[str, Callable[[Settings], list[dict[str, Any]]]] = {
    "single": _single,
    "browser": _browser,
    "batch100": _batch100,
    "batch1000": _batch1000,
    "reads": _reads,
    "memory": lambda settings: [memory(settings)],
    "pages10k": lambda settings: [pages10k(settings)],
    "generator-ceiling": generator_ceiling,
}
