"""The Go service's names for a window's metrics: ``events``, ``events:<type>`` and
``active_users`` read our ``total_events``, ``events_by_type:<type>`` and ``unique_users``.

An alias never shadows a metric: when the rules make a metric under the Go name (a rule
called ``events``, a family ``events:<...>``), the name is theirs and means that metric."""

from __future__ import annotations

from collections.abc import Collection

from twisted_rta.aggregation.rules import EVENTS_BY_TYPE, TOTAL_EVENTS, UNIQUE_USERS, Rules

#: Go name -> ours, for single metrics.
GO_NAMES = {"events": TOTAL_EVENTS, "active_users": UNIQUE_USERS}
#: Go family base -> ours: ``events:<type>`` reads ``events_by_type:<type>``.
GO_FAMILIES = {"events": EVENTS_BY_TYPE}
_OURS = {ours: go for go, ours in GO_NAMES.items()}
_OUR_FAMILIES = {ours: go for go, ours in GO_FAMILIES.items()}


def alias_target(name: str, rules: Rules) -> str | None:
    """Our metric the Go name ``name`` reads, or None when ``name`` is no alias (or the
    rules make a metric of that very name)."""
    if rules.expected_kind(name) is not None:
        return None
    target = GO_NAMES.get(name)
    if target is not None:
        return target
    base, colon, rest = name.partition(":")
    family = GO_FAMILIES.get(base) if colon else None
    return None if family is None else f"{family}:{rest}"


def family_alias_target(base: str, rules: Rules) -> str | None:
    """Our family the Go family base ``base`` reads (``events`` -> ``events_by_type``), or
    None when it is no alias (or the rules declare a family of that name)."""
    if rules.family(base) is not None:
        return None
    return GO_FAMILIES.get(base)


def aliases_of(names: Collection[str], rules: Rules) -> list[tuple[str, str]]:
    """(Go name, ours) for each of ``names`` (a window's metrics) that has a Go name, in
    the order of ``names``; a Go name already among ``names`` or made by the rules is left
    out (that metric answers under it)."""
    found = []
    for name in names:
        go = _OURS.get(name)
        if go is None:
            base, colon, rest = name.partition(":")
            family = _OUR_FAMILIES.get(base) if colon else None
            go = None if family is None else f"{family}:{rest}"
        if go is not None and go not in names and alias_target(go, rules) == name:
            found.append((go, name))
    return found
