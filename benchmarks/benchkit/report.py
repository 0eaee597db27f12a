"""The printed table and the JSON lines file."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

COLUMNS = (
    "scenario",
    "req/s",
    "p50 ms",
    "p99 ms",
    "events/s",
    "CPU s",
    "CPU %",
    "peak RSS MiB",
    "non-2xx",
    "other %",
    "wrk CPU %",
)
# Past these, the run says its figures are suspect (see machine_load in scenarios.py).
OTHER_BUSY_LIMIT_PCT, WRK_CPU_LIMIT_PCT = 10.0, 85.0


def _other_busy(record: dict[str, Any]) -> float | None:
    value = record.get("other_busy_pct_on_server_core")
    return None if value is None else float(value)


def _number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _non_2xx(counts: dict[str, int]) -> str:
    return " ".join(f"{status}:{count}" for status, count in counts.items()) or "0"


def wrk_threads(record: dict[str, Any]) -> int:
    return int(record.get("wrk_threads", 1))


def row(record: dict[str, Any]) -> tuple[str, ...]:
    if "error" in record:
        return (record["scenario"], "FAILED", *("" for _ in COLUMNS[2:]))
    if record.get("events_per_s") is None and "offered_events_per_s" in record:
        events = _number(record["offered_events_per_s"]) + "*"
        cpu_pct = _number(record.get("server_cpu_pct"))
    else:
        events = _number(record.get("events_per_s"))
        cpu_pct = _number(record.get("daemon_cpu_pct"))
    return (
        record["scenario"],
        _number(record["requests_per_s"]),
        _number(record["latency_p50_ms"], 2),
        _number(record["latency_p99_ms"], 2),
        events,
        _number(record.get("daemon_cpu_s"), 1),
        cpu_pct,
        _number(record.get("peak_rss_mib")),
        _non_2xx(record.get("non_2xx", {})),
        _number(_other_busy(record)),
        _number(record.get("wrk_cpu_pct")),
    )


def details(record: dict[str, Any]) -> list[str]:
    lines = []
    if "error" in record:
        lines.append(f"  {record['scenario']}: {record['error']}")
    for name, read in record.get("reads", {}).items():
        latency = read["latency_ms"]
        lines.append(
            f"  reads {name:<12} {read['path']}: {read['requests_per_s']:.1f} req/s, "
            f"p50 {_number(latency['p50'], 2)} ms, p99 {_number(latency['p99'], 2)} ms,"
            f" non-2xx {_non_2xx(read['non_2xx'])}"
        )
    if "memory" in record:
        at = record["memory"]["rss_mib_at_percent"]
        quarters = " / ".join(
            _number(at.get(q, {}).get("rss_mib"), 1) for q in ("25", "50", "75", "100")
        )
        lines.append(
            f"  memory: RSS MiB at 25/50/75/100% of the events: {quarters}; "
            f"{record['events']:,} events, ~{record['memory']['unique_users_estimate']:,}"
            f" distinct users{'' if record['memory']['completed'] else ' (INCOMPLETE)'}"
        )
    if "flush" in record:
        flush = record["flush"]
        lines.append(
            f"  flush: {flush['ticks']} ticks, {flush['windows_written']} window(s) "
            f"written, mean {_number(flush['mean_ms'], 1)} ms, slowest <= "
            f"{flush['slowest_tick_at_most_s']} s, ticks per bucket (le s) "
            f"{flush['ticks_per_bucket_le_s']}; ~{flush['unique_pages_estimate']:,} "
            f"unique pages"
        )
    other, wrk_cpu = _other_busy(record), record.get("wrk_cpu_pct")
    if other is not None and other > OTHER_BUSY_LIMIT_PCT:
        lines.append(
            f"  {record['scenario']}: WARNING {other:.0f}% of the server's core went to "
            "other processes: these figures are not reliable"
        )
    # At the generator ceiling one of the two cores is meant to be saturated.
    ceiling = str(record["scenario"]).startswith("generator-ceiling")
    if wrk_cpu is not None and wrk_cpu > WRK_CPU_LIMIT_PCT * wrk_threads(record) and not ceiling:
        lines.append(
            f"  {record['scenario']}: WARNING wrk used {wrk_cpu:.0f}% CPU: the load "
            "generator may be the limit"
        )
    if record.get("daemon_exit") not in (None, "clean"):
        lines.append(f"  {record['scenario']}: daemon exit {record['daemon_exit']}")
    return lines


def table(records: Iterable[dict[str, Any]]) -> str:
    records = list(records)
    rows = [COLUMNS, *(row(record) for record in records)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = []
    for index, cells in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                for i, cell in enumerate(cells)
            ).rstrip()
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    for record in records:
        lines.extend(details(record))
    lines.append(
        "  other %: share of the server's core used by other processes; wrk CPU %: "
        "CPU of the wrk processes (100 = one core)"
    )
    if any(str(r.get("scenario", "")).startswith("generator-ceiling") for r in records):
        lines.append(
            "  * offered by wrk (2xx answers x events per request): no daemon counts "
            "them; CPU % is the trivial server's"
        )
    return "\n".join(lines)


class JsonLines:
    """One JSON object per scenario, written as each finishes: a crash keeps what ran."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8") as output:
            for record in records:
                output.write(json.dumps(record) + "\n")
