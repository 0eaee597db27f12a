"""Loading: YAML file -> raw mapping -> Config, collecting every error with its key path."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from twisted_rta.config.go_vocabulary import translate
from twisted_rta.config.parsers import ConfigError, raise_errors, shown
from twisted_rta.config.schema import Config, StoreConfig, relation_errors


class RepeatedKeys(dict[Any, Any]):
    """A YAML mapping that remembers the keys given more than once (``repeated``): YAML
    says they are an error, PyYAML keeps the last one; we report them with their path."""

    def __init__(self) -> None:
        super().__init__()
        self.repeated: list[Any] = []


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are ``RepeatedKeys``."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> Any:
    data = RepeatedKeys()
    yield data
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=False)
        try:
            if key in seen:
                data.repeated.append(key)
            seen.add(key)
        except TypeError:  # an unhashable key: construct_mapping reports it
            pass
    data.update(loader.construct_mapping(node))


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def _build(cls: type, raw: Any, path: str, errors: list[ConfigError]) -> Any:
    """Build ``cls`` from ``raw``, collecting every error instead of stopping at the first."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        errors.append(ConfigError(path, f"must be a mapping of keys, got {shown(raw)}"))
        return None
    known = {f.name: f for f in attrs.fields(cls)}
    for key in getattr(raw, "repeated", ()):
        errors.append(ConfigError(f"{path}.{key}" if path else str(key), "is given twice"))
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


def config_from_mapping(raw: Any) -> Config:
    return config_and_notices_from_mapping(raw)[0]


def config_and_notices_from_mapping(raw: Any) -> tuple[Config, tuple[str, ...]]:
    """The Config of a raw mapping in our vocabulary, the Go service's or both
    (config/go_vocabulary.py), with the lines saying which Go keys have no effect."""
    translated = translate(raw)
    errors: list[ConfigError] = []
    config = _build(Config, translated.raw, "", errors)
    raise_errors(errors)
    raise_errors(relation_errors(config))
    return config, translated.notices


def load_config(path: str | Path | None) -> Config:
    """Load and validate a YAML file; ``None`` gives the built-in defaults."""
    return load_config_and_notices(path)[0]


def load_config_and_notices(path: str | Path | None) -> tuple[Config, tuple[str, ...]]:
    """``load_config``, with the no-effect lines of the Go keys the file holds (to log once
    at start)."""
    if path is None:
        return Config(), ()
    try:
        source = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError("", f"cannot read config file {str(path)!r}: {error.strerror}") from None
    try:
        raw = yaml.load(source, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"config file {str(path)!r} is not valid YAML{where}") from None
    return config_and_notices_from_mapping(raw)


def default_node_id(listen: tuple[str, ...], hostname: str) -> str:
    """hostname plus the first listen port, so two nodes on one host never share rows."""
    match = re.match(r"^(?:tcp6?|ssl|reuseport):(?:port=)?(\d+)", listen[0]) if listen else None
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
    return "sqlite:///" + str(data_directory(store, environ) / "rta.sqlite3").lstrip("/")


def data_directory(store: StoreConfig, environ: Mapping[str, str]) -> Path:
    """This node's state directory: ``store.data_dir``, else systemd's ``$STATE_DIRECTORY``
    (the first entry when it lists several), else ``./rta-data``; made absolute."""
    data_dir = store.data_dir or environ.get("STATE_DIRECTORY", "").split(":")[0] or "rta-data"
    return Path(data_dir).resolve()
