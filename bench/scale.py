"""`python -m bench.scale`: netdns at 10,000 containers on 1,000 networks (issue 4, point 4).

Four measurements, all on loopback, all in this process except the throughput one:

1. attach -> answer: a NameTable and a Resolver wired as the daemon wires them (the hot cache
   watching the table) hold the containers, built from events; then each new container is
   attached (SandboxCreated + EndpointAttached applied) and a peer on its network asks for it at
   once through the real path (Resolver.fast, then Resolver.handle on the bytes). The peer asked
   for the name once before the attach too, so a cached NXDOMAIN must be dropped by the event
   (R18). A second, smaller round does the same through real listeners and a UDP socket.
2. memory per endpoint: tracemalloc over building the table from events (the table keeps the
   Endpoint and Sandbox objects, so they count), divided by endpoints; the top allocation sites
   say where the space goes. The RSS delta of a second build is shown beside it.
3. W1 throughput at N names vs 100 names: two `python -m bench.serve` processes on random
   loopback addresses, dnsperf with each one's W1 data, runs interleaved, medians and ratio.
4. listener count: 2,000 listeners (UDP + TCP each) on distinct 127.a.b.c:53 addresses in one
   event loop, RLIMIT_NOFILE raised as needed; 200 of them answer one query each. Network
   namespaces per sandbox are left out: the loopback addresses prove the process side (fds,
   memory, start time), which is what a namespace per sandbox would not change.

Prints a markdown report and writes it to bench/results/scale-<date>.md; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import linecache
import logging
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import dnsperf
from bench.dnsperf import DnsperfRun
from bench.errors import BenchError
from bench.machine import environment
from bench.process import child_process, read_ready
from bench.scale_model import (
    DEAD_UPSTREAM,
    QUERY_TIMEOUT,
    RESULTS,
    WARM_NAMES_PER_SECOND,
    AttachResult,
    Layout,
    ListenerResult,
    MemoryResult,
    ThroughputConfig,
    ThroughputResult,
    loopback_addresses,
    open_fds,
    query_bytes,
    reply_addresses,
    rss_bytes,
    throughput_configs,
)
from bench.scale_report import ScaleReport, render
from bench.workloads import W1, Zone
from drivers.errors import NetdnsError
from resolver.forward import Forwarder
from resolver.names import NameTable
from resolver.resolve import Resolver
from resolver.server import Listener, run

log = logging.getLogger("bench.scale")


# -- 1. attach -> answer ----------------------------------------------------------------------


def wire_resolver(table: NameTable) -> Resolver:
    """As the daemon wires it: the resolver's hot cache watches the table."""
    forwarder = Forwarder(default_servers=lambda: [DEAD_UPSTREAM])
    return Resolver(table, forwarder)


async def ask(resolver: Resolver, sandbox_id: str, data: bytes) -> bytes | None:
    """The listener's order: the hot path first, the handler when it declines."""
    reply = resolver.fast(sandbox_id, data, False)
    if reply is None:
        reply = await resolver.handle(sandbox_id, data, False)
    return reply


async def attach_in_process(
    resolver: Resolver, layout: Layout, first: int, count: int, rng: random.Random
) -> AttachResult:
    result = AttachResult()
    table = resolver.table
    for k in range(first, first + count):
        querier, name, want = layout.querier(k), layout.name(k), str(layout.address(k))
        data = query_bytes(name, rng)
        before = await ask(resolver, querier, data)
        # Asked twice: the second time the negative answer comes from the hot cache (if kept).
        before = await ask(resolver, querier, data)
        if before is None or want in reply_addresses(before):
            result.stale_before += 1
        events = layout.attach_events(k)
        start = time.perf_counter()
        for event in events:
            table.apply(event)
        reply = await ask(resolver, querier, data)
        result.latencies.append(time.perf_counter() - start)
        if reply is None or want not in reply_addresses(reply):
            result.wrong += 1
        if resolver.fast(querier, data, False) is not None:
            result.hot_after += 1
    return result


async def udp_ask(sock: socket.socket, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, data)
    return await asyncio.wait_for(loop.sock_recv(sock, 4096), QUERY_TIMEOUT)


async def attach_over_udp(
    resolver: Resolver, layout: Layout, first: int, count: int, rng: random.Random
) -> AttachResult:
    """Like attach_in_process, but each querier has a real listener on loopback and asks it
    over a UDP socket from this same event loop."""
    result = AttachResult()
    table = resolver.table
    addresses = loopback_addresses(count, rng)
    listeners: list[Listener] = []
    sockets: list[socket.socket] = []
    try:
        for k, address in zip(range(first, first + count), addresses, strict=True):
            listener = await Listener.start(
                resolver.handle, layout.querier(k), address, 0, fast=resolver.fast
            )
            listeners.append(listener)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sockets.append(sock)
            sock.setblocking(False)
            sock.connect((listener.host, listener.port))
            name, want = layout.name(k), str(layout.address(k))
            data = query_bytes(name, rng)
            before = await udp_ask(sock, data)
            if want in reply_addresses(before):
                result.stale_before += 1
            events = layout.attach_events(k)
            start = time.perf_counter()
            for event in events:
                table.apply(event)
            reply = await udp_ask(sock, data)
            result.latencies.append(time.perf_counter() - start)
            if want not in reply_addresses(reply):
                result.wrong += 1
            before_fast = listener.stats.fast_answers
            await udp_ask(sock, data)
            result.hot_after += listener.stats.fast_answers - before_fast
    finally:
        for sock in sockets:
            sock.close()
        for listener in listeners:
            await listener.close()
    return result


