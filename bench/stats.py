"""The arithmetic of the report: percentiles of latencies and ratios between peers. Pure.

Percentiles use the nearest-rank definition (the smallest sample with at least p% of the
samples at or below it), so every figure is a latency some query really had. A lost query
counts as infinitely slow: a server that drops 1% of queries has no finite p99.9, rather than
a flattering one computed over the queries it chose to answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from bench.errors import Invalid

LATENCY_PERCENTILES = (50.0, 99.0, 99.9)


def percentile(sorted_samples: Sequence[float], p: float) -> float:
    """The nearest-rank P-th percentile of SORTED_SAMPLES (ascending); NaN when empty."""
    if not 0 < p <= 100:
        raise Invalid(f"percentile {p}: choose a value in (0, 100]")
    if not sorted_samples:
        return math.nan
    rank = math.ceil(p / 100 * len(sorted_samples))
    return sorted_samples[max(rank, 1) - 1]


def latency_percentiles(
    latencies: Iterable[float], lost: int, ps: Sequence[float] = LATENCY_PERCENTILES
) -> tuple[float, ...]:
    """The percentiles PS of the answered queries' LATENCIES together with LOST queries, each
    counted as +inf."""
    if lost < 0:
        raise Invalid(f"lost count {lost} is negative")
    samples = sorted(latencies)
    samples.extend([math.inf] * lost)
    return tuple(percentile(samples, p) for p in ps)


def ratio(value: float, reference: float) -> float | None:
    """VALUE / REFERENCE, or None when there is nothing to compare with (no reference)."""
    if reference <= 0 or math.isnan(reference) or math.isnan(value):
        return None
    return value / reference


def format_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def format_ms(seconds: float) -> str:
    """Milliseconds with three decimals; 'lost' for an infinite latency, 'n/a' for none."""
    if math.isnan(seconds):
        return "n/a"
    if math.isinf(seconds):
        return "lost"
    return f"{1000 * seconds:.3f}"
