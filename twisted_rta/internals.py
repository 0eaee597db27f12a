"""Every use of a private Twisted or standard library internal, gathered in one place.

Each is undocumented and may change in any release: ``tests/test_internals.py`` checks each
one against the real objects, so an upgrade that removes or changes one fails there, loudly,
instead of somewhere deep in the daemon. Imports nothing from Twisted at module level: the
aggregation (pure domain code) and the event decoder import from here.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "channel_handling_request",
    "clear_exit_signal",
    "count_elements",
    "json_scanstring",
    "json_value_scanner",
]

# The C loop behind collections.Counter, counting into a plain dict: Counter() itself costs
# ~1.5 us more per call (a third of a single-event add). Private, so not in typeshed.
_CountElements = Callable[[dict[Any, int], Iterable[Any]], None]
count_elements: _CountElements = collections._count_elements  # type: ignore[attr-defined]

# Decodes the JSON string whose opening quote is just before ``end``: (text, index past the
# closing quote); lets the careful parser walk a batch body member by member. Not in typeshed.
_ScanString = Callable[[str, int, bool], tuple[str, int]]
json_scanstring: _ScanString = json.decoder.scanstring  # type: ignore[attr-defined]


def json_value_scanner(
    parse_constant: Callable[[str], Any],
) -> Callable[[str, int], tuple[Any, int]]:
    """json's scanner for one value at an index, returning (value, index past it).

    Private because ``JSONDecoder.scan_once`` is undocumented; the careful parser needs it to
    decode a value at an offset and learn where it ends (raises StopIteration(index) when no
    value starts there).
    """
    decoder = json.JSONDecoder(parse_constant=parse_constant)
    # An attribute set by JSONDecoder.__init__, not in typeshed.
    scanner: Callable[[str, int], tuple[Any, int]] = decoder.scan_once  # type: ignore[attr-defined]
    return scanner


def clear_exit_signal(reactor: Any) -> None:
    """Forget the signal that stopped ``reactor``, so twistd does not re-raise it on exit.

    ``ReactorBase._exitSignal`` is private: twistd reads it after the reactor stops.
    """
    reactor._exitSignal = None


def channel_handling_request(channel: Any) -> bool:
    """Whether ``channel`` (a ``twisted.web.http.HTTPChannel``) is busy with a request.

    ``HTTPChannel._handlingRequest`` is private; no public API tells it.
    """
    return bool(channel._handlingRequest)