# -- 2. memory per endpoint -------------------------------------------------------------------


def site_text(filename: str, lineno: int) -> str:
    """`file.py:N` and the code on that line, for the report's table."""
    code = linecache.getline(filename, lineno).strip().replace("|", "\\|")
    short = f"{Path(filename).name}:{lineno}"
    return f"{short} `{code}`" if code else short


def measure_memory(layout: Layout, top: int = 8) -> MemoryResult:
    # RSS first, before tracemalloc has grown and freed the same amount (freed arenas would be
    # reused and hide the growth).
    gc.collect()
    rss_before = rss_bytes()
    first = NameTable()
    first.apply_all(layout.events())
    gc.collect()
    rss_delta = rss_bytes() - rss_before
    del first
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.take_snapshot()
        table = NameTable()
        # The events are made inside the traced region and dropped after: what stays is what
        # the table keeps (Sandbox and Endpoint objects included).
        table.apply_all(layout.events())
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    stats = snapshot.compare_to(baseline, "lineno")
    sites = tuple(
        (site_text(s.traceback[0].filename, s.traceback[0].lineno), s.size_diff, s.count_diff)
        for s in stats[:top]
    )
    retained = sum(s.size_diff for s in stats)
    del table, snapshot, baseline, stats
    gc.collect()
    return MemoryResult(layout.containers, retained, rss_delta, sites)


# -- 3. W1 throughput -------------------------------------------------------------------------


def stopping_line(log_text: str) -> str:
    """The last "stopping: ..." line bench.serve logs, without its prefix; "" when none."""
    found = [line for line in log_text.splitlines() if "stopping:" in line]
    return found[-1].split("stopping:", 1)[1].strip() if found else ""


@contextlib.contextmanager
def bench_server(names: int, address: str, log_path: Path) -> Iterator[tuple[str, int]]:
    command = [
        sys.executable, "-m", "bench.serve", "--address", address, "--port", "53",
        "--names", str(names), "--upstream", DEAD_UPSTREAM, "--log-level", "info",
    ]  # fmt: skip
    with child_process(command, log_path, stdout=subprocess.PIPE) as proc:
        yield read_ready(proc, log_path, f"bench.serve --names {names}")


def measure_throughput(
    configs: Sequence[ThroughputConfig],
    runs: int,
    duration: float,
    clients: int,
    rng: random.Random,
) -> list[ThroughputResult]:
    """One bench.serve per config (all running, idle but for the one measured), runs
    interleaved config by config, each after a warm-up that fills the hot cache."""
    qps: dict[ThroughputConfig, list[float]] = {c: [] for c in configs}
    lost: dict[ThroughputConfig, list[int]] = {c: [] for c in configs}
    addresses = loopback_addresses(len(configs), rng)
    with tempfile.TemporaryDirectory(prefix="netdns-scale-") as tmp:
        workdir = Path(tmp)
        logs = {c: workdir / f"serve-{n}.log" for n, c in enumerate(configs)}
        with contextlib.ExitStack() as servers:
            targets = {}
            for n, (config, address) in enumerate(zip(configs, addresses, strict=True)):
                (workdir / f"w{n}").mkdir()
                datafile = W1.write(Zone(names=config.queried), workdir / f"w{n}")
                host, port = servers.enter_context(
                    bench_server(config.table, address, logs[config])
                )
                targets[config] = DnsperfRun(host, port, datafile, duration, clients=clients)
            for config, target in targets.items():
                # Every name once through the slow path (about 10k/s) before measuring.
                warm = 1.0 + config.queried / WARM_NAMES_PER_SECOND
                log.info("W1 warm-up, %s (%.0f s)", config.label, warm)
                dnsperf.run_dnsperf(DnsperfRun(target.address, target.port, target.datafile, warm))
            for run_no in range(1, runs + 1):
                for config, target in targets.items():
                    summary = dnsperf.run_dnsperf(target)
                    log.info(
                        "W1 run %d/%d, %s: %.0f q/s, %d lost",
                        run_no, runs, config.label, summary.qps, summary.lost,
                    )  # fmt: skip
                    qps[config].append(summary.qps)
                    lost[config].append(summary.lost)
        # The servers have stopped (SIGTERM): their last log line counts what they answered.
        return [
            ThroughputResult(
                c, tuple(qps[c]), tuple(lost[c]), stopping_line(logs[c].read_text(errors="replace"))
            )
            for c in configs
        ]


# -- 4. listener count ------------------------------------------------------------------------


