"""The markdown report of `python -m bench.scale` (bench/scale.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from bench.scale_model import (
    ATTACH_P99_TARGET,
    MEMORY_TARGET,
    AttachResult,
    KiB,
    Layout,
    ListenerResult,
    MemoryResult,
    ThroughputResult,
    met,
    quantiles,
)
from bench.stats import format_ms


@dataclass(slots=True)
class ScaleReport:
    layout: Layout
    build_seconds: float = 0.0
    in_process: AttachResult | None = None
    over_udp: AttachResult | None = None
    memory: MemoryResult | None = None
    throughput: list[ThroughputResult] = field(default_factory=list)
    listeners: ListenerResult | None = None
    notes: list[str] = field(default_factory=list)


def _attach_row(label: str, result: AttachResult) -> str:
    p50, p99, worst = quantiles(result.latencies)
    return (
        f"| {label} | {len(result.latencies)} | {format_ms(p50)} | {format_ms(p99)} | "
        f"{format_ms(worst)} | {result.wrong} | {result.stale_before} | {result.hot_after} | "
        f"{met(p99 < ATTACH_P99_TARGET)} |"
    )


def render(report: ScaleReport, machine: dict[str, str], when: datetime) -> str:
    lay = report.layout
    lines = [
        f"# netdns at scale: {lay.containers:,} containers on {lay.networks:,} networks",
        "",
        f"{when:%Y-%m-%d %H:%M} UTC. Machine:",
        "",
        *(f"- {key}: {value}" for key, value in machine.items()),
        "",
        f"Table built from events in {report.build_seconds:.2f} s (Resolver with hot cache "
        "watching it, as the daemon wires it).",
        "",
    ]
    if report.in_process or report.over_udp:
        lines += [
            "## Attach -> answer",
            "",
            "From just before the attach events are applied to the reply carrying the new "
            "address, asked by a peer on the new container's network that had asked (and got "
            "NXDOMAIN) just before. Target p99 < 5 ms.",
            "",
            "| path | attaches | p50 ms | p99 ms | max ms | wrong | not NXDOMAIN before | "
            "hot on 2nd ask | target |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        if report.in_process:
            lines.append(_attach_row("in-process: Resolver.fast, then .handle", report.in_process))
        if report.over_udp:
            lines.append(_attach_row("real listener, UDP socket on loopback", report.over_udp))
        lines.append("")
    if report.memory:
        m = report.memory
        lines += [
            "## Memory per endpoint (name table)",
            "",
            f"tracemalloc, retained after building the table from events: {m.traced / KiB:,.0f} "
            f"KiB for {m.endpoints:,} endpoints (with their sandboxes and {lay.networks:,} "
            f"networks) = **{m.per_endpoint:,.0f} B per endpoint** "
            f"(target < {MEMORY_TARGET} B: {met(m.per_endpoint < MEMORY_TARGET)}). "
            f"RSS growth of an untraced build (measured first): {m.rss_delta / KiB:,.0f} KiB "
            f"({m.rss_delta / m.endpoints:,.0f} B per endpoint).",
            "",
            "Largest allocation sites (retained):",
            "",
            "| site | KiB | blocks | B per endpoint |",
            "|---|---:|---:|---:|",
            *(
                f"| {site} | {size / KiB:,.0f} | {blocks:,} | {size / m.endpoints:,.0f} |"
                for site, size, blocks in m.top
            ),
            "",
        ]
    if report.throughput:
        base = report.throughput[0]
        lines += [
            "## W1 throughput vs table size",
            "",
            "`python -m bench.serve` on a random loopback address (no namespace, no redirect), "
            "dnsperf on the same 2 cores, W1 data over the first N names of the table, runs "
            "interleaved after a warm-up each (1 s + 1 s per 5,000 names: fills the hot cache).",
            "",
            "| table | W1 over | runs q/s | median q/s | lost | vs first | server counters |",
            "|---:|---:|---|---:|---:|---:|---|",
        ]
        for t in report.throughput:
            ratio = t.median / base.median if base.median else math.nan
            lines.append(
                f"| {t.config.table:,} | {t.config.queried:,} | "
                f"{', '.join(f'{q:,.0f}' for q in t.qps)} | {t.median:,.0f} | {sum(t.lost)} | "
                f"{ratio:.2f}x | {t.server_line} |"
            )
        lines.append("")
    if report.listeners:
        r = report.listeners
        per = r.rss_delta / r.listeners if r.listeners else math.nan
        lines += [
            "## Listener count",
            "",
            f"{r.listeners:,} listeners (UDP + TCP each) on distinct 127.a.b.c:53 addresses in "
            f"one event loop ({r.failed_binds} addresses failed to bind); RLIMIT_NOFILE "
            f"{r.nofile[0]}/{r.nofile[1]}. No network namespace per sandbox here: loopback "
            "addresses prove the process side (fds, memory, start time).",
            "",
            "| listeners | fds | RSS growth | per listener | start | close | answered |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {r.listeners:,} | {r.fds:,} | {r.rss_delta / KiB / KiB:.1f} MiB | "
            f"{per / KiB:.1f} KiB | {r.start_seconds:.2f} s | {r.close_seconds:.2f} s | "
            f"{r.answered}/{r.asked} |",
            "",
        ]
    if report.notes:
        lines += ["## Notes", "", *(f"- {note}" for note in report.notes), ""]
    return "\n".join(lines)
