"""Reloader: on SIGHUP, re-read the config and apply what can change while running."""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.logger import Logger

from twisted_rta.config import (
    Config,
    ConfigError,
    ConfigErrors,
    merge_reloadable,
    reloadable_keys,
    summary,
)

log = Logger()


def _problems(error: ConfigError) -> list[str]:
    return [str(e) for e in error.errors] if isinstance(error, ConfigErrors) else [str(error)]


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
            return self._failed(_problems(error))
        try:
            # What may change while running is marked in the config schema (reload=True).
            effective = merge_reloadable(self.current, new)
        except ConfigError as error:
            note = "with the running values of the keys that need a restart"
            return self._failed([f"{problem} ({note})" for problem in _problems(error)])
        # Unredacted, so that a new secret under the same key name counts as a change.
        old_values = summary(self.current, redact=False)
        new_values = summary(new, redact=False)
        changed = [key for key in new_values if new_values[key] != old_values.get(key)]
        reloadable = reloadable_keys()
        applied = tuple(key for key in changed if key in reloadable)
        ignored = tuple(key for key in changed if key not in reloadable)
        self._apply(effective)
        self.current = effective
        log.info(
            "config reloaded: applied {applied}; ignored until restart: {ignored}",
            applied=", ".join(applied) or "nothing",
            ignored=", ".join(ignored) or "nothing",
        )
        return ReloadOutcome(ok=True, applied=applied, ignored=ignored)

    def _failed(self, problems: list[str]) -> ReloadOutcome:
        for problem in problems:
            log.error("reload: {problem}", problem=problem)
        log.error(
            "reload failed ({count} errors); the running config is unchanged",
            count=len(problems),
        )
        return ReloadOutcome(ok=False, errors=tuple(problems))