def raise_nofile(needed: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        new_hard = max(hard, needed)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, new_hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


async def many_listeners(
    resolver: Resolver, layout: Layout, count: int, sample: int, rng: random.Random
) -> ListenerResult:
    nofile = raise_nofile(open_fds() + 2 * count + 256)
    addresses = loopback_addresses(count, rng)
    listeners: list[tuple[int, Listener]] = []
    failed = 0
    gc.collect()
    fds_before, rss_before = open_fds(), rss_bytes()
    start = time.perf_counter()
    try:
        for k, address in enumerate(addresses):
            try:
                listener = await Listener.start(
                    resolver.handle, layout.sandbox_id(k), address, 53, fast=resolver.fast
                )
            except NetdnsError as exc:  # an address someone else holds: count it, go on
                log.warning("listener %d on %s: %s", k, address, exc)
                failed += 1
                continue
            listeners.append((k, listener))
            if len(listeners) % 500 == 0:
                log.info("%d listeners started", len(listeners))
        started = time.perf_counter() - start
        fds, rss_delta = open_fds() - fds_before, rss_bytes() - rss_before
        answered = 0
        chosen = rng.sample(listeners, min(sample, len(listeners)))
        for k, listener in chosen:
            # Each asks for the next container on its own network.
            peer = k + layout.networks
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.connect((listener.host, listener.port))
                reply = await udp_ask(sock, query_bytes(layout.name(peer), rng))
            if str(layout.address(peer)) in reply_addresses(reply):
                answered += 1
    finally:
        close_start = time.perf_counter()
        for _, listener in listeners:
            await listener.close()
        closed = time.perf_counter() - close_start
    return ListenerResult(
        len(listeners), failed, fds, rss_delta, started, closed, len(chosen), answered, nofile
    )


# -- the command ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description="netdns at scale, on loopback: attach->answer latency, name-table memory "
        "per endpoint, W1 throughput at many vs 100 names, and many listeners in one process. "
        "Prints a markdown report and writes it to OUT/scale-<date>.md.",
    )
    parser.add_argument("--containers", type=int, default=10_000)
    parser.add_argument("--networks", type=int, default=1000)
    parser.add_argument("--attaches", type=int, default=1000, help="measured in-process")
    parser.add_argument("--udp-attaches", type=int, default=100, help="measured over UDP")
    parser.add_argument("--listeners", type=int, default=2000)
    parser.add_argument("--listener-sample", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3, help="W1 runs per size")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per W1 run")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf clients")
    parser.add_argument("--skip", default="", help="comma list of: attach,memory,w1,listeners")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.duration > 60 or args.runs < 1 or args.runs > 10:
        parser.error("--duration must be in (0, 60] and --runs in [1, 10]")
    if args.listeners < 1 or args.listeners > 10_000:
        parser.error("--listeners must be between 1 and 10000")
    return args


async def in_loop(args: argparse.Namespace, report: ScaleReport, rng: random.Random) -> None:
    layout = report.layout
    skip = set(args.skip.split(","))
    log.info("building the table: %d containers on %d networks", layout.containers,
             layout.networks)  # fmt: skip
    table = NameTable()
    resolver = wire_resolver(table)
    start = time.perf_counter()
    table.apply_all(layout.events())
    report.build_seconds = time.perf_counter() - start
    if "attach" not in skip:
        log.info("attach -> answer, in-process: %d attaches", args.attaches)
        report.in_process = await attach_in_process(
            resolver, layout, layout.containers, args.attaches, rng
        )
        if args.udp_attaches:
            log.info("attach -> answer, over UDP: %d attaches", args.udp_attaches)
            report.over_udp = await attach_over_udp(
                resolver, layout, layout.containers + args.attaches, args.udp_attaches, rng
            )
    if "listeners" not in skip:
        log.info("starting %d listeners", args.listeners)
        report.listeners = await many_listeners(
            resolver, layout, args.listeners, args.listener_sample, rng
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="bench.scale: %(message)s")
    rng = random.Random(args.seed)
    when = datetime.now(UTC)
    try:
        layout = Layout(networks=args.networks, containers=args.containers)
        # Room for every attach the run makes, checked before anything starts.
        layout.address(layout.containers + args.attaches + args.udp_attaches - 1)
        skip = set(args.skip.split(","))
        report = ScaleReport(layout)
        began = time.monotonic()
        if "memory" not in skip:
            log.info("memory: tracemalloc over building %d endpoints", layout.containers)
            report.memory = measure_memory(layout)
        run(in_loop(args, report, rng))
        if "w1" not in skip:
            if dnsperf.available():
                report.throughput = measure_throughput(
                    throughput_configs(layout.containers),
                    args.runs,
                    args.duration,
                    args.clients,
                    rng,
                )
            else:
                report.notes.append("dnsperf not installed: W1 throughput not measured")
        report.notes.append(f"whole run: {time.monotonic() - began:.0f} s")
    except (BenchError, NetdnsError) as exc:
        log.error("%s", exc)
        return exc.exit_code
    text = render(report, environment(), when)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"scale-{when:%Y-%m-%d-%H%M}.md"
    path.write_text(text + "\n")
    log.info("report written to %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
