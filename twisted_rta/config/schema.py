"""The config schema: frozen attrs sections whose fields know how to parse their YAML value."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from attrs import field, frozen

from twisted_rta.aggregation.resolution import Resolution
from twisted_rta.config.endpoints import check_endpoint
from twisted_rta.config.metric_rules import RuleEntry, metric_rules, rules_of
from twisted_rta.config.parsers import (
    ConfigError,
    Parser,
    boolean,
    byte_size,
    choice,
    duration,
    integer,
    mapping_list,
    network,
    number,
    optional,
    shown,
    string_list,
    text,
)
from twisted_rta.query.figures import (
    DEFAULT_FIGURES_OF,
    SLIDING_FIGURES,
    WINDOW_FIGURES,
    SlidingFigures,
    WindowFigures,
)


def setting(default: Any, parse: Parser, doc: str = "", *, reload: bool | None = None) -> Any:
    """An attrs field that knows how to parse its YAML value.

    ``reload``: whether a SIGHUP applies a new value to the running daemon; ``None`` takes the
    enclosing section's mark (see ``reloadable_keys``).
    """
    return field(default=default, metadata={"parse": parse, "doc": doc, "reload": reload})


def section(cls: type, *, reload: bool | None = None) -> Any:
    """A nested section; ``reload`` is the default mark of every key in it (``None``: the
    enclosing section's, and at the top level: restart only)."""
    return field(factory=cls, metadata={"section": cls, "reload": reload})


@frozen
class ServerConfig:
    listen: tuple[str, ...] = setting(
        ("tcp:8080:interface=0.0.0.0",), string_list(item=check_endpoint, allow_empty=False)
    )
    # The kernel's queue of connections not yet accepted (Twisted's default is 50), for
    # tcp/tcp6/ssl/reuseport endpoints that do not set backlog= themselves.
    listen_backlog: int = setting(1024, integer(minimum=1, maximum=65535))
    shutdown_timeout: float = setting(10.0, duration(minimum=0.1))
    # A request's head and body must arrive within this (slowloris defence).
    request_timeout: float = setting(30.0, duration(minimum=0.1))
    # A response must be taken by the client within this once written (slow readers).
    write_timeout: float = setting(30.0, duration(minimum=0.1))
    # A kept-alive connection with no request for this long is closed.
    idle_timeout: float = setting(60.0, duration(minimum=0.1))
    max_connections: int = setting(10_000, integer(minimum=1))
    # POST /api/v1/events and /events/batch parsed by httptools and answered without
    # twisted.web (every other request is bridged to it); false: twisted.web answers all.
    fast_lane: bool = setting(True, boolean)
    # Endpoints that serve /metrics only (Prometheus on its own port), with its auth rules.
    metrics_listen: tuple[str, ...] = setting((), string_list(item=check_endpoint))
    # Peers whose X-Forwarded-For is believed (addresses or CIDR networks).
    trusted_proxies: tuple[str, ...] = setting(
        (), string_list(item=lambda v, p: network(v, p)), reload=True
    )


@frozen
class LoggingConfig:
    level: str = setting("info", choice("debug", "info", "warn", "error"))
    format: str = setting("console", choice("console", "json"))
    access_log: bool = setting(True, boolean)
    # stdout, stderr, or a file path (appended to; reopened on SIGHUP for logrotate).
    output: str = setting("stdout", text, reload=False)


@frozen
class ProcessingConfig:
    worker_count: int = setting(2, integer(minimum=1, maximum=256))
    buffer_size: int = setting(100_000, integer(minimum=1))
    # How many waiting requests a worker takes in one pass (and at most 1000 events).
    coalesce_requests: int = setting(1000, integer(minimum=1, maximum=100_000))


DEFAULT_RESOLUTIONS = (
    Resolution(60.0, 2 * 86400.0),
    Resolution(3600.0, 90 * 86400.0),
    Resolution(86400.0, 2 * 365 * 86400.0),
)


def resolutions(value: Any, path: str) -> tuple[Resolution, ...]:
    """A non-empty list of ``{size, retention}``, each size a multiple of the one before."""
    if not isinstance(value, list) or not value:
        expected = "must be a non-empty list of {size, retention}"
        raise ConfigError(path, f"{expected}, got {shown(value)}")
    parsed: list[Resolution] = []
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            expected = "must be a mapping with size and retention"
            raise ConfigError(where, f"{expected}, got {shown(item)}")
        unknown = set(item) - {"size", "retention"}
        if unknown:
            raise ConfigError(
                f"{where}.{sorted(unknown)[0]}", "unknown key (expected size, retention)"
            )
        for key in ("size", "retention"):
            if key not in item:
                raise ConfigError(f"{where}.{key}", "is required")
        size = duration(minimum=1.0, maximum=366 * 86400.0)(item["size"], f"{where}.size")
        retention = duration(minimum=size)(item["retention"], f"{where}.retention")
        if parsed:
            previous = parsed[-1].size
            if size <= previous or size % previous:
                raise ConfigError(
                    f"{where}.size",
                    f"must be a whole multiple of the previous size ({previous:g}s) and larger, "
                    f"got {shown(item['size'])}",
                )
        parsed.append(Resolution(size, retention))
    return tuple(parsed)


def _figures_list(value: Any, path: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    figures = string_list()(value, path)
    for index, figure in enumerate(figures):
        if figure not in allowed:
            raise ConfigError(
                f"{path}[{index}]", f"must be one of {', '.join(allowed)}, got {shown(figure)}"
            )
    if not figures:
        raise ConfigError(path, f"must name at least one of {', '.join(allowed)}")
    return tuple(dict.fromkeys(figures))


def window_figures(value: Any, path: str) -> tuple[WindowFigures, ...]:
    """``[{size, figures, of}]``: what the windows of a resolution report (query/figures.py);
    each size once (that it is a resolution is checked with the resolutions)."""
    parsed: list[WindowFigures] = []
    for where, item in mapping_list(value, path, ("size", "figures", "of"), ("size", "figures")):
        size = duration(minimum=1.0)(item["size"], f"{where}.size")
        if any(entry.size == size for entry in parsed):
            raise ConfigError(f"{where}.size", f"{shown(item['size'])} is listed twice")
        figures = _figures_list(item["figures"], f"{where}.figures", WINDOW_FIGURES)
        of = text(item.get("of", DEFAULT_FIGURES_OF), f"{where}.of")
        parsed.append(WindowFigures(size, figures, of))
    return tuple(parsed)


def sliding_figures(value: Any, path: str) -> tuple[SlidingFigures, ...]:
    """``[{size, step, figures}]``: figures over the last ``size``, every ``step``."""
    parsed: list[SlidingFigures] = []
    for where, item in mapping_list(value, path, ("size", "step", "figures"), ("size", "step")):
        size = duration(minimum=1.0, maximum=86400.0)(item["size"], f"{where}.size")
        step = duration(minimum=1.0, maximum=size)(item["step"], f"{where}.step")
        figures = _figures_list(
            item.get("figures", list(SLIDING_FIGURES)), f"{where}.figures", SLIDING_FIGURES
        )
        parsed.append(SlidingFigures(size, step, figures))
    return tuple(parsed)


@frozen
class WindowsConfig:
    resolutions: tuple[Resolution, ...] = setting(DEFAULT_RESOLUTIONS, resolutions)
    # What the windows of a resolution report on /api/v1/windows (count, sum, avg, p95, p99).
    figures: tuple[WindowFigures, ...] = setting((), window_figures)
    # Figures over the last size, every step, from the finest windows (rate, unique).
    sliding: tuple[SlidingFigures, ...] = setting((), sliding_figures)
    flush_interval: float = setting(5.0, duration(minimum=0.05, maximum=3600.0))
    grace: float = setting(10.0, duration(minimum=0.0, maximum=86400.0))
    keep_closed: int = setting(60, integer(minimum=0, maximum=100_000))


@frozen
class LimitsConfig:
    max_body_bytes: int = setting(1_048_576, byte_size())
    max_batch_events: int = setting(1000, integer(minimum=1, maximum=100_000))
    max_event_bytes: int = setting(65_536, byte_size())
    max_properties: int = setting(64, integer(minimum=0, maximum=10_000))
    max_property_depth: int = setting(5, integer(minimum=1, maximum=64))
    max_property_key_length: int = setting(128, integer(minimum=1))
    max_string_length: int = setting(2048, integer(minimum=1))
    max_future_skew: float = setting(300.0, duration())
    max_event_age: float = setting(604_800.0, duration(minimum=1.0))
    # Baked into the aggregator's metric sets when they are made: restart only.
    max_dimension_values: int = setting(10_000, integer(minimum=1), reload=False)


@frozen
class StoreConfig:
    url: str | None = setting(None, optional(text))
    data_dir: str | None = setting(None, optional(text))
    node_id: str | None = setting(None, optional(text))
    max_connections: int = setting(4, integer(minimum=1, maximum=100))
    max_pending_windows: int = setting(10_000, integer(minimum=1))
    retry_initial: float = setting(1.0, duration(minimum=0.01))
    retry_max: float = setting(60.0, duration(minimum=0.01))
    retention_interval: float = setting(600.0, duration(minimum=1.0))
    retention_batch: int = setting(5000, integer(minimum=1))


@frozen
class JournalConfig:
    """The write-ahead journal of accepted events and the checkpoints of the aggregator."""

    # false: today's behaviour without a journal (a crash loses what was not yet stored).
    enabled: bool = setting(True, boolean)
    # interval: written to the OS before the 202, fsync every fsync_interval (survives a
    # process crash); always: the 202 waits for the fsync that covers it (power loss too).
    fsync: str = setting("interval", choice("interval", "always"))
    fsync_interval: float = setting(0.2, duration(minimum=0.001, maximum=60.0))
    # Past this, new events get 503 journal_full instead of piling up while the store is down.
    max_bytes: int = setting(1 << 30, byte_size(minimum=1 << 20))
    segment_bytes: int = setting(64 << 20, byte_size(minimum=1 << 16))


@frozen
class DedupConfig:
    """De-duplication of resent events by their client-given id (ingest/dedup.py)."""

    enabled: bool = setting(True, boolean)
    # An id taken within this long before is acknowledged and not counted again.
    horizon: float = setting(86_400.0, duration(minimum=60.0, maximum=30 * 86_400.0))
    # Ids remembered at most (about 90 bytes each); when full the oldest go first.
    max_ids: int = setting(1_000_000, integer(minimum=1_000, maximum=100_000_000))


@frozen
class IngestCorsConfig:
    allowed_origins: tuple[str, ...] = setting(("*",), string_list())


@frozen
class QueryCorsConfig:
    allowed_origins: tuple[str, ...] = setting((), string_list())


@frozen
class CorsConfig:
    """Browsers may post beacons from anywhere; business data is readable by none."""

    ingest: IngestCorsConfig = section(IngestCorsConfig)
    query: QueryCorsConfig = section(QueryCorsConfig)


SCOPES = ("ingest", "read", "admin")


@frozen
class ApiKeyConfig:
    """An API key by name; only the SHA-256 digest of the key is kept in memory."""

    name: str
    sha256: str = field(repr=False)
    scopes: tuple[str, ...]
    # The sites this key may read (README: "Web analytics"); None: every site and every
    # other figure.
    sites: tuple[str, ...] | None = None


def api_keys(value: Any, path: str) -> tuple[ApiKeyConfig, ...]:
    if not isinstance(value, list):
        raise ConfigError(
            path, f"must be a list of {{name, key or sha256, scopes, sites}}, got {shown(value)}"
        )
    keys: list[ApiKeyConfig] = []
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(where, "must be a mapping with name, key or sha256, and scopes")
        unknown = sorted(set(item) - {"name", "key", "sha256", "scopes", "sites"})
        if unknown:
            raise ConfigError(
                f"{where}.{unknown[0]}", "unknown key (expected name, key, sha256, scopes, sites)"
            )
        name = text(item.get("name"), f"{where}.name")
        if ("key" in item) == ("sha256" in item):
            raise ConfigError(where, "give exactly one of key or sha256")
        if "key" in item:
            key = item["key"]
            if not isinstance(key, str) or len(key) < 16:
                raise ConfigError(f"{where}.key", "must be a string of at least 16 characters")
            digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        else:
            digest = item["sha256"]
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise ConfigError(f"{where}.sha256", "must be 64 hexadecimal characters")
            digest = digest.lower()
        scopes = string_list(item=choice(*SCOPES), allow_empty=False)(
            item.get("scopes"), f"{where}.scopes"
        )
        sites = None
        if "sites" in item:
            sites = string_list(allow_empty=False)(item["sites"], f"{where}.sites")
        keys.append(ApiKeyConfig(name, digest, scopes, sites))
    names = [key.name for key in keys]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise ConfigError(path, f"key names must be unique; {duplicate!r} appears twice")
    return tuple(keys)


@frozen
class AuthConfig:
    keys: tuple[ApiKeyConfig, ...] = setting((), api_keys)
    # Let Prometheus scrape /metrics without a key.
    public_metrics: bool = setting(False, boolean)


@frozen
class IngestRateConfig:
    requests_per_second: float = setting(1000.0, number(minimum=0.0))
    requests_burst: float = setting(2000.0, number(minimum=1.0))
    events_per_second: float = setting(100_000.0, number(minimum=0.0))
    events_burst: float = setting(200_000.0, number(minimum=1.0))


@frozen
class ReadRateConfig:
    requests_per_second: float = setting(100.0, number(minimum=0.0))
    requests_burst: float = setting(200.0, number(minimum=1.0))


@frozen
class RateLimitsConfig:
    """Token buckets per API key, or per client address for anonymous requests."""

    enabled: bool = setting(True, boolean)
    ingest: IngestRateConfig = section(IngestRateConfig)
    read: ReadRateConfig = section(ReadRateConfig)
    # Buckets kept at most; the least recently used go first (an address-spraying client
    # cannot grow memory without bound). Restart only: the bucket tables take it when made.
    max_clients: int = setting(100_000, integer(minimum=1), reload=False)


@frozen
class PrivacyConfig:
    """The browser endpoints' cookieless visitors (README: "Web analytics")."""

    # How long a visitor keeps one id: the salts of the hash rotate this often (UTC-aligned).
    salt_rotation: float = setting(86400.0, duration(minimum=1.0, maximum=366 * 86400.0))
    # Browser events sent with DNT: 1 or Sec-GPC: 1 are answered 202 and not counted.
    honor_do_not_track: bool = setting(False, boolean)


# A path segment of letters, digits and "._~-": nothing to percent-decode, nothing that needs
# quoting where the path is written (the served script, the OpenAPI document, a log line).
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


def route_path(value: Any, path: str) -> str:
    """An absolute URL path of plain segments: no query, fragment, template or escapes."""
    checked = text(value, path)
    segments = checked.split("/")
    if (
        len(checked) > 200
        or segments[0] != ""
        or not all(_PATH_SEGMENT.fullmatch(segment) for segment in segments[1:])
        or any(segment in (".", "..") for segment in segments)
    ):
        raise ConfigError(
            path,
            "must be a path such as /js/rta.js: a leading /, then segments of letters, "
            "digits and ._~- separated by single slashes (no ?, #, {, % or spaces; at most "
            f"200 characters), got {shown(value)}",
        )
    return checked


@frozen
class TrackerConfig:
    """The first-party tracker script (README: "Web analytics"). Restart only: the route
    table is built at start."""

    # Where the script is served. Rename it when ad-blockers block the default name.
    script_path: str = setting("/js/rta.js", route_path)
    # Where the served script posts its events: another name for the browser endpoint
    # (/api/event itself always stays, for Plausible's trackers).
    endpoint_path: str = setting("/api/event", route_path)


@frozen
class MetricsConfig:
    """Metric rules (README: "Define your metrics"). Restart only: a SIGHUP that changes
    them says so and keeps the running rules."""

    # The Go original's metrics (pageviews, page_views:<page>, clicks, revenue...).
    builtin: bool = setting(True, boolean)
    # The web analytics metrics, per site (visitors, visits, sources...; README: "Web
    # analytics"): they take only events with a properties.site.
    web: bool = setting(True, boolean)
    rules: tuple[RuleEntry, ...] = setting((), metric_rules)


@frozen
class Config:
    """The whole config. ``reload=True`` marks what a SIGHUP applies to the running daemon
    (a key may override its section's mark); everything else waits for a restart."""

    server: ServerConfig = section(ServerConfig)
    logging: LoggingConfig = section(LoggingConfig, reload=True)
    processing: ProcessingConfig = section(ProcessingConfig)
    windows: WindowsConfig = section(WindowsConfig)
    limits: LimitsConfig = section(LimitsConfig, reload=True)
    store: StoreConfig = section(StoreConfig)
    journal: JournalConfig = section(JournalConfig)
    dedup: DedupConfig = section(DedupConfig)
    cors: CorsConfig = section(CorsConfig, reload=True)
    auth: AuthConfig = section(AuthConfig, reload=True)
    rate_limits: RateLimitsConfig = section(RateLimitsConfig, reload=True)
    metrics: MetricsConfig = section(MetricsConfig)
    privacy: PrivacyConfig = section(PrivacyConfig)
    tracker: TrackerConfig = section(TrackerConfig)


def _figure_errors(windows: WindowsConfig) -> list[ConfigError]:
    """Figures name resolutions that exist; sliding ones are made of the finest windows."""
    errors: list[ConfigError] = []
    sizes = [resolution.size for resolution in windows.resolutions]
    for index, figures in enumerate(windows.figures):
        if figures.size not in sizes:
            listed = ", ".join(f"{size:g}s" for size in sizes)
            errors.append(
                ConfigError(
                    f"windows.figures[{index}].size",
                    f"must be one of windows.resolutions' sizes ({listed}); got {figures.size:g}s",
                )
            )
    finest = sizes[0]
    for index, sliding in enumerate(windows.sliding):
        for key, seconds in (("size", sliding.size), ("step", sliding.step)):
            if seconds % finest:
                errors.append(
                    ConfigError(
                        f"windows.sliding[{index}].{key}",
                        f"must be a whole multiple of the finest window ({finest:g}s); "
                        f"got {seconds:g}s",
                    )
                )
    return errors


def relation_errors(config: Config) -> list[ConfigError]:
    """Rules between keys of different sections, checked on every Config that will run."""
    errors: list[ConfigError] = []
    buffer_size, max_batch = config.processing.buffer_size, config.limits.max_batch_events
    if buffer_size < max_batch:
        # The intake queue takes a batch whole or not at all: a full batch that can never fit
        # would get 503 queue_full (retry later) forever.
        errors.append(
            ConfigError(
                "processing.buffer_size",
                f"must be at least limits.max_batch_events ({max_batch}), or a full batch "
                f"could never be queued; got {buffer_size}",
            )
        )
    errors.extend(_figure_errors(config.windows))
    try:
        rules_of(config.metrics.builtin, config.metrics.rules, web=config.metrics.web)
    except ConfigError as error:
        errors.append(error)
    # Imported here: web/ imports this package (the route table takes TrackerConfig).
    from twisted_rta.web.routes import tracker_path_clashes

    errors.extend(
        ConfigError(f"tracker.{key}", f"is already taken by {other}; choose another path")
        for key, other in tracker_path_clashes(config.tracker)
    )
    return errors
