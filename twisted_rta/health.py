"""Readiness: real checks of the running parts, read by /ready (and later by systemd)."""

from __future__ import annotations

from attrs import frozen

from twisted_rta.service import RTAService


@frozen
class Readiness:
    ready: bool
    checks: dict[str, str]


def check_readiness(service: RTAService, now: float) -> Readiness:
    """Each check is "ok" or a short reason; any failing check makes the daemon not ready."""
    checks: dict[str, str] = {}
    checks["shutdown"] = "shutting down" if service.stopping else "ok"

    unbound = [listener.description for listener in service.listeners if listener.port is None]
    checks["listening"] = "ok" if not unbound else "not listening on " + ", ".join(unbound)

    workers = service.workers
    expected = workers.worker_count
    checks["workers"] = (
        "ok" if workers.running and workers.alive == expected
        else f"{workers.alive} of {expected} workers running"
    )

    flush = service.flush
    if not flush.alive:
        checks["flush"] = "flush loop not running"
    else:
        last = flush.last_tick_at if flush.last_tick_at is not None else service.started_at
        # Three missed intervals means the loop is stuck (a tick that never finishes).
        stale_after = 3 * flush.interval
        if last is None or now - last > stale_after:
            checks["flush"] = f"no flush tick for more than {stale_after:g}s"
        else:
            checks["flush"] = "ok"

    store = service.store_service
    if not store.opened:
        checks["store"] = f"not open: {store.last_error or 'opening'}"
    elif flush.last_error is not None:
        checks["store"] = (
            f"writes failing: {flush.last_error}; {len(flush.pending)} windows waiting"
        )
    else:
        checks["store"] = "ok"

    ready = all(state == "ok" for state in checks.values())
    return Readiness(ready=ready, checks=checks)
