"""YAML -> frozen attrs Config; every error names the full key path and what was expected."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs
import yaml
from attrs import field, frozen


class ConfigError(ValueError):
    """A configuration value is missing, unknown, mistyped or out of range."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


Parser = Callable[[Any, str], Any]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)\s*$")
_DURATION_UNITS = MappingProxyType(
    {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 365 * 86400.0}
)
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_SIZE_UNITS = MappingProxyType(
    {
        None: 1,
        "B": 1,
        "KB": 1000,
        "MB": 1000**2,
        "GB": 1000**3,
        "KiB": 1024,
        "MiB": 1024**2,
        "GiB": 1024**3,
    }
)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def integer(minimum: int | None = None, maximum: int | None = None) -> Parser:
    bounds = _bounds_text(minimum, maximum)

    def parse(value: Any, path: str) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if (
            not ok
            or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)
        ):
            raise ConfigError(path, f"must be an integer{bounds}, got {_show(value)}")
        return int(value)

    return parse


def _bounds_text(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" between {minimum:g} and {maximum:g}"
    if minimum is not None:
        return f" >= {minimum:g}"
    if maximum is not None:
        return f" <= {maximum:g}"
    return ""


def parse_duration(text: str) -> float:
    """``500ms``, ``10s``, ``1m``, ``1h``, ``1d``, ``2w``, ``2y`` -> seconds. Raises ValueError."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def duration(minimum: float = 0.0, maximum: float | None = None) -> Parser:
    """A duration string, or a bare number of seconds."""

    def parse(value: Any, path: str) -> float:
        seconds: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            try:
                seconds = parse_duration(value)
            except ValueError:
                seconds = None
        if seconds is None:
            raise ConfigError(
                path, f"must be a duration like 500ms, 10s, 1m, 1h or 1d, got {_show(value)}"
            )
        if seconds < minimum or (maximum is not None and seconds > maximum):
            raise ConfigError(
                path,
                f"must be a duration{_bounds_text(minimum, maximum)} seconds, got {_show(value)}",
            )
        return seconds

    return parse


def byte_size(minimum: int = 1) -> Parser:
    """An integer number of bytes, or ``64KiB`` / ``1MiB`` / ``1MB``."""

    def parse(value: Any, path: str) -> int:
        size: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        elif isinstance(value, str) and (match := _SIZE.match(value)):
            size = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
        if size is None or size < minimum:
            expected = f"must be a size in bytes >= {minimum} (e.g. 65536 or 64KiB)"
            raise ConfigError(path, f"{expected}, got {_show(value)}")
        return size

    return parse


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, f"must be true or false, got {_show(value)}")
    return value


def choice(*options: str) -> Parser:
    def parse(value: Any, path: str) -> str:
        if value not in options:
            raise ConfigError(path, f"must be one of {', '.join(options)}, got {_show(value)}")
        return str(value)

    return parse


def text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, f"must be a non-empty string, got {_show(value)}")
    return value


def number(minimum: float | None = None) -> Parser:
    def parse(value: Any, path: str) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or (minimum is not None and value < minimum):
            raise ConfigError(
                path, f"must be a number{_bounds_text(minimum, None)}, got {_show(value)}"
            )
        return float(value)

    return parse


def network(value: Any, path: str) -> str:
    """An IP address or CIDR network, e.g. 10.0.0.0/8 or ::1."""
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            pass
    raise ConfigError(path, f"must be an IP address or network like 10.0.0.0/8, got {_show(value)}")


def optional(parse: Parser) -> Parser:
    """``null`` keeps the built-in choice (documented per key); anything else is parsed."""

    def parse_optional(value: Any, path: str) -> Any:
        return None if value is None else parse(value, path)

    return parse_optional


def string_list(item: Parser = text, *, allow_empty: bool = True) -> Parser:
    def parse(value: Any, path: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or (not value and not allow_empty):
            kind = "list of strings" if allow_empty else "non-empty list of strings"
            raise ConfigError(path, f"must be a {kind}, got {_show(value)}")
        return tuple(item(element, f"{path}[{index}]") for index, element in enumerate(value))

    return parse


def setting(default: Any, parse: Parser, doc: str = "") -> Any:
    """An attrs field that knows how to parse its YAML value."""
    return field(default=default, metadata={"parse": parse, "doc": doc})


def section(cls: type) -> Any:
    return field(factory=cls, metadata={"section": cls})


@frozen
class ServerConfig:
    listen: tuple[str, ...] = setting(
        ("tcp:8080:interface=0.0.0.0",), string_list(allow_empty=False)
    )
    shutdown_timeout: float = setting(10.0, duration(minimum=0.1))
    # A request's head and body must arrive within this (slowloris defence).
    request_timeout: float = setting(30.0, duration(minimum=0.1))
    # A kept-alive connection with no request for this long is closed.
    idle_timeout: float = setting(60.0, duration(minimum=0.1))
    max_connections: int = setting(10_000, integer(minimum=1))
    # Peers whose X-Forwarded-For is believed (addresses or CIDR networks).
    trusted_proxies: tuple[str, ...] = setting((), string_list(item=lambda v, p: network(v, p)))


@frozen
class LoggingConfig:
    level: str = setting("info", choice("debug", "info", "warn", "error"))
    format: str = setting("console", choice("console", "json"))
    access_log: bool = setting(True, boolean)


@frozen
class ProcessingConfig:
    worker_count: int = setting(2, integer(minimum=1, maximum=256))
    buffer_size: int = setting(100_000, integer(minimum=1))


@frozen
class Resolution:
    """One window width and how long its stored windows are kept."""

    size: float
    retention: float


DEFAULT_RESOLUTIONS = (
    Resolution(60.0, 2 * 86400.0),
    Resolution(3600.0, 90 * 86400.0),
    Resolution(86400.0, 2 * 365 * 86400.0),
)


def resolutions(value: Any, path: str) -> tuple[Resolution, ...]:
    """A non-empty list of ``{size, retention}``, each size a multiple of the one before."""
    if not isinstance(value, list) or not value:
        expected = "must be a non-empty list of {size, retention}"
        raise ConfigError(path, f"{expected}, got {_show(value)}")
    parsed: list[Resolution] = []
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            expected = "must be a mapping with size and retention"
            raise ConfigError(where, f"{expected}, got {_show(item)}")
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
                    f"got {_show(item['size'])}",
                )
        parsed.append(Resolution(size, retention))
    return tuple(parsed)


@frozen
class WindowsConfig:
    resolutions: tuple[Resolution, ...] = setting(DEFAULT_RESOLUTIONS, resolutions)
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
    max_dimension_values: int = setting(10_000, integer(minimum=1))


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


def api_keys(value: Any, path: str) -> tuple[ApiKeyConfig, ...]:
    if not isinstance(value, list):
        raise ConfigError(
            path, f"must be a list of {{name, key or sha256, scopes}}, got {_show(value)}"
        )
    keys: list[ApiKeyConfig] = []
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(where, "must be a mapping with name, key or sha256, and scopes")
        unknown = sorted(set(item) - {"name", "key", "sha256", "scopes"})
        if unknown:
            raise ConfigError(
                f"{where}.{unknown[0]}", "unknown key (expected name, key, sha256, scopes)"
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
        keys.append(ApiKeyConfig(name, digest, scopes))
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
    # cannot grow memory without bound).
    max_clients: int = setting(100_000, integer(minimum=1))


@frozen
class Config:
    server: ServerConfig = section(ServerConfig)
    logging: LoggingConfig = section(LoggingConfig)
    processing: ProcessingConfig = section(ProcessingConfig)
    windows: WindowsConfig = section(WindowsConfig)
    limits: LimitsConfig = section(LimitsConfig)
    store: StoreConfig = section(StoreConfig)
    cors: CorsConfig = section(CorsConfig)
    auth: AuthConfig = section(AuthConfig)
    rate_limits: RateLimitsConfig = section(RateLimitsConfig)


def _seed_listen(raw: dict[str, Any], path: str) -> dict[str, Any]:
    """Accept the Go service's ``server.host`` + ``server.port`` as a tcp listen endpoint."""
    if "host" not in raw and "port" not in raw:
        return raw
    raw = dict(raw)
    host = raw.pop("host", "0.0.0.0")
    port = raw.pop("port", 8080)
    text(host, f"{path}.host")
    integer(minimum=0, maximum=65535)(port, f"{path}.port")
    if "listen" in raw:
        raise ConfigError(f"{path}.listen", "give either listen or host/port, not both")
    interface = host.replace(":", "\\:")  # IPv6 colons are escaped in endpoint strings
    raw["listen"] = [f"tcp:{port}:interface={interface}"]
    return raw


def _build(cls: type, raw: Any, path: str, errors: list[ConfigError]) -> Any:
    """Build ``cls`` from ``raw``, collecting every error instead of stopping at the first."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        errors.append(ConfigError(path, f"must be a mapping of keys, got {_show(raw)}"))
        return None
    try:
        if cls is ServerConfig:
            raw = _seed_listen(dict(raw), path)
    except ConfigError as error:
        errors.append(error)
        return None
    known = {f.name: f for f in attrs.fields(cls)}
    for key in raw:
        if key not in known:
            where = f"{path}.{key}" if path else str(key)
            errors.append(ConfigError(where, f"unknown key (expected one of {', '.join(known)})"))
    values: dict[str, Any] = {}
    for name, spec in known.items():
        if name not in raw:
            continue
        where = f"{path}.{name}" if path else name
        if "section" in spec.metadata:
            values[name] = _build(spec.metadata["section"], raw[name], where, errors)
            continue
        try:
            values[name] = spec.metadata["parse"](raw[name], where)
        except ConfigError as error:
            errors.append(error)
    return None if errors else cls(**values)


class ConfigErrors(ConfigError):
    """Several problems in one config; ``errors`` lists each, the message joins them."""

    def __init__(self, errors: list[ConfigError]) -> None:
        ValueError.__init__(self, "; ".join(str(error) for error in errors))
        self.path = errors[0].path
        self.errors = errors


def config_from_mapping(raw: Any) -> Config:
    errors: list[ConfigError] = []
    config = _build(Config, raw, "", errors)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)
    return config


def load_config(path: str | Path | None) -> Config:
    """Load and validate a YAML file; ``None`` gives the built-in defaults."""
    if path is None:
        return Config()
    try:
        source = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError("", f"cannot read config file {str(path)!r}: {error.strerror}") from None
    try:
        raw = yaml.safe_load(source)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"config file {str(path)!r} is not valid YAML{where}") from None
    return config_from_mapping(raw)


def summary(config: Any, prefix: str = "") -> dict[str, Any]:
    """The effective config as a flat ``section.key`` mapping, secrets redacted (startup log,
    reload diffs)."""
    flat: dict[str, Any] = {}
    for value_field in attrs.fields(type(config)):
        value = getattr(config, value_field.name)
        key = f"{prefix}{value_field.name}"
        if "section" in value_field.metadata:
            flat.update(summary(value, key + "."))
            continue
        if isinstance(value, tuple):
            value = [attrs.asdict(item) if attrs.has(type(item)) else item for item in value]
        flat[key] = _redact(key, value)
    return flat


def _redact(key: str, value: Any) -> Any:
    """Hide a database password and API key digests before they reach the log."""
    if key == "store.url" and isinstance(value, str):
        return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", value)
    if key == "auth.keys":
        return [{"name": item["name"], "scopes": item["scopes"]} for item in value]
    return value


def default_node_id(listen: tuple[str, ...], hostname: str) -> str:
    """hostname plus the first listen port, so two nodes on one host never share rows."""
    match = re.match(r"^(?:tcp6?|ssl):(?:port=)?(\d+)", listen[0]) if listen else None
    first = listen[0] if listen else ""
    suffix = match.group(1) if match else re.sub(r"[^A-Za-z0-9._-]+", "_", first)
    return f"{hostname}:{suffix}"


def store_url(store: StoreConfig, environ: Mapping[str, str]) -> str:
    """The configured URL, or the embedded SQLite file in the data directory.

    The data directory is ``store.data_dir``, else systemd's ``$STATE_DIRECTORY`` (the first
    entry when it lists several), else ``./rta-data``.
    """
    if store.url is not None:
        return store.url
    data_dir = store.data_dir or environ.get("STATE_DIRECTORY", "").split(":")[0] or "rta-data"
    return "sqlite:///" + str((Path(data_dir) / "rta.sqlite3").resolve()).lstrip("/")
