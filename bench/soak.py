"""`python -m bench.soak` (`make soak`): a long run of one real daemon under steady queries and
container churn, watching for what only time shows — memory or descriptors that grow, names
that stop answering, churn that starts to fail.

The daemon is the test suite's (bench/labs/daemon.py: a real `netdns daemon` with its own
dnsmasq upstream on loopback, driven by the real CLI; root only). On one network: STABLE
containers that live through the run, a client container, and a churn thread that creates a
container, waits until the client resolves it, removes it, waits until it is gone, and
connects/disconnects a stable container to a second network. The client's dnsperf asks
127.0.0.11 for the stable names, their aliases and `name.network` (local) and one forwarded
name (answered by the upstream, then cached) at a bounded rate, in chunks; after each chunk
the daemon's RSS, open descriptors and threads are read from /proc and every stable name is
checked with dig.

Prints a markdown report, writes it to bench/results/soak-<date>.md, and exits 1 when a query
was lost beyond 0.1 %, a churn step failed or a stable name stopped answering.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.dnsperf import DnsperfRun, available, run_dnsperf
from bench.labs.daemon import OUTSIDE_NAME, DaemonProcess, running_daemon, suffix
from bench.machine import environment

log = logging.getLogger("bench.soak")
RESULTS = Path(__file__).resolve().parent / "results"
SEEN_WITHIN = 5.0  # a churned name must show (or go) in the client within this long
LOST_LIMIT = 0.001


@dataclass(frozen=True, slots=True)
class Sample:
    minute: float
    qps: float
    sent: int
    lost: int
    rss_kib: int
    fds: int
    threads: int
    stable_missing: int
    churn_ops: int


@dataclass
class Churn:
    ops: int = 0
    failures: list[str] = field(default_factory=list)


def proc_status(pid: int) -> tuple[int, int, int]:
    """(RSS in KiB, open descriptors, threads) of process PID, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rss = int(fields["VmRSS"].split()[0])
    return rss, len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"])


def answers(daemon: DaemonProcess, client: str, name: str) -> bool:
    done = daemon.dig(client, "+short", name)
    return done.returncode == 0 and bool(done.stdout.strip())


def wait_for(daemon: DaemonProcess, client: str, name: str, present: bool) -> bool:
    deadline = time.monotonic() + SEEN_WITHIN
    while time.monotonic() < deadline:
        if answers(daemon, client, name) == present:
            return True
        time.sleep(0.05)
    return False


def churn(
    daemon: DaemonProcess,
    client: str,
    nets: tuple[str, str],
    stable: list[str],
    stop: threading.Event,
    pause: float,
    record: Churn,
    rng: random.Random,
) -> None:
    """Create/resolve/remove one container, connect/disconnect one stable container, again."""
    net, spare = nets
    n = 0
    while not stop.is_set():
        n += 1
        name = f"churn{n}-{suffix()}"
        steps: list[tuple[str, list[str], str | None, bool]] = [
            ("create", ["container", "create", "--name", name, "--network", net], name, True),
            ("remove", ["container", "rm", name], name, False),
        ]
        box = rng.choice(stable)
        steps += [
            ("connect", ["network", "connect", spare, box], f"{box}.{spare}", True),
            ("disconnect", ["network", "disconnect", spare, box], f"{box}.{spare}", False),
        ]
        for what, command, name_to_check, present in steps:
            done = daemon.cli(*command, check=False)
            record.ops += 1
            if done.returncode != 0:
                record.failures.append(f"{what} {name}: {done.stderr.strip()}")
            elif name_to_check and not wait_for(daemon, client, name_to_check, present):
                state = "did not answer" if present else "still answered"
                record.failures.append(f"{what}: {name_to_check} {state} within {SEEN_WITHIN} s")
        stop.wait(pause)


def query_file(path: Path, net: str, stable: list[str]) -> Path:
    lines = [OUTSIDE_NAME + " A"]
    for name in stable:
        lines += [f"{name} A", f"{name}.{net} A", f"a-{name} A", f"{name} AAAA"]
    path.write_text("\n".join(lines) + "\n")
    return path


