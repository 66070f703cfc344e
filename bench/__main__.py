"""`python -m bench`: queries per second of netdns for local, forwarded and unknown names.

Starts the lab (bench/lab.py: the bench's own dnsmasq upstream and a netdns listener process,
all on random loopback addresses), runs each workload (bench/workloads.py) with dnsperf against
each target a bounded number of times, and prints the markdown table (bench/report.py), which it
also writes to bench/results/<date>.md. Progress goes to stderr, one line per step.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from bench import dnsperf
from bench.dnsperf import DnsperfRun
from bench.lab import Target, lab
from bench.report import Measurement, Settings, render, write
from bench.workloads import WORKLOADS, Workload, Zone, select
from drivers.errors import NetdnsError

log = logging.getLogger("bench")

DEFAULT_DURATION = 10.0
QUICK_DURATION = 3.0
DEFAULT_RUNS = 3
MAX_DURATION = 600.0
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    workloads = "; ".join(f"{w.id}: {w.title}" for w in WORKLOADS.values())
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure queries/second of a netdns listener with dnsperf: local container "
        "names, forwarded names (cached after the first round) and unknown names, against the "
        "bench's own dnsmasq upstream. Everything runs on random 127.x.y.z addresses and is "
        "stopped at the end. Prints a markdown table and writes it to OUT/<date>.md.",
        epilog=f"Workloads: {workloads}. Needs dnsperf and dnsmasq (Debian packages) and root "
        "(the listener and the upstream bind port 53).",
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
        "--runs", type=int, help=f"runs per workload; the table shows the median ({DEFAULT_RUNS})"
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
    parser.add_argument("--max-qps", type=int, help="dnsperf -Q: cap the query rate")
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
    return args


def environment() -> dict[str, str]:
    """What the numbers depend on, for the report's header."""
    facts = {
        "host": f"{platform.node()}, {os.cpu_count()} CPUs, Linux {platform.release()}",
        "python": platform.python_version(),
    }
    try:
        import uvloop

        facts["uvloop"] = uvloop.__version__
    except ImportError:
        facts["uvloop"] = "not installed (asyncio loop)"
    facts["dnsperf"] = _command_output(["dnsperf", "-h"], "Version")
    commit = _command_output(["git", "-C", str(RESULTS.parent.parent), "rev-parse", "HEAD"], "")
    if commit:
        facts["commit"] = commit[:12]
    return facts


def _command_output(command: list[str], prefix: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith(prefix):
            return line.removeprefix(prefix).strip()
    return ""


def measure(
    target: Target,
    workload: Workload,
    datafile: Path,
    args: argparse.Namespace,
) -> Measurement:
    runs = []
    for index in range(1, args.runs + 1):
        log.info(
            "%s %s run %d/%d: %g s, %d clients ...",
            target.name,
            workload.id,
            index,
            args.runs,
            args.duration,
            args.clients,
        )
        summary = dnsperf.run_dnsperf(
            DnsperfRun(
                target.address,
                target.port,
                datafile,
                args.duration,
                clients=args.clients,
                max_qps=args.max_qps,
            )
        )
        log.info(
            "%s %s run %d/%d: %.0f qps, %.2f%% lost, avg %.3f ms",
            target.name,
            workload.id,
            index,
            args.runs,
            summary.qps,
            100 * summary.lost_fraction,
            1000 * summary.avg_latency,
        )
        runs.append(summary)
    return Measurement(target.name, workload.id, workload.title, tuple(runs))


def bench(args: argparse.Namespace) -> str:
    if not dnsperf.available():
        raise NetdnsError("dnsperf is not installed: apt-get install dnsperf")
    workloads = select(args.workloads)
    zone = Zone(names=args.names, forwarded=args.names)
    started = datetime.now()
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="netdns-bench-") as tmp:
        workdir = Path(tmp)
        datafiles = {w.id: w.write(zone, workdir) for w in workloads}
        log.info("workloads %s written to %s", ", ".join(datafiles), workdir)
        with lab(zone, workdir / "lab") as running:
            for target in running.targets:
                for workload in workloads:
                    measurements.append(measure(target, workload, datafiles[workload.id], args))
        log.info("lab stopped")
    settings = Settings(args.duration, args.names, args.clients, args.runs, args.max_qps)
    text = render(settings, measurements, started, environment())
    path = write(text, args.out, started)
    log.info("report written to %s", path)
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="bench: %(message)s",
    )
    try:
        text = bench(args)
    except NetdnsError as exc:
        log.error("error: %s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted; lab stopped")
        return 130
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
