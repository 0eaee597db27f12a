"""Reloader: on SIGHUP, re-read the config and apply what can change while running."""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.logger import Logger

from twisted_rta.config import Config, ConfigError, ConfigErrors, summary

log = Logger()

# Settings the running daemon can take without a restart; everything else (listen
# addresses, store, windows, workers, and the dimension bound baked into the aggregator)
# is reported as ignored until restart.
RUNTIME_PREFIXES = (
    "logging.",
    "cors.",
    "limits.",
    "auth.",
    "rate_limits.",
    "server.trusted_proxies",
)
RESTART_ONLY = frozenset({"limits.max_dimension_values", "rate_limits.max_clients"})


def runtime_changeable(key: str) -> bool:
    return key.startswith(RUNTIME_PREFIXES) and key not in RESTART_ONLY


@attrs.frozen
class ReloadOutcome:
    ok: bool
    applied: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


class Reloader:
    def __init__(
        self,
        *,
        load: Callable[[], Config],
        current: Config,
        apply: Callable[[Config], None],
        before: Callable[[], None] = lambda: None,
        after: Callable[[], None] = lambda: None,
    ) -> None:
        self._load = load
        self.current = current
        self._apply = apply
        self._before = before  # e.g. RELOADING=1 to systemd
        self._after = after  # e.g. READY=1 to systemd

    def reload(self) -> ReloadOutcome:
        self._before()
        try:
            return self._reload()
        finally:
            self._after()

    def _reload(self) -> ReloadOutcome:
        log.info("reloading the config")
        try:
            new = self._load()
        except ConfigError as error:
            problems = (
                [str(e) for e in error.errors] if isinstance(error, ConfigErrors) else [str(error)]
            )
            for problem in problems:
                log.error("reload: {problem}", problem=problem)
            log.error(
                "reload failed ({count} errors); the running config is unchanged",
                count=len(problems),
            )
            return ReloadOutcome(ok=False, errors=tuple(problems))
        old_values, new_values = summary(self.current), summary(new)
        changed = [key for key in new_values if new_values[key] != old_values.get(key)]
        applied = tuple(key for key in changed if runtime_changeable(key))
        ignored = tuple(key for key in changed if not runtime_changeable(key))
        current = self.current
        effective = attrs.evolve(
            current,
            logging=new.logging,
            cors=new.cors,
            auth=new.auth,
            limits=attrs.evolve(
                new.limits, max_dimension_values=current.limits.max_dimension_values
            ),
            rate_limits=attrs.evolve(new.rate_limits, max_clients=current.rate_limits.max_clients),
            server=attrs.evolve(current.server, trusted_proxies=new.server.trusted_proxies),
        )
        self._apply(effective)
        self.current = effective
        log.info(
            "config reloaded: applied {applied}; ignored until restart: {ignored}",
            applied=", ".join(applied) or "nothing",
            ignored=", ".join(ignored) or "nothing",
        )
        return ReloadOutcome(ok=True, applied=applied, ignored=ignored)
