"""What a SIGHUP may change, derived from the schema's reload marks alone.

A key is reloadable when its ``setting(..., reload=True)`` says so, or when it leaves the mark
unset and the nearest enclosing ``section(..., reload=...)`` says so; unmarked at the top level
means restart only. Keys are the flat ``section.key`` names of ``summary``.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs

from twisted_rta.config.loading import raise_errors
from twisted_rta.config.schema import Config, relation_errors


def _marked(spec: attrs.Attribute[Any], inherited: bool) -> bool:
    mark = spec.metadata.get("reload")
    return inherited if mark is None else bool(mark)


def _keys(cls: type, prefix: str, inherited: bool) -> frozenset[str]:
    keys: set[str] = set()
    for spec in attrs.fields(cls):
        reload = _marked(spec, inherited)
        if "section" in spec.metadata:
            keys |= _keys(spec.metadata["section"], f"{prefix}{spec.name}.", reload)
        elif reload:
            keys.add(prefix + spec.name)
    return frozenset(keys)


@functools.cache
def reloadable_keys(cls: type = Config) -> frozenset[str]:
    """The flat keys of ``cls`` that a reload applies to the running daemon."""
    return _keys(cls, "", inherited=False)


def _merge(current: Any, new: Any, inherited: bool) -> Any:
    """``current`` with its reloadable keys taken from ``new`` (both of one attrs class)."""
    changes: dict[str, Any] = {}
    for spec in attrs.fields(type(current)):
        reload = _marked(spec, inherited)
        old_value, new_value = getattr(current, spec.name), getattr(new, spec.name)
        if "section" in spec.metadata:
            value = _merge(old_value, new_value, reload)
        else:
            value = new_value if reload else old_value
        if value is not old_value:
            changes[spec.alias] = value
    return attrs.evolve(current, **changes) if changes else current


def merge_reloadable(current: Config, new: Config) -> Config:
    """The config a reload leaves running: every reloadable key from ``new``, every other
    key from ``current``.

    Raises ConfigError when that mix breaks a rule between keys (say a reloaded
    ``limits.max_batch_events`` above the running, restart-only ``processing.buffer_size``):
    the caller then keeps ``current`` whole.
    """
    effective = _merge(current, new, inherited=False)
    raise_errors(relation_errors(effective))
    return effective
