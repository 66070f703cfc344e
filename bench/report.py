"""The bench's result as markdown, from dnsperf summaries and per-query latencies.

Four tables: throughput, one row per (target, workload): QPS is the median over the runs (and
its range), lost % counts every query of every run, the latency is the median of the runs'
averages, CPU the median of the runs' server CPU time per completed query; the comparison, one
row per workload: each peer's median QPS and netdns's ratio to every other peer (the ceiling's
ratio is the share of the Python limit netdns reaches), all from the same run; the same for CPU
per query; latency at fixed rates: percentiles over every query of every run, lost ones counted
as infinitely slow (bench/stats.py). Plots are linked below.

`render` is pure; `reserve` picks the file names, <out>/<date>.md and the directory
<out>/<date>/ for plots beside it (a second report the same day gets <date>-2, and so on).
"""

from __future__ import annotations

import statistics
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.dnsperf import Summary
from bench.stats import (
    LATENCY_PERCENTILES,
    format_ms,
    format_ratio,
    latency_percentiles,
    ratio,
)

REFERENCE = "netdns"  # the peer whose ratios to the others the comparison shows


@dataclass(frozen=True, slots=True)
class Settings:
    duration: float
    names: int
    clients: int
    runs: int
    max_qps: int | None = None
    rates: tuple[int, ...] = ()  # fixed rates (dnsperf -Q) of the latency runs


@dataclass(frozen=True, slots=True)
class Measurement:
    """Every dnsperf run of one workload against one target."""

    target: str
    workload: str  # "W1"
    title: str
    runs: tuple[Summary, ...]
    cpu: tuple[float | None, ...] = ()  # the server's CPU seconds during each run, if known

    @property
    def qps_median(self) -> float:
        return statistics.median(r.qps for r in self.runs)

    @property
    def cpu_us_per_query(self) -> float | None:
        """Median over the runs of the server's CPU microseconds per completed query."""
        per_run = [
            1e6 * used / run.completed
            for run, used in zip(self.runs, self.cpu, strict=False)
            if used is not None and run.completed
        ]
        return statistics.median(per_run) if per_run else None

    @property
    def qps_range(self) -> tuple[float, float]:
        return min(r.qps for r in self.runs), max(r.qps for r in self.runs)

    @property
    def lost_percent(self) -> float:
        sent = sum(r.sent for r in self.runs)
        return 100.0 * sum(r.lost for r in self.runs) / sent if sent else 0.0

    @property
    def avg_latency_ms(self) -> float:
        return 1000.0 * statistics.median(r.avg_latency for r in self.runs)

    @property
    def rcodes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for run in self.runs:
            total.update(dict(run.rcodes))
        return total


@dataclass(frozen=True, slots=True)
class LatencyMeasurement:
    """Every dnsperf -v run of one workload against one target at one fixed rate."""

    target: str
    workload: str
    rate: int  # dnsperf -Q
    runs: tuple[Summary, ...]
    latencies: array[float] = field(default_factory=lambda: array("d"))  # answered, seconds

    @property
    def lost(self) -> int:
        return sum(r.lost for r in self.runs)

    @property
    def lost_percent(self) -> float:
        sent = sum(r.sent for r in self.runs)
        return 100.0 * self.lost / sent if sent else 0.0

    @property
    def qps_median(self) -> float:
        return statistics.median(r.qps for r in self.runs)

    def percentiles(self) -> tuple[float, ...]:
        """p50, p99, p99.9 in seconds, lost queries included as infinitely slow."""
        return latency_percentiles(self.latencies, self.lost)


COLUMNS = (
    "Target",
    "Workload",
    "QPS (median)",
    "QPS min-max",
    "Lost %",
    "Avg latency (ms)",
    "CPU us/query",
)


def _cpu_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _rcode_text(rcodes: Counter[str]) -> str:
    total = sum(rcodes.values())
    if not total:
        return "none"
    return ", ".join(f"{name} {100.0 * count / total:.0f}%" for name, count in rcodes.items())


def row(m: Measurement) -> tuple[str, ...]:
    low, high = m.qps_range
    return (
        m.target,
        f"{m.workload} {m.title}",
        f"{m.qps_median:.0f}",
        f"{low:.0f}-{high:.0f}",
        f"{m.lost_percent:.2f}",
        f"{m.avg_latency_ms:.3f}",
        _cpu_text(m.cpu_us_per_query),
    )


def table(measurements: list[Measurement]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " | Rcodes |",
        "|" + "|".join("---" for _ in range(len(COLUMNS) + 1)) + "|",
    ]
    for m in measurements:
        lines.append("| " + " | ".join(row(m)) + f" | {_rcode_text(m.rcodes)} |")
    return "\n".join(lines)


