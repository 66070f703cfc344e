"""`python -m bench.podman_bench`: netdns through podman, side by side with podman's own DNS
servers, in one run: netdns-aardvark and aardvark-dns (netavark), netdns-cni and dnsname (CNI).

For each server, in rounds (each round makes a fresh podman lab per server, in turn, so the
servers share the machine's noise): dnsperf from a container's network namespace at its DNS
server, for 5 s each
- W1: A of the other containers' names (local answers);
- W7: A of names the lab's upstream serves with TTL 0 (every query a real forward);
and the time from `podman run` to the first answer for the new container's name, asked from
another container every 5 ms. Reported: medians over the rounds of q/s and of the server's CPU
per query (its /proc utime+stime over the run), the latency p50/p99 of all queries, and the
start -> answer p50/p99 over every start. podman issue 13983 reports up to 5 s with aardvark-dns.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dnslib import DNSRecord

from bench import dnsperf
from bench.cpu import cpu_seconds
from bench.labs.podman import ALL_SERVERS as SERVERS
from bench.labs.podman import Container, Podman
from bench.machine import netdns_commit
from bench.stats import format_ms, percentile
from resolver.netns import in_netns

FORWARD_ZONE = ("--address=/bench.test/10.64.0.1",)  # every name under it, TTL 0 (upstream_ttl)
FORWARD_NAMES = 1000
POLL = 0.005
START_LIMIT = 10.0


@dataclass(slots=True)
class Result:
    qps: dict[str, list[float]] = field(default_factory=dict)  # workload -> one per round
    cpu_us: dict[str, list[float]] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    starts: list[float] = field(default_factory=list)  # seconds, podman run -> first answer
    podman_runs: list[float] = field(default_factory=list)  # seconds `podman run` took
    unanswered_starts: int = 0


def ask_until_answered(container: Container, server: str, name: str, started: float) -> float:
    """Seconds from `started` to the first reply for NAME with an address, asked from inside
    CONTAINER's namespace every POLL seconds; inf if none within START_LIMIT."""
    sock = in_netns(f"/proc/{container.pid}/ns/net",
                    lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))  # fmt: skip
    with sock:
        sock.settimeout(POLL)
        query = DNSRecord.question(name, "A")
        while time.monotonic() - started < START_LIMIT:
            sock.sendto(query.pack(), (server, 53))
            try:
                reply = DNSRecord.parse(sock.recv(4096))
            except (TimeoutError, OSError):
                continue
            if reply.rr:
                return time.monotonic() - started
    return float("inf")


def measure_start(lab: Podman, network: str, asker: Container, name: str) -> tuple[float, float]:
    """(seconds from `podman run` to the first answer, seconds `podman run` itself took)."""
    server = lab.dns_server(network)
    full = f"{lab.tag}-{name}"
    took: list[float] = []
    started = time.monotonic()
    polling = threading.Thread(
        target=lambda: took.append(ask_until_answered(asker, server, full, started))
    )
    polling.start()
    lab.run(name, network)
    podman_run = time.monotonic() - started
    polling.join(START_LIMIT + 5)
    return (took[0] if took else float("inf")), podman_run


def one_round(backend: str, server: str, containers: int, starts: int, seconds: float,
              work: Path, result: Result) -> None:  # fmt: skip
    with Podman(backend=backend, dns=server, zone=FORWARD_ZONE, upstream_ttl=0) as lab:
        network = lab.network()
        boxes = [lab.run(f"c{i}", network) for i in range(containers)]
        client = boxes[0]
        forwarded = (f"ttl0-{i}.bench.test A" for i in range(FORWARD_NAMES))
        files = {
            "W1": write(work / f"{lab.tag}-w1.txt", (f"{b.name} A" for b in boxes[1:])),
            "W7": write(work / f"{lab.tag}-w7.txt", forwarded),
        }
        pid = lab.server_pid(network)
        for workload, datafile in files.items():
            run = dnsperf.DnsperfRun(
                lab.dns_server(network), 53, datafile, seconds, clients=4,
                enter=("nsenter", "-t", str(client.pid), "-n"),
            )  # fmt: skip
            before = cpu_seconds(pid)
            summary, latencies = dnsperf.run_with_latencies(run)
            after = cpu_seconds(pid)
            result.qps.setdefault(workload, []).append(summary.qps)
            result.latencies.setdefault(workload, []).extend(latencies)
            result.lost[workload] = result.lost.get(workload, 0) + summary.lost
            if before is not None and after is not None and summary.completed:
                result.cpu_us.setdefault(workload, []).append(
                    (after - before) / summary.completed * 1e6
                )
        for i in range(starts):
            took, podman_run = measure_start(lab, network, client, f"new{i}")
            result.podman_runs.append(podman_run)
            if took == float("inf"):
                result.unanswered_starts += 1
            else:
                result.starts.append(took)


def write(path: Path, lines: Iterator[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: dict[str, Result], rounds: int, seconds: float) -> str:
    commit = netdns_commit()
    netdns = results.get("netdns (netavark)")
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}: podman 4.3, "
        f"{rounds} rounds, dnsperf 4 clients for {seconds:g} s per workload, medians over the "
        "rounds; CPU is the DNS server process's per answered query.",
        "",
        "| server | W1 q/s | W1 CPU/q | W1 p50 / p99 ms | W7 q/s | W7 CPU/q | W7 p50 / p99 ms | "
        "start -> answer p50 / p99 ms (n) | `podman run` itself p50 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        cells = [name]
        for workload in ("W1", "W7"):
            lat = sorted(r.latencies.get(workload, []))
            qps = median(r.qps.get(workload, []))
            ratio = ""
            if netdns is not None and r is not netdns and qps:
                ratio = f" (netdns {median(netdns.qps[workload]) / qps:.2f}x)"
            cells += [
                f"{qps:,.0f}{ratio}",
                f"{median(r.cpu_us.get(workload, [])):.0f} µs",
                f"{format_ms(percentile(lat, 50))} / {format_ms(percentile(lat, 99))}"
                if lat
                else "-",
            ]
        starts = sorted(r.starts)
        cells.append(
            f"{format_ms(percentile(starts, 50))} / {format_ms(percentile(starts, 99))} "
            f"({len(starts)}{f', {r.unanswered_starts} never' if r.unanswered_starts else ''})"
            if starts
            else f"none answered ({r.unanswered_starts})"
        )
        runs = sorted(r.podman_runs)
        cells.append(format_ms(percentile(runs, 50)) if runs else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.podman_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=5, help="default %(default)s")
    parser.add_argument("--seconds", type=float, default=5.0, help="per workload run")
    parser.add_argument("--containers", type=int, default=10, help="per lab (W1's names)")
    parser.add_argument("--starts", type=int, default=10, help="per round: 50 over 5 rounds")
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.containers < 2 or args.seconds <= 0 or args.starts < 0:
        parser.error("--rounds >= 1, --containers >= 2, --seconds > 0, --starts >= 0")
    results = {f"{server} ({backend})": Result() for backend, server in SERVERS}
    with tempfile.TemporaryDirectory(prefix="netdns-podman-bench-") as work:
        for round_no in range(1, args.rounds + 1):
            for backend, server in SERVERS:
                print(f"podman_bench: round {round_no}/{args.rounds}: {server} ({backend})",
                      file=sys.stderr, flush=True)  # fmt: skip
                one_round(backend, server, args.containers, args.starts, args.seconds,
                          Path(work), results[f"{server} ({backend})"])  # fmt: skip
    text = report(results, args.rounds, args.seconds)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
