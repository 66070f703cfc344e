"""`python -m bench`: netdns against its peers (aardvark-dns, dnsmasq) and the Python ceiling
(bench/ceiling.py), same names, same run.

Builds the lab (bench/lab.py: namespaces, a bridge, the bench's dnsmasq upstream, every peer
that is installed), runs each workload (bench/workloads.py) with dnsperf from each peer's client
namespace, the peers interleaved run by run, reading each server's CPU time from /proc around
every run, then W1 and W7 at fixed rates with per-query latencies.
Prints the markdown report (bench/report.py) and writes it to <out>/<date>.md, with the plots
(bench/plots.py) in <out>/<date>/. Progress goes to stderr, one line per step; the lab is
removed however the run ends (SIGINT and SIGTERM included).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from array import array
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from bench import dnsperf, plots, profile
from bench.cpu import cpu_seconds
from bench.dnsperf import DnsperfRun, Summary
from bench.errors import BenchError, Invalid, NotFound
from bench.lab import Target, available, lab
from bench.machine import environment
from bench.peers import Peer, parse_peers
from bench.report import LatencyMeasurement, Measurement, Settings, render, reserve
from bench.stats import format_ms, latency_percentiles
from bench.upstream import require_dnsmasq
from bench.workloads import W1, W7, WORKLOADS, Workload, Zone, select
from drivers.errors import NetdnsError

log = logging.getLogger("bench")

DEFAULT_DURATION = 5.0
QUICK_DURATION = 3.0
DEFAULT_RUNS = 5
DEFAULT_RATES = "5000,20000"
MAX_DURATION = 600.0
MAX_RATE = 1_000_000
RESULTS = Path(__file__).resolve().parent / "results"
LATENCY_WORKLOADS = (W1, W7)  # a local answer and a real forward
LATENCY_IDS = " and ".join(w.id for w in LATENCY_WORKLOADS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    workloads = "; ".join(f"{w.id}: {w.title}" for w in WORKLOADS.values())
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Compare netdns with aardvark-dns and dnsmasq in one run: the same "
        "container names and the same upstream (the bench's own dnsmasq) for all, each peer "
        "queried by dnsperf from its own network namespace, netdns through the 127.0.0.11:53 "
        "redirect. Runs are interleaved across peers; the report shows medians, ratios and "
        "latency percentiles at fixed rates. Everything runs in namespaces the bench makes and "
        "removes. Prints a markdown report and writes it to OUT/<date>.md, plots in OUT/<date>/.",
        epilog=f"Workloads: {workloads}. Needs root, dnsperf, dnsmasq, nft and ip (Debian "
        "packages); aardvark-dns is used when installed (/usr/lib/podman/aardvark-dns). "
        "Scale (10,000 containers, 2,000 listeners, loopback only): python -m bench.scale.",
    )
    parser.add_argument(
        "--duration",
        type=float,
        help=f"seconds per dnsperf run (default {DEFAULT_DURATION:g}, --quick {QUICK_DURATION:g})",
    )
    parser.add_argument(
        "--names", type=int, default=1000, help="container names, and forwarded names (1000)"
    )
    parser.add_argument(
        "--clients", type=int, default=4, help="dnsperf clients (sockets) per run (4)"
    )
    parser.add_argument(
        "--runs",
        type=int,
        help=f"runs per workload and peer; the table shows the median ({DEFAULT_RUNS})",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help=f"directory for the report ({RESULTS})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a short look: {QUICK_DURATION:g} s per run and 1 run, unless given explicitly",
    )
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="comma-separated workload ids (all)"
    )
    parser.add_argument(
        "--peers",
        help="comma-separated peers among netdns, aardvark, dnsmasq, ceiling (default: all "
        "installed; a peer that is not installed is skipped with a message; ceiling is the "
        "canned-answer Python responder that shows the Python limit)",
    )
    parser.add_argument(
        "--rates",
        default=DEFAULT_RATES,
        help=f"fixed query rates (dnsperf -Q) for the {LATENCY_IDS} latency runs, "
        f"comma-separated; empty for none ({DEFAULT_RATES})",
    )
    parser.add_argument("--max-qps", type=int, help="dnsperf -Q for the throughput runs")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the netdns server with py-spy during its first run of each workload and "
        "add the top entries to the report (pip install py-spy)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = QUICK_DURATION if args.quick else DEFAULT_DURATION
    if args.runs is None:
        args.runs = 1 if args.quick else DEFAULT_RUNS
    if not 0 < args.duration <= MAX_DURATION:
        parser.error(f"--duration {args.duration:g}: choose between 0 and {MAX_DURATION:g} s")
    if args.runs < 1 or args.clients < 1:
        parser.error("--runs and --clients must be at least 1")
    try:
        args.rates = parse_rates(args.rates)
    except Invalid as exc:
        parser.error(str(exc))
    return args


def parse_rates(text: str) -> tuple[int, ...]:
    """ "5000,20000" -> (5000, 20000); empty -> no latency runs."""
    rates = []
    for raw in text.split(","):
        if not raw.strip():
            continue
        try:
            rate = int(raw)
        except ValueError:
            raise Invalid(f"--rates: {raw!r} is not a whole number of queries/s") from None
        if not 0 < rate <= MAX_RATE:
            raise Invalid(f"--rates: {rate} is outside 1-{MAX_RATE} queries/s")
        rates.append(rate)
    return tuple(dict.fromkeys(rates))


def choose_peers(text: str | None) -> list[Peer]:
    """The peers to run: those asked (all by default) that are installed; logs the others."""
    asked = parse_peers(text) if text else list(Peer)
    runnable, skipped = available(asked)
    for peer, reason in skipped:
        log.warning("skipping %s: %s", peer, reason)
    if not runnable:
        raise NotFound(f"none of the peers {', '.join(asked)} can run here")
    return runnable


def _run(target: Target, datafile: Path, args: argparse.Namespace, rate: int | None) -> DnsperfRun:
    return DnsperfRun(
        target.address,
        target.port,
        datafile,
        args.duration,
        clients=args.clients,
        max_qps=rate,
        netns=target.netns,
    )


def throughput(
    targets: Sequence[Target],
    workloads: Sequence[Workload],
    datafiles: dict[str, Path],
    args: argparse.Namespace,
    profiles: list[profile.Profile] | None = None,
) -> list[Measurement]:
    """Every workload, run after run, each run visiting every peer in turn (interleaved: slow
    drift of the machine touches all peers alike). With PROFILES, netdns's first run of each
    workload is sampled by py-spy and its top entries are added there."""
    runs: dict[tuple[str, str], list[Summary]] = {}
    cpu: dict[tuple[str, str], list[float | None]] = {}
    for workload in workloads:
        for index in range(1, args.runs + 1):
            for target in targets:
                step = f"{target.name} {workload.id} run {index}/{args.runs}"
                log.info("%s: %g s, %d clients ...", step, args.duration, args.clients)
                sampled = profiles is not None and index == 1 and target.name == Peer.NETDNS
                raw = datafiles[workload.id].with_suffix(".py-spy.txt")
                before = cpu_seconds(target.pid)
                with profile.recording(target.pid if sampled else None, args.duration, raw):
                    summary = dnsperf.run_dnsperf(
                        _run(target, datafiles[workload.id], args, args.max_qps)
                    )
                used = _cpu_used(before, cpu_seconds(target.pid))
                if sampled and profiles is not None and raw.exists():
                    profiles.append(profile.top_entries(workload.id, raw.read_text()))
                log.info(
                    "%s: %.0f qps, %.2f%% lost, avg %.3f ms, CPU %s",
                    step,
                    summary.qps,
                    100 * summary.lost_fraction,
                    1000 * summary.avg_latency,
                    _per_query(used, summary),
                )
                runs.setdefault((target.name, workload.id), []).append(summary)
                cpu.setdefault((target.name, workload.id), []).append(used)
    return [
        Measurement(
            target.name,
            w.id,
            w.title,
            tuple(runs[(target.name, w.id)]),
            tuple(cpu[(target.name, w.id)]),
        )
        for target in targets
        for w in workloads
    ]


def _cpu_used(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _per_query(used: float | None, summary: Summary) -> str:
    if used is None or not summary.completed:
        return "n/a"
    return f"{1e6 * used / summary.completed:.1f} us/query"


def latency(
    targets: Sequence[Target], datafiles: dict[str, Path], args: argparse.Namespace
) -> list[LatencyMeasurement]:
    """Each of LATENCY_WORKLOADS at each fixed rate, interleaved like the throughput runs; the
    percentiles pool every query of every run."""
    runs: dict[tuple[str, str, int], list[Summary]] = {}
    samples: dict[tuple[str, str, int], array[float]] = {}
    for workload, rate in _latency_cases(args.rates):
        for index in range(1, args.runs + 1):
            for target in targets:
                step = f"{target.name} {workload.id} at {rate} qps run {index}/{args.runs}"
                log.info("%s: %g s ...", step, args.duration)
                summary, answered = dnsperf.run_with_latencies(
                    _run(target, datafiles[workload.id], args, rate)
                )
                key = (target.name, workload.id, rate)
                runs.setdefault(key, []).append(summary)
                samples.setdefault(key, array("d")).extend(answered)
                p50, p99, p999 = latency_percentiles(answered, summary.lost)
                log.info(
                    "%s: %.0f qps, %.2f%% lost, p50 %s p99 %s p99.9 %s ms",
                    step,
                    summary.qps,
                    100 * summary.lost_fraction,
                    format_ms(p50),
                    format_ms(p99),
                    format_ms(p999),
                )
    return [
        LatencyMeasurement(
            t.name, w.id, rate, tuple(runs[(t.name, w.id, rate)]), samples[(t.name, w.id, rate)]
        )
        for w, rate in _latency_cases(args.rates)
        for t in targets
    ]


def _latency_cases(rates: Sequence[int]) -> list[tuple[Workload, int]]:
    return [(workload, rate) for workload in LATENCY_WORKLOADS for rate in rates]


def bench(args: argparse.Namespace) -> str:
    if os.geteuid() != 0:
        raise Invalid("the bench needs root: it makes namespaces and binds port 53 in them")
    if not dnsperf.available():
        raise NotFound("dnsperf is not installed: apt-get install dnsperf")
    require_dnsmasq()
    peers = choose_peers(args.peers)
    workloads = select(args.workloads)
    zone = Zone(names=args.names, forwarded=args.names, uncached=args.names)
    started = datetime.now()
    with tempfile.TemporaryDirectory(prefix="netdns-bench-") as tmp:
        workdir = Path(tmp)
        datafiles = {w.id: w.write(zone, workdir) for w in [*workloads, *LATENCY_WORKLOADS]}
        log.info("workloads %s written to %s", ", ".join(datafiles), workdir)
        profiles: list[profile.Profile] | None = None
        if args.profile:
            if profile.py_spy() is None:
                raise NotFound("--profile needs py-spy: pip install py-spy")
            profiles = []
        with lab(zone, workdir / "lab", peers) as running:
            measurements = throughput(running.targets, workloads, datafiles, args, profiles)
            latencies = latency(running.targets, datafiles, args)
        log.info("lab stopped and removed")
    files = reserve(args.out, started)
    pictures = draw(measurements, latencies, files.plots, files.stamp)
    settings = Settings(
        args.duration, args.names, args.clients, args.runs, args.max_qps, args.rates
    )
    text = render(
        settings, measurements, started, environment(), latencies=latencies, plots=pictures
    )
    if profiles:
        text += "\nWhere netdns spent its time (`--profile`):\n\n" + profile.render(profiles)
    files.markdown.write_text(text)
    log.info("report written to %s", files.markdown)
    return text


def draw(
    measurements: list[Measurement],
    latencies: list[LatencyMeasurement],
    directory: Path,
    stamp: str,
) -> list[tuple[str, str]]:
    """The plots as (title, path relative to the report); none without matplotlib."""
    if not plots.available():
        log.warning("no plots: matplotlib is not installed (pip install matplotlib)")
        return []
    directory.mkdir(parents=True, exist_ok=True)
    drawn = [("Throughput", plots.throughput(measurements, directory / plots.THROUGHPUT_PNG))]
    if latencies:
        drawn.append(("Latency CDF", plots.latency_cdf(latencies, directory / plots.LATENCY_PNG)))
    for _, path in drawn:
        log.info("plot written to %s", path)
    return [(title, f"{stamp}/{path.name}") for title, path in drawn]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="bench: %(message)s",
    )
    # SIGTERM unwinds like Ctrl-C, so every context manager stops its process and the lab's
    # namespaces are removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        text = bench(args)
    except (BenchError, NetdnsError) as exc:
        log.error("error: %s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted; lab stopped")
        return 130
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