def soak(args: argparse.Namespace, work: Path) -> tuple[list[Sample], Churn]:
    samples: list[Sample] = []
    record = Churn()
    rng = random.Random(args.seed)
    (work / "daemon").mkdir()
    with running_daemon(work / "daemon") as daemon:
        tag = suffix()
        net, spare = f"soak-{tag}", f"spare-{tag}"
        daemon.network(net)
        daemon.network(spare)
        stable = [f"s{i}-{tag}" for i in range(args.stable)]
        for name in stable:
            daemon.container(name, "--network", net, "--network-alias", f"a-{name}")
        client = f"client-{tag}"
        daemon.container(client, "--network", net)
        daemon.cli("network", "connect", spare, client)  # sees stable containers joining spare
        datafile = query_file(work / "queries.txt", net, stable)
        stop = threading.Event()
        worker = threading.Thread(
            target=churn,
            args=(daemon, client, (net, spare), stable, stop, args.churn_pause, record, rng),
            daemon=True,
        )
        began = time.monotonic()
        worker.start()
        try:
            while (elapsed := time.monotonic() - began) < args.minutes * 60:
                chunk = min(args.sample_every, args.minutes * 60 - elapsed)
                summary = run_dnsperf(
                    DnsperfRun(
                        "127.0.0.11",
                        53,
                        datafile,
                        max(chunk, 1.0),
                        clients=4,
                        max_qps=args.qps,
                        netns=client,
                    )
                )
                rss, fds, threads = proc_status(daemon.process.pid)
                missing = sum(not answers(daemon, client, name) for name in stable)
                sample = Sample(
                    (time.monotonic() - began) / 60, summary.qps, summary.sent, summary.lost,
                    rss, fds, threads, missing, record.ops,
                )  # fmt: skip
                samples.append(sample)
                log.info(
                    "%.1f min: %.0f q/s, lost %d, RSS %d KiB, %d fds, %d threads, churn %d ops "
                    "(%d failed), stable names missing %d", sample.minute, sample.qps,
                    sample.lost, rss, fds, threads, record.ops, len(record.failures), missing,
                )  # fmt: skip
        finally:
            stop.set()
            worker.join(timeout=60)
    return samples, record


def failed(samples: list[Sample], record: Churn) -> list[str]:
    sent = sum(s.sent for s in samples)
    lost = sum(s.lost for s in samples)
    reasons = []
    if sent and lost / sent > LOST_LIMIT:
        reasons.append(f"{lost} of {sent} queries lost (limit {LOST_LIMIT:.1%})")
    if record.failures:
        reasons.append(f"{len(record.failures)} churn steps failed")
    if any(s.stable_missing for s in samples):
        reasons.append("stable names stopped answering")
    return reasons


def render(samples: list[Sample], record: Churn, args: argparse.Namespace, when: datetime) -> str:
    env = environment()
    lines = [
        f"# netdns soak, {when:%Y-%m-%d %H:%M} UTC",
        "",
        f"One real daemon for {args.minutes:g} min: {args.stable} stable containers, dnsperf "
        f"from a client container at up to {args.qps} q/s (local names and one forwarded, "
        f"cached name), and container churn (create, resolve, remove, connect, disconnect; "
        f"seed {args.seed}).",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in env.items()),
        "",
        "| minute | q/s | sent | lost | RSS KiB | fds | threads | stable missing | churn ops |",
        "|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {s.minute:.1f} | {s.qps:.0f} | {s.sent} | {s.lost} | {s.rss_kib} | {s.fds} "
            f"| {s.threads} | {s.stable_missing} | {s.churn_ops} |"
            for s in samples
        ),
        "",
    ]
    if samples:
        first, last = samples[0], samples[-1]
        peak = max(s.rss_kib for s in samples)
        lines.append(
            f"RSS {first.rss_kib} -> {last.rss_kib} KiB (peak {peak}); descriptors "
            f"{first.fds} -> {last.fds}; {sum(s.sent for s in samples)} queries, "
            f"{sum(s.lost for s in samples)} lost; {record.ops} churn steps, "
            f"{len(record.failures)} failed."
        )
    lines += [f"- churn failure: {f}" for f in record.failures[:20]]
    reasons = failed(samples, record)
    lines += ["", "Verdict: " + ("; ".join(reasons) if reasons else "held.")]
    lines += ["", f"Run: `python -m bench.soak --minutes {args.minutes:g} --seed {args.seed}`."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Long run of one daemon under queries and container churn; reports memory, "
        "descriptors, lost queries and churn failures over time (root; builds its own "
        "namespaces, daemon and upstream).",
    )
    parser.add_argument("--minutes", type=float, default=30, help="default %(default)s")
    parser.add_argument("--stable", type=int, default=20, help="default %(default)s")
    parser.add_argument("--qps", type=int, default=2000, help="query rate cap (%(default)s)")
    parser.add_argument("--sample-every", type=float, default=30, help="seconds (%(default)s)")
    parser.add_argument("--churn-pause", type=float, default=0.2, help="seconds (%(default)s)")
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 31))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.stable < 1 or args.qps < 1 or args.sample_every < 1:
        parser.error("--minutes, --stable, --qps and --sample-every must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="soak: %(message)s")
    if os.geteuid() != 0:
        log.error("needs root: it creates namespaces, links and a daemon")
        return 1
    if not available():
        log.error("dnsperf is not installed: apt-get install dnsperf (or run make soak)")
        return 1
    when = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="netdns-soak-") as work:
        samples, record = soak(args, Path(work))
    text = render(samples, record, args, when)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"soak-{when:%Y-%m-%d-%H%M}.md"
    path.write_text(text + "\n")
    log.info("report written to %s", path)
    return 1 if failed(samples, record) else 0


if __name__ == "__main__":
    sys.exit(main())
