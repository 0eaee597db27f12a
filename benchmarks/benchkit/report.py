"""The printed table and the JSON lines file."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


def label(record: dict[str, Any]) -> str:
    """The scenario, plus its journal mode, its lane (when compared or not the default) and
    repetition when the run had several."""
    text = str(record["scenario"])
    if record.get("journal") not in (None, "default"):
        text += f" [journal {record['journal']}]"
    lane = record.get("lane")
    if lane and (record.get("compare") or lane != "fast"):
        text += f" [{lane}]"
    if record.get("repetitions", 1) > 1:
        text += f" #{record['repetition']}"
    return text


def row(record: dict[str, Any]) -> tuple[str, ...]:
    if "error" in record:
        return (label(record), "FAILED", *("" for _ in COLUMNS[2:]))
    if record.get("events_per_s") is None and "offered_events_per_s" in record:
        events = _number(record["offered_events_per_s"]) + "*"
        cpu_pct = _number(record.get("server_cpu_pct"))
    else:
        events = _number(record.get("events_per_s"))
        cpu_pct = _number(record.get("daemon_cpu_pct"))
    return (
        label(record),
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
        lines.append(f"  {label(record)}: {record['error']}")
    for name, read in record.get("reads", {}).items():
        latency = read["latency_ms"]
        lines.append(
            f"  {label(record)}: {name:<12} {read['path']}: {read['requests_per_s']:.1f} req/s, "
            f"p50 {_number(latency['p50'], 2)} ms, p99 {_number(latency['p99'], 2)} ms,"
            f" non-2xx {_non_2xx(read['non_2xx'])}"
        )
    if record.get("responses_503"):
        lines.append(
            f"  {label(record)}: {record['responses_503']:,} answers 503 (queue full: "
            "shed, not counted in events/s)"
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
    if "browser" in record:
        browser = record["browser"]
        dropped = sum(browser["dropped"].values())
        lines.append(
            f"  {label(record)}: ~{browser['unique_visitors_estimate']:,} distinct visitors;"
            f" {dropped:,} hits answered 202 and not counted {browser['dropped']}"
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
            f"  {label(record)}: WARNING {other:.0f}% of the server's core went to "
            "other processes: these figures are not reliable"
        )
    # At the generator ceiling one of the two cores is meant to be saturated.
    ceiling = str(record["scenario"]).startswith("generator-ceiling")
    if wrk_cpu is not None and wrk_cpu > WRK_CPU_LIMIT_PCT * wrk_threads(record) and not ceiling:
        lines.append(
            f"  {label(record)}: WARNING wrk used {wrk_cpu:.0f}% CPU: the load "
            "generator may be the limit"
        )
    if record.get("daemon_exit") not in (None, "clean"):
        lines.append(f"  {label(record)}: daemon exit {record['daemon_exit']}")
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


def _spread(values: list[float], digits: int = 0) -> str:
    """``mean`` for one value, ``mean (min-max)`` for several."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return _number(mean, digits)
    low, high = _number(min(values), digits), _number(max(values), digits)
    return f"{_number(mean, digits)} ({low}-{high})"


