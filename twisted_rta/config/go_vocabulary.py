"""The Go service's config vocabulary, translated into ours before the config is built.

A team migrating from the Go service starts on the file it has (README: "Migrating from the
Go service"). Each Go key either becomes one of our keys or is reported, once, as having no
effect and why (``Translated.notices``). A wrong value in a Go key is an error naming the Go
key; our own keys stay strict; a setting given in both vocabularies is an error naming both.

| Go key | ours |
|---|---|
| server.host, server.port | server.listen (``tcp:PORT:interface=HOST``) |
| server.read_timeout | server.request_timeout |
| server.write_timeout, idle_timeout, shutdown_timeout | the same names |
| server.mode | no effect (a Gin setting) |
| processing.worker_count, buffer_size | the same names |
| processing.batch_size | processing.coalesce_requests |
| processing.flush_interval | windows.flush_interval |
| storage.postgres.* | store.url (``postgresql://``), store.max_connections |
| storage.redis | no effect (no Redis is needed) |
| window.tumbling[] | windows.resolutions (our default retentions), windows.figures |
| window.sliding[] | windows.sliding |
| logging.level, format, output | the same names |
| monitoring.prometheus | server.metrics_listen (``/metrics`` on that port, the API's interface) |

Durations take Go's syntax too (``1m30s``, ``250ms``, ``1.5h``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import attrs
from attrs import frozen

from twisted_rta.aggregation.resolution import Resolution
from twisted_rta.config.parsers import (
    ConfigError,
    boolean,
    duration,
    integer,
    mapping_list,
    raise_errors,
    shown,
    text,
)
from twisted_rta.config.schema import DEFAULT_RESOLUTIONS, Config
from twisted_rta.query.figures import SLIDING_FIGURES, WINDOW_FIGURES

DEFAULT_API_HOST = "0.0.0.0"
DEFAULT_API_PORT = 8080
METRICS_PATH = "/metrics"
_GO_DURATION = re.compile(r"^(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$")
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


@frozen
class Translated:
    """A raw config in our vocabulary only, and the no-effect lines to log once at start."""

    raw: Any
    notices: tuple[str, ...]


def translate(raw: Any) -> Translated:
    """``raw`` with every Go key replaced by ours (or removed, with a notice); raises the
    ConfigErrors of every wrong Go value and every setting given both ways."""
    if not isinstance(raw, Mapping):
        return Translated(raw, ())
    work = _Translation(_copy(raw))
    work.run()
    raise_errors(work.errors)
    return Translated(work.raw, tuple(work.notices))


def go_duration(value: Any) -> Any:
    """Seconds for a Go duration string (``1m30s``); any other value as it is."""
    if isinstance(value, str) and _GO_DURATION.match(value.strip()):
        return sum(
            float(amount) * _GO_UNITS[unit] for amount, unit in _GO_PART.findall(value.strip())
        )
    return value


def default_retention(size: float) -> float:
    """Our default retention for a window size: that of the largest default resolution not
    larger than it (the finest's for smaller sizes)."""
    retention = DEFAULT_RESOLUTIONS[0].retention
    for resolution in DEFAULT_RESOLUTIONS:
        if resolution.size <= size:
            retention = resolution.retention
    return max(retention, size)


@attrs.define
class _Translation:
    raw: dict[str, Any]
    errors: list[ConfigError] = attrs.Factory(list)
    notices: list[str] = attrs.Factory(list)

    def run(self) -> None:
        for step in (
            self._server,
            self._processing,
            self._storage,
            self._window,
            self._monitoring,
        ):
            try:
                step()
            except ConfigError as error:
                self.errors.append(error)

    # -- sections ------------------------------------------------------------------------

    def _server(self) -> None:
        server = self._section("server")
        if server is None:
            return
        if "host" in server or "port" in server:
            host = server.pop("host", DEFAULT_API_HOST)
            port = server.pop("port", DEFAULT_API_PORT)
            text(host, "server.host")
            integer(minimum=0, maximum=65535)(port, "server.port")
            if "listen" in server:
                raise ConfigError("server.listen", "give either listen or host/port, not both")
            interface = host.replace(":", "\\:")  # IPv6 colons are escaped in endpoints
            server["listen"] = [f"tcp:{port}:interface={interface}"]
        self._rename(server, "server", "read_timeout", server, "server", "request_timeout")
        for name in ("write_timeout", "idle_timeout", "shutdown_timeout"):
            if name in server:
                server[name] = go_duration(server[name])
        if "mode" in server:
            text(server.pop("mode"), "server.mode")
            self.notices.append("server.mode: no effect (a setting of Gin, the Go web framework)")

    def _processing(self) -> None:
        processing = self._section("processing")
        if processing is None:
            return
        self._rename(
            processing, "processing", "batch_size", processing, "processing", "coalesce_requests"
        )
        if "flush_interval" in processing:
            windows = self._section("windows", create=True)
            assert windows is not None
            self._rename(
                processing, "processing", "flush_interval", windows, "windows", "flush_interval"
            )

    def _storage(self) -> None:
        storage = self._pop_go_section("storage")
        if storage is None:
            return
        self._only(storage, "storage", ("postgres", "redis"))
        if "redis" in storage:
            self._redis(storage["redis"])
            self.notices.append(
                "storage.redis: no effect (twisted-rta needs no Redis: its state is in memory, "
                "the journal and the window store)"
            )
        if storage.get("postgres") is not None:
            self._postgres(storage["postgres"])

    def _postgres(self, postgres: Any) -> None:
        path = "storage.postgres"
        keys = ("host", "port", "database", "user", "password", "max_connections")
        if not isinstance(postgres, Mapping):
            raise ConfigError(
                path, f"must be a mapping of {', '.join(keys)}, got {shown(postgres)}"
            )
        self._only(postgres, path, keys)
        host = text(postgres.get("host", "localhost"), f"{path}.host")
        port = integer(minimum=1, maximum=65535)(postgres.get("port", 5432), f"{path}.port")
        names = {}
        for key in ("database", "user"):
            value = _string(postgres.get(key, ""), f"{path}.{key}")
            if not value:
                raise ConfigError(f"{path}.{key}", "must not be empty (the Go service required it)")
            names[key] = value
        password = postgres.get("password")
        password = "" if password is None else _string(password, f"{path}.password")
        store = self._section("store", create=True)
        assert store is not None
        if "url" in store:
            raise ConfigError(path, "give store.url or storage.postgres, not both")
        user = quote(names["user"], safe="")
        secret = f":{quote(password, safe='')}" if password else ""
        where = f"[{host}]" if ":" in host else host
        store["url"] = f"postgresql://{user}{secret}@{where}:{port}/{quote(names['database'])}"
        if "max_connections" in postgres:
            self._move(
                postgres["max_connections"],
                f"{path}.max_connections",
                store,
                "store",
                "max_connections",
            )

    @staticmethod
    def _redis(redis: Any) -> None:
        path = "storage.redis"
        if redis is None:
            return
        if not isinstance(redis, Mapping):
            raise ConfigError(path, f"must be a mapping, got {shown(redis)}")
        _Translation._only(redis, path, ("address", "password", "db", "pool_size"))
        for key in ("address", "password"):
            if redis.get(key) is not None:
                _string(redis[key], f"{path}.{key}")
        if "db" in redis:
            integer(minimum=0)(redis["db"], f"{path}.db")
        if "pool_size" in redis:
            integer(minimum=1)(redis["pool_size"], f"{path}.pool_size")

    def _window(self) -> None:
        window = self._pop_go_section("window")
        if window is None:
            return
        self._only(window, "window", ("tumbling", "sliding"))
        windows = self._section("windows", create=True)
        assert windows is not None
        if window.get("tumbling") is not None:
            self._tumbling(window["tumbling"], windows)
        if window.get("sliding") is not None:
            if "sliding" in windows:
                raise ConfigError("window.sliding", "give windows.sliding or window.sliding")
            windows["sliding"] = [
                {"size": size, "step": step, "figures": metrics}
                for size, step, metrics in self._entries(
                    window["sliding"],
                    "window.sliding",
                    ("size", "step", "metrics"),
                    SLIDING_FIGURES,
                )
            ]

    def _tumbling(self, tumbling: Any, windows: dict[str, Any]) -> None:
        for ours in ("resolutions", "figures"):
            if ours in windows:
                raise ConfigError("window.tumbling", f"give windows.{ours} or window.tumbling")
        entries = self._entries(tumbling, "window.tumbling", ("size", "metrics"), WINDOW_FIGURES)
        if not entries:
            raise ConfigError("window.tumbling", "must list at least one window")
        sized: list[tuple[float, str]] = []
        for index, (size, _) in enumerate(entries):
            where = f"window.tumbling[{index}].size"
            parsed = duration(minimum=1.0, maximum=366 * 86400.0)(go_duration(size), where)
            if any(parsed == other for other, _ in sized):
                raise ConfigError(where, f"{shown(size)} is listed twice")
            sized.append((parsed, where))
        order = sorted(range(len(entries)), key=lambda i: sized[i][0])
        resolutions: list[Resolution] = []
        for i in order:
            size, where = sized[i]
            if resolutions and size % resolutions[-1].size:
                raise ConfigError(
                    where,
                    f"must be a whole multiple of the next smaller size "
                    f"({resolutions[-1].size:g}s): tumbling windows nest, each built from the "
                    f"finer ones; got {shown(entries[i][0])}",
                )
            resolutions.append(Resolution(size, default_retention(size)))
        windows["resolutions"] = [{"size": r.size, "retention": r.retention} for r in resolutions]
        windows["figures"] = [
            {"size": sized[i][0], "figures": entries[i][1]} for i in order if entries[i][1]
        ]

    def _monitoring(self) -> None:
        monitoring = self._pop_go_section("monitoring")
        if monitoring is None:
            return
        self._only(monitoring, "monitoring", ("prometheus",))
        prometheus = monitoring.get("prometheus")
        path = "monitoring.prometheus"
        if prometheus is None:
            return
        if not isinstance(prometheus, Mapping):
            raise ConfigError(
                path, f"must be a mapping of enabled, port, path, got {shown(prometheus)}"
            )
        self._only(prometheus, path, ("enabled", "port", "path"))
        enabled = boolean(prometheus.get("enabled", True), f"{path}.enabled")
        port = integer(minimum=1, maximum=65535)(prometheus.get("port", 9090), f"{path}.port")
        metrics_path = text(prometheus.get("path", METRICS_PATH), f"{path}.path")
        if metrics_path != METRICS_PATH:
            raise ConfigError(
                f"{path}.path", f"must be {METRICS_PATH}, the path Prometheus metrics are served at"
            )
        if not enabled:
            self.notices.append(
                f"{path}.enabled: no effect (/metrics is always served on the API's listen "
                "addresses, with its auth rules)"
            )
            return
        server = self._section("server", create=True)
        assert server is not None
        interface, api_port = _api_interface(server.get("listen"))
        if port == api_port:
            self.notices.append(
                f"{path}.port: no effect (it is the API's port, which serves /metrics already)"
            )
            return
        if "metrics_listen" in server:
            raise ConfigError(path, "give server.metrics_listen or monitoring.prometheus, not both")
        server["metrics_listen"] = [f"tcp:{port}:interface={interface}"]

    # -- helpers -------------------------------------------------------------------------

    def _section(self, name: str, *, create: bool = False) -> dict[str, Any] | None:
        """Our section ``name`` as a mutable copy in ``raw`` (None when absent or not a
        mapping: building the config reports that)."""
        value = self.raw.get(name)
        if value is None and create:
            value = self.raw[name] = {}
            return value
        if not isinstance(value, Mapping):
            return None
        copied = self.raw[name] = _copy(value)
        return copied

    def _pop_go_section(self, name: str) -> Mapping[str, Any] | None:
        if name not in self.raw:
            return None
        value = self.raw.pop(name)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ConfigError(name, f"must be a mapping of keys, got {shown(value)}")
        return value

    def _rename(
        self,
        source: dict[str, Any],
        source_path: str,
        go_name: str,
        target: dict[str, Any],
        target_path: str,
        ours: str,
    ) -> None:
        if go_name not in source:
            return
        value = source.pop(go_name)
        self._move(value, f"{source_path}.{go_name}", target, target_path, ours)

    def _move(
        self,
        value: Any,
        go_path: str,
        target: dict[str, Any],
        target_path: str,
        ours: str,
    ) -> None:
        """Put a Go key's value under our key, judged by our parser in the Go key's name."""
        if ours in target:
            raise ConfigError(
                go_path, f"is the Go service's name of {target_path}.{ours}: give one of them"
            )
        cls = attrs.fields_dict(Config)[target_path].metadata["section"]
        parse: Callable[[Any, str], Any] = attrs.fields_dict(cls)[ours].metadata["parse"]
        target[ours] = parse(go_duration(value), go_path)

    @staticmethod
    def _only(mapping: Mapping[str, Any], path: str, keys: tuple[str, ...]) -> None:
        for key in mapping:
            if key not in keys:
                raise ConfigError(f"{path}.{key}", f"unknown key (expected {', '.join(keys)})")

    def _entries(
        self, value: Any, path: str, keys: tuple[str, ...], figures: tuple[str, ...]
    ) -> list[tuple[Any, ...]]:
        """(size[, step], metrics) of each item of a Go window list, the metrics checked."""
        out = []
        for where, item in mapping_list(value, path, keys, keys[:-1]):
            metrics = item.get("metrics") or []
            if not isinstance(metrics, list):
                raise ConfigError(f"{where}.metrics", f"must be a list, got {shown(metrics)}")
            for position, metric in enumerate(metrics):
                if metric not in figures:
                    raise ConfigError(
                        f"{where}.metrics[{position}]",
                        f"must be one of {', '.join(figures)}, got {shown(metric)}",
                    )
            sizes = [go_duration(item[key]) for key in keys[:-1]]
            out.append((*sizes, list(dict.fromkeys(metrics))))
        return out


def _string(value: Any, path: str) -> str:
    """A string, empty or not."""
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a string, got {shown(value)}")
    return value


def _api_interface(listen: Any) -> tuple[str, int | None]:
    """The interface and port of the API's first TCP listen endpoint (the default's when
    there is none to read)."""
    first = listen[0] if isinstance(listen, list) and listen else None
    if not isinstance(first, str):
        return DEFAULT_API_HOST, DEFAULT_API_PORT if first is None else None
    match = re.match(r"^tcp6?:(?:port=)?(\d+)", first)
    port = int(match.group(1)) if match else None
    found = re.search(r"interface=((?:\\.|[^:])*)", first)
    return (found.group(1) if found else DEFAULT_API_HOST), port


def _copy(mapping: Mapping[str, Any]) -> Any:
    """A mutable copy of a section that keeps what the YAML loader noted (repeated keys)."""
    kind = type(mapping)
    copied: Any = kind() if kind is not dict and isinstance(mapping, dict) else {}
    copied.update(mapping)
    repeated = getattr(mapping, "repeated", None)
    if repeated is not None:
        copied.repeated = list(repeated)
    return copied
