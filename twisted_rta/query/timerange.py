"""Query time ranges: parse ``from``/``to`` and choose the window resolution that serves them."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime

from attrs import frozen

from twisted_rta.aggregation.resolution import Resolution
from twisted_rta.config import parse_duration

MAX_POINTS = 1500
# Instants outside 1970..9999 cannot be windows of ours (nor printed as RFC 3339 years).
EARLIEST, LATEST = 0.0, 253_402_300_799.0
_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?(?:ms|s|m|h|d|w|y))$")
# Epoch milliseconds, as in event timestamps: a plain run of ASCII digits.
_EPOCH_MILLIS = re.compile(r"[0-9]+", re.ASCII)
_MAX_MILLIS_DIGITS = 15  # LATEST in milliseconds has 15 digits; longer ones are out of range


class RangeError(ValueError):
    """A query parameter is malformed; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message


def parse_instant(text: str, now: float, parameter: str) -> float:
    """``now``, a relative ``-15m`` / ``-1h`` / ``-7d``, an RFC 3339 time with an offset, or
    epoch milliseconds (a plain integer, as event timestamps take them)."""
    value = text.strip()
    if value == "now":
        return now
    relative = _RELATIVE.match(value)
    if relative:
        return _bounded(now - parse_duration(relative.group(1)), text, parameter)
    if _EPOCH_MILLIS.fullmatch(value):
        # int() refuses very long digit strings; such a number is far past 9999 anyway.
        millis = int(value) if len(value.lstrip("0")) <= _MAX_MILLIS_DIGITS else math.inf
        return _bounded(millis / 1000, text, parameter)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise RangeError(
            parameter,
            f"{parameter} must be 'now', a relative time like -1h or -7d, an RFC 3339 time "
            f"with an offset, or epoch milliseconds; got {text!r}",
        )
    return _bounded(moment.timestamp(), text, parameter)


def _bounded(instant: float, text: str, parameter: str) -> float:
    if not EARLIEST <= instant <= LATEST:
        raise RangeError(parameter, f"{parameter} must lie between 1970 and 9999; got {text!r}")
    return instant


@frozen
class TimeRange:
    """The windows of one resolution that overlap ``[requested_from, requested_to]``: those
    starting in ``[start_from, start_to)``."""

    requested_from: float
    requested_to: float
    resolution: Resolution
    start_from: float
    start_to: float
    complete: bool  # False when part of the range is older than the resolution's retention

    @property
    def points(self) -> int:
        return round((self.start_to - self.start_from) / self.resolution.size)


def parse_range(
    from_text: str | None,
    to_text: str | None,
    *,
    now: float,
    default_from: str | None,
) -> tuple[float, float]:
    if from_text is None:
        if default_from is None:
            raise RangeError("from", "from is required when to is given")
        from_text = default_from
    start = parse_instant(from_text, now, "from")
    end = parse_instant(to_text, now, "to") if to_text is not None else now
    if end <= start:
        raise RangeError("to", "to must be later than from")
    return start, end


def choose_resolution(
    start: float,
    end: float,
    *,
    now: float,
    resolutions: Sequence[Resolution],
    wanted_size: float | None = None,
) -> TimeRange:
    """The finest resolution that covers ``[start, end)`` in at most MAX_POINTS windows and
    still keeps data that old; ``wanted_size`` picks one explicitly."""
    if wanted_size is not None:
        chosen = next((r for r in resolutions if r.size == wanted_size), None)
        if chosen is None:
            sizes = ", ".join(size_text(r.size) for r in resolutions)
            raise RangeError("resolution", f"resolution must be one of {sizes}")
        candidate = _aligned(start, end, chosen, now)
        if candidate.points > MAX_POINTS:
            raise RangeError(
                "resolution",
                f"resolution {size_text(chosen.size)} gives {candidate.points} points over this "
                f"range; at most {MAX_POINTS}, choose a coarser one",
            )
        return candidate
    fitting = [r for r in resolutions if _aligned(start, end, r, now).points <= MAX_POINTS]
    if not fitting:
        return _aligned(start, end, resolutions[-1], now)
    for resolution in fitting:
        candidate = _aligned(start, end, resolution, now)
        if candidate.complete:
            return candidate
    return _aligned(start, end, fitting[-1], now)


def span_range(resolution: Resolution, start: float, end: float, *, now: float) -> TimeRange:
    """The windows of ``resolution`` starting in ``[start, end)``, both window boundaries
    already (a span of windows the query layer lists or slides over, not a client's range)."""
    return TimeRange(
        requested_from=start,
        requested_to=end,
        resolution=resolution,
        start_from=start,
        start_to=end,
        complete=start >= now - resolution.retention,
    )


def parse_resolution(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError:
        raise RangeError(
            "resolution", f"resolution must be a duration like 1m, 1h or 1d; got {text!r}"
        ) from None


def _aligned(start: float, end: float, resolution: Resolution, now: float) -> TimeRange:
    size = resolution.size
    start_from = math.floor(start / size) * size
    # The window holding ``end`` is included, so ``to=now`` covers the current window.
    start_to = (math.floor(end / size) + 1) * size
    return TimeRange(
        requested_from=start,
        requested_to=end,
        resolution=resolution,
        start_from=start_from,
        start_to=start_to,
        complete=start >= now - resolution.retention,
    )


def size_text(size: float) -> str:
    for unit, seconds in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if size >= seconds and size % seconds == 0:
            return f"{size / seconds:g}{unit}"
    return f"{size:g}s"