def journal_table(records: Iterable[dict[str, Any]], baseline: str = "off") -> str:
    """Per scenario and journal mode: every repetition, the mean, and the ratio to ``baseline``.

    Ratio: mean events/s (req/s) of the mode over the mean of the baseline's; the range in
    brackets pairs each repetition with the baseline of the same repetition (the runs of one
    repetition are back to back, so they share the machine's state).
    """
    done = [r for r in records if "error" not in r and r.get("events_per_s") is not None]
    by_key: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for record in done:
        key = (str(record["scenario"]), str(record.get("journal", "default")))
        by_key.setdefault(key, {})[int(record.get("repetition", 1))] = record
    columns = (
        "scenario",
        "journal",
        "events/s per run",
        "events/s mean",
        f"x {baseline}",
        "req/s mean",
        "p99 ms (min-max)",
        "CPU %",
    )
    rows: list[tuple[str, ...]] = [columns]
    for (scenario, mode), runs in by_key.items():
        base = by_key.get((scenario, baseline), {})
        events = [runs[i]["events_per_s"] for i in sorted(runs)]
        requests = [runs[i]["requests_per_s"] for i in sorted(runs)]
        p99 = [runs[i]["latency_p99_ms"] for i in sorted(runs) if runs[i]["latency_p99_ms"]]
        cpu = [runs[i]["daemon_cpu_pct"] for i in sorted(runs)]
        ratio = "-"
        if base:
            base_mean = sum(r["events_per_s"] for r in base.values()) / len(base)
            ratio = f"{sum(events) / len(events) / base_mean:.3f}"
            paired = [runs[i]["events_per_s"] / base[i]["events_per_s"] for i in runs if i in base]
            if len(paired) > 1:
                ratio += f" ({min(paired):.3f}-{max(paired):.3f})"
        rows.append(
            (
                scenario,
                mode,
                " / ".join(_number(value) for value in events),
                _number(sum(events) / len(events)),
                ratio,
                _spread(requests),
                _spread(p99, 1) if p99 else "-",
                _spread(cpu),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = []
    for index, cells in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
                for i, cell in enumerate(cells)
            ).rstrip()
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines.append(
        f"  x {baseline}: mean events/s over the mean of journal {baseline} (range: each "
        "repetition over the same repetition's baseline); (min-max) over the repetitions"
    )
    return "\n".join(lines)


@dataclass(frozen=True)
class Figure:
    """A column of the lane comparison; ``ratio``: it gets a fast/klein ratio."""

    header: str
    value: Callable[[dict[str, Any]], float | None]
    digits: int = 0
    ratio: bool = False


def _other_non_2xx(record: dict[str, Any]) -> int:
    return int(sum(record.get("non_2xx", {}).values()) - record.get("responses_503", 0))


COMPARED_LANES = ("klein", "fast")  # the reference first; the ratio is fast over klein
LANE_FIGURES = (
    Figure("req/s", lambda r: r.get("requests_per_s"), ratio=True),
    Figure("events/s", lambda r: r.get("events_per_s"), ratio=True),
    Figure("p50 ms", lambda r: r.get("latency_p50_ms"), 2),
    Figure("p99 ms", lambda r: r.get("latency_p99_ms"), 2, ratio=True),
    Figure("CPU %", lambda r: r.get("daemon_cpu_pct")),
    Figure("peak RSS MiB", lambda r: r.get("peak_rss_mib")),
    Figure("503s", lambda r: r.get("responses_503")),
    Figure("other non-2xx", _other_non_2xx),
    # Shown so a ratio taken while something else used the daemon's core is seen as such.
    Figure("other %", _other_busy),
)


def _read_p99(reader: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda record: record["reads"][reader]["latency_ms"]["p99"]


def _scenario_figures(records: list[dict[str, Any]]) -> list[Figure]:
    """The columns this scenario's records have beyond LANE_FIGURES."""
    extra: list[Figure] = []
    readers = dict.fromkeys(name for r in records for name in r.get("reads", {}))
    extra.extend(Figure(f"{name} p99 ms", _read_p99(name), 2, ratio=True) for name in readers)
    if any("memory" in r for r in records):
        extra.append(
            Figure("RSS MiB at 100%", lambda r: r["memory"]["rss_mib_at_percent"]["100"]["rss_mib"])
        )
    if any("flush" in r for r in records):
        extra.append(Figure("flush mean ms", lambda r: r["flush"]["mean_ms"], 1))
    return extra


def _mean(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) / len(known) if known else None


def _ratio_cell(fast: list[dict[str, Any]], klein: list[dict[str, Any]], figure: Figure) -> str:
    numerator = _mean([figure.value(r) for r in fast])
    denominator = _mean([figure.value(r) for r in klein])
    if not figure.ratio or numerator is None or not denominator:
        return ""
    return f"{numerator / denominator:.3f}"


def _render(rows: list[tuple[str, ...]], left: int = 1) -> list[str]:
    """Aligned rows under a dashed rule: the first ``left`` columns left-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for index, cells in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(widths[i]) if i < left else cell.rjust(widths[i])
                for i, cell in enumerate(cells)
            ).rstrip()
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def lane_table(records: list[dict[str, Any]]) -> list[str]:
    """One scenario (one journal mode): a row per run, then the fast/klein ratio row."""
    done = [r for r in records if "error" not in r]
    figures = [*LANE_FIGURES, *_scenario_figures(done)]
    rows: list[tuple[str, ...]] = [("lane", *(figure.header for figure in figures))]
    for record in records:
        name = str(record["lane"])
        if record.get("repetitions", 1) > 1:
            name += f" #{record['repetition']}"
        if "error" in record:
            rows.append((name, "FAILED", *("" for _ in figures[1:])))
            continue
        rows.append((name, *(_number(f.value(record), f.digits) for f in figures)))
    fast = [r for r in done if r["lane"] == "fast"]
    klein = [r for r in done if r["lane"] == "klein"]
    if fast and klein:
        rows.append(("fast/klein", *(_ratio_cell(fast, klein, figure) for figure in figures)))
    title = str(records[0]["scenario"])
    if records[0].get("journal") not in (None, "default"):
        title += f" [journal {records[0]['journal']}]"
    return [title, *_render(rows)]


def compare_tables(records: Iterable[dict[str, Any]]) -> str:
    """Per scenario and journal mode, the klein and fast lanes side by side (--compare)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        if record.get("lane") in COMPARED_LANES:
            key = (str(record["scenario"]), str(record.get("journal", "default")))
            groups.setdefault(key, []).append(record)
    lines: list[str] = []
    for runs in groups.values():
        runs.sort(key=lambda r: (r.get("repetition", 1), COMPARED_LANES.index(r["lane"])))
        lines.extend([*lane_table(runs), ""])
    lines.append(
        "  klein: server.fast_lane false (twisted.web/Klein answers everything); fast: true\n"
        "  fast/klein: mean of the fast runs over the mean of the klein runs (throughput: "
        "> 1 is faster; p99: < 1 is faster)"
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
