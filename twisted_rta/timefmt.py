"""How the daemon writes an instant: RFC 3339 in UTC with millisecond precision."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(timestamp: float) -> str:
    """RFC 3339 / ISO-8601 in UTC with millisecond precision, e.g. 2026-11-27T02:56:39.123Z."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
