"""The report's pictures, with matplotlib (the `bench` extra): throughput bars per workload
and peer, and the latency CDF of each fixed rate.

matplotlib is imported only here, lazily, with the Agg backend (no display): a machine without
it still gets the markdown report, and `available` says so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

from bench.report import LatencyMeasurement, Measurement

log = logging.getLogger(__name__)

THROUGHPUT_PNG = "throughput.png"
LATENCY_PNG = "latency-cdf.png"
DPI = 120


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def throughput(measurements: Sequence[Measurement], path: Path) -> Path:
    """Grouped bars: a group per workload, a bar per peer (median QPS, whiskers min-max)."""
    plt = _pyplot()
    workloads = list(dict.fromkeys(m.workload for m in measurements))
    targets = list(dict.fromkeys(m.target for m in measurements))
    by_key = {(m.target, m.workload): m for m in measurements}
    width = 0.8 / max(len(targets), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.6 * len(workloads)), 4.2))
    for index, target in enumerate(targets):
        xs, heights, low, high = [], [], [], []
        for position, workload in enumerate(workloads):
            m = by_key.get((target, workload))
            if m is None:
                continue
            lo, hi = m.qps_range
            xs.append(position + (index - (len(targets) - 1) / 2) * width)
            heights.append(m.qps_median)
            low.append(m.qps_median - lo)
            high.append(hi - m.qps_median)
        axes.bar(xs, heights, width, label=target, yerr=[low, high], capsize=3)
    axes.set_xticks(range(len(workloads)), workloads)
    axes.set_ylabel("queries/s (median of runs)")
    axes.set_title("Throughput per workload and peer")
    axes.legend()
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def latency_cdf(latencies: Sequence[LatencyMeasurement], path: Path) -> Path:
    """One panel per fixed rate: the fraction of queries answered within x ms, per peer.

    Lost queries never reach 1.0: the curve of a peer that lost 1% stops at 0.99.
    """
    plt = _pyplot()
    rates = sorted({m.rate for m in latencies})
    figure, panels = plt.subplots(1, len(rates), figsize=(5.2 * len(rates), 4.2), squeeze=False)
    for panel, rate in zip(panels[0], rates, strict=True):
        for m in (m for m in latencies if m.rate == rate):
            samples = sorted(1000.0 * v for v in m.latencies)
            total = len(samples) + m.lost
            if not samples or not total:
                continue
            # Every sample as a step would be ~10^5 points; 2,000 evenly spaced ranks draw the
            # same curve, plus the tail's last points, which matter most.
            step = max(1, len(samples) // 2000)
            ranks = [*range(0, len(samples), step), *range(max(0, len(samples) - 50), len(samples))]
            ranks = sorted(set(ranks))
            panel.plot(
                [samples[i] for i in ranks],
                [(i + 1) / total for i in ranks],
                label=f"{m.target} (lost {m.lost_percent:.2f}%)",
            )
        panel.set_xscale("log")
        panel.set_xlabel("latency (ms, log)")
        panel.set_ylabel("fraction of queries answered")
        panel.set_title(f"{latencies[0].workload} at {rate} queries/s")
        panel.set_ylim(0, 1.0 + 0.01)
        panel.grid(alpha=0.3, which="both")
        panel.legend(loc="lower right")
        if not math.isfinite(panel.get_xlim()[0]):
            panel.set_xlim(left=0.01)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path
