"""The bench's result: one markdown table, one row per (target, workload), from dnsperf summaries.

QPS is the median over the runs (and its range), lost % counts every query of every run, the
latency is the median of the runs' averages. `render` is pure; `write` saves the text as
<out>/<date>.md (a second report the same day gets <date>-2.md, and so on).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.dnsperf import Summary


@dataclass(frozen=True, slots=True)
class Settings:
    duration: float
    names: int
    clients: int
    runs: int
    max_qps: int | None = None


@dataclass(frozen=True, slots=True)
class Measurement:
    """Every dnsperf run of one workload against one target."""

    target: str
    workload: str  # "W1"
    title: str
    runs: tuple[Summary, ...]

    @property
    def qps_median(self) -> float:
        return statistics.median(r.qps for r in self.runs)

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


COLUMNS = ("Target", "Workload", "QPS (median)", "QPS min-max", "Lost %", "Avg latency (ms)")


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
    )


def table(measurements: list[Measurement]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " | Rcodes |",
        "|" + "|".join("---" for _ in range(len(COLUMNS) + 1)) + "|",
    ]
    for m in measurements:
        lines.append("| " + " | ".join(row(m)) + f" | {_rcode_text(m.rcodes)} |")
    return "\n".join(lines)


def render(
    settings: Settings,
    measurements: list[Measurement],
    when: datetime,
    environment: dict[str, str],
) -> str:
    limit = f", at most {settings.max_qps} qps" if settings.max_qps else ""
    header = [
        f"# netdns bench, {when:%Y-%m-%d %H:%M}",
        "",
        f"{settings.runs} run(s) of {settings.duration:g} s per workload, "
        f"{settings.clients} dnsperf client(s){limit}, {settings.names} container names.",
        "",
        *(f"- {key}: {value}" for key, value in environment.items()),
        "",
    ]
    return "\n".join([*header, table(measurements), ""])


def write(text: str, out_dir: Path, when: datetime) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{when:%Y-%m-%d}.md"
    serial = 2
    while path.exists():
        path = out_dir / f"{when:%Y-%m-%d}-{serial}.md"
        serial += 1
    path.write_text(text)
    return path
