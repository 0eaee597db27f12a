"""The ``metrics`` section: metric rules from YAML, each error naming its key path
(``metrics.rules[2].sum: ...``), and the rules the aggregator runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted_rta.aggregation.fields import FieldPath
from twisted_rta.aggregation.rules import (
    AGGREGATIONS,
    DEFAULT_MAX_SERIES,
    LABEL,
    MAX_LABELS,
    NAME,
    RESERVED_LABELS,
    Condition,
    DropRule,
    Match,
    MetricRule,
    Rules,
    Scalar,
    builtin_rules,
    web_rules,
)
from twisted_rta.config.parsers import ConfigError, shown

RuleEntry = MetricRule | DropRule
MAX_SERIES_LIMIT = 1_000_000
_RULE_KEYS = ("name", "when", *AGGREGATIONS, "labels", "max_series", "total", "action")
_WHEN_KEYS = ("type", "type_glob", "where")


def metric_rules(value: Any, path: str) -> tuple[RuleEntry, ...]:
    """``metrics.rules``: a list of rules (see the README's "Define your metrics")."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(path, f"must be a list of rules, got {shown(value)}")
    return tuple(_rule(item, f"{path}[{index}]") for index, item in enumerate(value))


def _rule(raw: Any, path: str) -> RuleEntry:
    if not isinstance(raw, Mapping):
        raise ConfigError(path, f"must be a mapping (a rule), got {shown(raw)}")
    _no_repeats(raw, path)
    for key in raw:
        if key not in _RULE_KEYS:
            raise ConfigError(
                f"{path}.{key}",
                f"unknown key (a rule takes {', '.join(_RULE_KEYS)}; "
                f"aggregations are {', '.join(AGGREGATIONS)})",
            )
    action = raw.get("action", "aggregate")
    if action not in ("aggregate", "drop"):
        raise ConfigError(f"{path}.action", f"must be aggregate or drop, got {shown(action)}")
    if "when" not in raw:
        raise ConfigError(f"{path}.when", "is required (which events the rule takes)")
    when = _match(raw["when"], f"{path}.when")
    if action == "drop":
        extra = sorted(set(raw) - {"when", "action", "name"})
        if extra:
            raise ConfigError(f"{path}.{extra[0]}", "a drop rule takes only when (and a name)")
        return DropRule(when)
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(
            f"{path}.name",
            "is required: 1-128 letters, digits, _ . or -, starting with a letter or _; "
            f"got {shown(name)}",
        )
    count = raw.get("count", False)
    if not isinstance(count, bool):
        raise ConfigError(f"{path}.count", f"must be true or false, got {shown(count)}")
    fields = {
        aggregation: _path(raw[aggregation], f"{path}.{aggregation}")
        for aggregation in AGGREGATIONS
        if aggregation != "count" and aggregation in raw
    }
    if not count and not fields:
        raise ConfigError(
            path, "needs an aggregation: count: true, or sum, histogram, unique or gauge: <field>"
        )
    labels = _labels(raw.get("labels"), f"{path}.labels")
    max_series = raw.get("max_series", DEFAULT_MAX_SERIES)
    if (
        not isinstance(max_series, int)
        or isinstance(max_series, bool)
        or not 1 <= max_series <= MAX_SERIES_LIMIT
    ):
        raise ConfigError(
            f"{path}.max_series",
            f"must be an integer from 1 to {MAX_SERIES_LIMIT}, got {shown(max_series)}",
        )
    total = raw.get("total", False)
    if not isinstance(total, bool):
        raise ConfigError(f"{path}.total", f"must be true or false, got {shown(total)}")
    if total and not labels:
        raise ConfigError(f"{path}.total", "only applies to a rule with labels")
    return MetricRule(
        name, when, count=count, labels=labels, max_series=max_series, total=total, **fields
    )


def _match(raw: Any, path: str) -> Match:
    if not isinstance(raw, Mapping):
        raise ConfigError(path, f"must be a mapping with type or type_glob, got {shown(raw)}")
    _no_repeats(raw, path)
    for key in raw:
        if key not in _WHEN_KEYS:
            raise ConfigError(f"{path}.{key}", "unknown key (expected type, type_glob, where)")
    if ("type" in raw) == ("type_glob" in raw):
        raise ConfigError(path, "give exactly one of type and type_glob")
    key = "type" if "type" in raw else "type_glob"
    pattern = raw[key]
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{path}.{key}", f"must be a non-empty string, got {shown(pattern)}")
    where = _where(raw.get("where"), f"{path}.where")
    return Match(**{key: pattern}, where=where)


def _where(raw: Any, path: str) -> tuple[Condition, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(path, f"must be a mapping of field -> value(s), got {shown(raw)}")
    _no_repeats(raw, path)
    conditions = []
    for field_text, wanted in raw.items():
        where = f"{path}.{field_text}"
        field_path = _path(field_text, where)
        if isinstance(wanted, Mapping):
            conditions.append(Condition(field_path, present=_presence(wanted, where)))
            continue
        values = wanted if isinstance(wanted, list) else [wanted]
        if not values:
            raise ConfigError(where, "must be a value or a non-empty list of values")
        for value in values:
            if not isinstance(value, str | int | float | bool) and value is not None:
                raise ConfigError(
                    where, f"values must be strings, numbers, booleans or null, got {shown(value)}"
                )
        scalars: tuple[Scalar, ...] = tuple(values)
        conditions.append(Condition(field_path, scalars))
    return tuple(conditions)


def _presence(raw: Mapping[Any, Any], path: str) -> bool:
    """``{present: true}``: the field is there and not null; ``false``: it is not."""
    if set(raw) != {"present"} or not isinstance(raw["present"], bool):
        raise ConfigError(
            path,
            f"a mapping here must be {{present: true}} or {{present: false}}, got {shown(raw)}",
        )
    return raw["present"]


def _labels(raw: Any, path: str) -> tuple[tuple[str, FieldPath], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(path, f"must be a mapping of label -> field, got {shown(raw)}")
    _no_repeats(raw, path)
    if len(raw) > MAX_LABELS:
        raise ConfigError(path, f"at most {MAX_LABELS} labels, got {len(raw)}")
    labels = []
    for label, field_text in raw.items():
        if not isinstance(label, str) or not LABEL.fullmatch(label):
            raise ConfigError(
                f"{path}.{label}",
                "a label name is letters, digits and _, not starting with a digit",
            )
        if label in RESERVED_LABELS:
            raise ConfigError(
                f"{path}.{label}",
                "is a query parameter of the API; the reserved names are "
                + ", ".join(sorted(RESERVED_LABELS)),
            )
        labels.append((label, _path(field_text, f"{path}.{label}")))
    return tuple(labels)


def _path(raw: Any, path: str) -> FieldPath:
    try:
        return FieldPath.parse(raw)
    except ValueError as error:
        raise ConfigError(path, str(error)) from None


def _no_repeats(raw: Mapping[Any, Any], path: str) -> None:
    """A key given twice in one YAML mapping (``sum:`` twice) is an error, not "the last
    one wins" (see ``loading.RepeatedKeys``)."""
    for key in getattr(raw, "repeated", ()):
        raise ConfigError(f"{path}.{key}", "is given twice")


def rules_of(builtin: bool, entries: tuple[RuleEntry, ...], *, web: bool = False) -> Rules:
    """The rules the aggregator runs: the built-in presets (``metrics.builtin``, then
    ``metrics.web``, unless off), then the configured rules and drops. Raises ConfigError
    naming the first rule that collides."""
    presets = {"builtin": builtin_rules() if builtin else (), "web": web_rules() if web else ()}
    metrics = [rule for preset in presets.values() for rule in preset]
    drops = []
    for index, entry in enumerate(entries):
        if isinstance(entry, DropRule):
            drops.append(entry)
            continue
        metrics.append(entry)
        try:
            Rules(metrics)
        except ValueError as error:
            names = {spec.name for spec in entry.metrics()}
            message = str(error)
            for key, preset in presets.items():
                taken = _builtin_names(preset) & names
                if taken:
                    message = (
                        f"{sorted(taken)[0]!r} is a built-in metric: rename the rule, or set "
                        f"metrics.{key}: false"
                    )
                    break
            raise ConfigError(f"metrics.rules[{index}].name", message) from None
    return Rules(metrics, drops)


def _builtin_names(preset: tuple[MetricRule, ...]) -> set[str]:
    return {spec.name for rule in preset for spec in rule.metrics()}