def _in_order(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def comparison(measurements: Sequence[Measurement], *, cpu: bool = False) -> str:
    """Median QPS (or, with CPU, CPU microseconds per query) of every target per workload, and
    the reference's ratio to each other one."""
    targets = _in_order([m.target for m in measurements])
    others = [t for t in targets if t != REFERENCE]
    median: dict[tuple[str, str], float] = {}
    for m in measurements:
        value = m.cpu_us_per_query if cpu else m.qps_median
        if value is not None:
            median[(m.target, m.workload)] = value
    titles = {m.workload: m.title for m in measurements}
    unit = "us/query" if cpu else "QPS"
    header = ["Workload", *(f"{t} {unit}" for t in targets)]
    if REFERENCE in targets:
        header += [f"{REFERENCE} / {t}" for t in others]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for workload in _in_order([m.workload for m in measurements]):
        cells = [f"{workload} {titles[workload]}"]
        shown = "{:.1f}" if cpu else "{:.0f}"
        cells += [
            shown.format(median[(t, workload)]) if (t, workload) in median else "-" for t in targets
        ]
        if REFERENCE in targets:
            own = median.get((REFERENCE, workload))
            for other in others:
                theirs = median.get((other, workload))
                value = ratio(own, theirs) if own is not None and theirs is not None else None
                cells.append(format_ratio(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def latency_table(latencies: Sequence[LatencyMeasurement]) -> str:
    names = " | ".join(f"p{p:g} (ms)" for p in LATENCY_PERCENTILES)
    versus = f"{REFERENCE} p99 / this"
    lines = [
        f"| Target | Workload | Rate (qps) | Achieved qps | Lost % | {names} | {versus} |",
        "|" + "---|" * (6 + len(LATENCY_PERCENTILES)),
    ]
    p99 = LATENCY_PERCENTILES.index(99.0)
    computed = [(m, m.percentiles()) for m in latencies]
    reference = {
        (m.workload, m.rate): values[p99] for m, values in computed if m.target == REFERENCE
    }
    for m, values in computed:
        own = reference.get((m.workload, m.rate))
        # An infinite p99 (more than 1% lost) has no meaningful ratio.
        finite = own is not None and own != float("inf") and values[p99] != float("inf")
        versus = format_ratio(ratio(own, values[p99])) if finite else "n/a"
        lines.append(
            f"| {m.target} | {m.workload} | {m.rate} | {m.qps_median:.0f} | "
            f"{m.lost_percent:.2f} | " + " | ".join(format_ms(v) for v in values) + f" | {versus} |"
        )
    return "\n".join(lines)


def render(
    settings: Settings,
    measurements: list[Measurement],
    when: datetime,
    environment: dict[str, str],
    *,
    latencies: Sequence[LatencyMeasurement] = (),
    plots: Sequence[tuple[str, str]] = (),
) -> str:
    """The whole report. PLOTS: (title, path relative to the markdown file) of each image."""
    limit = f", at most {settings.max_qps} qps" if settings.max_qps else ""
    header = [
        f"# netdns bench, {when:%Y-%m-%d %H:%M}",
        "",
        f"{settings.runs} run(s) of {settings.duration:g} s per workload and peer, interleaved, "
        f"{settings.clients} dnsperf client(s){limit}, {settings.names} container names.",
        "",
        *(f"- {key}: {value}" for key, value in environment.items()),
        "",
    ]
    parts = [*header, table(measurements), ""]
    if len({m.target for m in measurements}) > 1:
        parts += [
            f"Median QPS per peer, and {REFERENCE}'s ratio to each (same run):",
            "",
            comparison(measurements),
            "",
        ]
        if any(m.cpu_us_per_query is not None for m in measurements):
            parts += [
                "Server CPU time per completed query (microseconds, median of the runs; from "
                f"/proc, user + system; lower is better, so {REFERENCE} / peer below 1 is ahead):",
                "",
                comparison(measurements, cpu=True),
                "",
            ]
    if latencies:
        parts += [
            "Latency at fixed rates (dnsperf -Q, per-query -v output; lost queries count as "
            "infinitely slow):",
            "",
            latency_table(latencies),
            "",
        ]
    for title, path in plots:
        parts += [f"![{title}]({path})", ""]
    return "\n".join(parts)


@dataclass(frozen=True, slots=True)
class ReportFiles:
    markdown: Path  # <out>/<stamp>.md
    plots: Path  # <out>/<stamp>/, made on demand
    stamp: str


def reserve(out_dir: Path, when: datetime) -> ReportFiles:
    """File names for a new report: the first <date>[-N] with neither .md nor directory yet."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{when:%Y-%m-%d}"
    serial = 2
    while (out_dir / f"{stamp}.md").exists() or (out_dir / stamp).exists():
        stamp = f"{when:%Y-%m-%d}-{serial}"
        serial += 1
    return ReportFiles(out_dir / f"{stamp}.md", out_dir / stamp, stamp)
